"""Text renderings of the boards: Markdown (`leaderboard/README.md`), CSV and a rich terminal table."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.leaderboard.floors import cell_text, distinct_floor_rows, floor_for, load_floors, summary
from benchmarks.leaderboard.results import (
    RANKING_RULE,
    SELF_REPORTED,
    VERIFICATION_RULE,
    Board,
    Excluded,
    Row,
)

REPRODUCIBILITY = (
    "From the same trained weights, re-running a seed reproduces every metric to within 1e-4 relative (checked by "
    "`tests/benchmarks/harness/test_harness.py` on the `micro` recipe; re-scoring the shipped moving_digits "
    "checkpoints with a retrained domain network left every other metric identical). On another CPU the same "
    "weights draw other samples: re-scoring seed 0 of the pretrained moving_digits_eval v2 rows on an Intel Xeon, scored "
    "on an AMD EPYC, moved FVD/FID-domain@1x and prompt adherence by at most 1e-4 relative and the 2x metrics of the "
    "token-AR extension by up to 1.2%, inside their intervals. A row's initial weights depend "
    "on its training seed only, and short CPU trainings are bit-exact run to run; that a whole CPU-budget run "
    "retrains to the same numbers on another machine (other thread counts and kernels) is not established, so read "
    "small gaps between CPU-budget rows as noise."
)

COST_COLUMNS = [
    ("num_parameters", "params"),
    ("train_steps", "train steps"),
    ("train_seconds", "train s"),
    ("sampling_seconds_per_frame", "sample s/frame"),
    ("peak_memory_mb", "peak MB"),
]


def arrow(higher_is_better: bool | None) -> str:
    """↑ higher is better, ↓ lower is better, · a diagnostic with no better direction."""
    return "·" if higher_is_better is None else "↑" if higher_is_better else "↓"


def format_cost(key: str, value: float | None) -> str:
    """Human-readable cost cell; '-' when a run did not report it."""
    if value is None:
        return "-"
    if key == "num_parameters":
        return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}K"
    if key == "train_steps":
        return f"{value:.0f}"
    if key == "sampling_seconds_per_frame":
        return f"{value:.3g}"
    return f"{value:.1f}"


UNCERTAINTY = (
    "Values are the mean over seeds; `± h` is the half-width of the 95% bootstrap interval (the protocol's number of "
    "draws, 1000 unless it sets `bootstrap_draws`, from a fixed seed, both recorded in each result) resampling the "
    "generated videos and, for FVD/FID/KVD, the real clips; the interval's ends are in each result file and the "
    "CSV. It is the uncertainty of the metric at the protocol's sample counts: FVD/FID are biased upwards by "
    "O(features / samples), so compare only at equal counts. `(sd s)` is the standard deviation over seeds when "
    "there are several (the interval then pools the seeds' draws)."
)


def is_best(board: Board, row: Row, key: str) -> bool:
    """Bold: rank 1 in a column that singles out some rows (`RANKING_RULE`)."""
    return board.bold(key, row)


def rank_text(board: Board, row: Row, key: str | None = None) -> str:
    """The row's rank on `key` (default the primary metric); '-' when it has none."""
    rank = board.rank(key or board.primary_metric, row)
    return "-" if rank is None else str(rank)


def row_marks(board: Board, row: Row) -> list[str]:
    """What a row's id is shown with: † when self-reported, `unconditional` when off the protocol's condition."""
    marks = ["†"] if row.self_reported else []
    condition = board.condition_mark(row)
    return [*marks, f"({condition})"] if condition else marks


def row_label(board: Board, row: Row) -> str:
    """The row id followed by its marks (plain text: the terminal table)."""
    return " ".join([row.id, *row_marks(board, row)])


def table_notes(board: Board) -> list[str]:
    """The footnotes under a table, for the marks it shows (none when no row is marked)."""
    notes = []
    if any(row.self_reported for row in board.rows):
        notes.append(f"† {SELF_REPORTED}: submitted without its sample folder (`zoo leaderboard submit` without "
                     "`--samples`), so its numbers are the submitter's.")
    marked = sorted({mark for row in board.rows if (mark := board.condition_mark(row))})
    if marked:
        keys = ", ".join(key for key in board.metric_keys if key in board.condition_keys) or "none here"
        notes.append(f"({' / '.join(marked)}): conditioned on other than the protocol's `{board.condition}`; ranked "
                     f"on the videos' own metrics, never on the condition's ({keys}).")
    return notes


def row_findings(board: Board) -> list[str]:
    """One paragraph per row with a finding (the pages only: the terminal table stays compact)."""
    return [f"Finding, `{row.id}`: {row.finding}" for row in board.rows if row.finding]


def _markdown_table(board: Board) -> list[str]:
    batch = board.rows[0].first["cost"]["sampling_batch_size"]
    metric_headers = [f"{key} {arrow(board.higher_is_better[key])}" for key in board.metric_keys]
    cost_headers = [label if key != "sampling_seconds_per_frame" else f"{label} (batch {batch})"
                    for key, label in COST_COLUMNS]
    headers = ["#", "model", *metric_headers, *cost_headers, "seeds", "hardware"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in board.rows:
        cells = [rank_text(board, row), " ".join([f"`{row.id}`", *row_marks(board, row)])]
        for key in board.metric_keys:
            text = row.metrics[key].format()
            cells.append(f"**{text}**" if is_best(board, row, key) else text)
        cells.extend(format_cost(key, row.cost(key)) for key, _ in COST_COLUMNS)
        cells.extend([",".join(map(str, row.seeds)), row.hardware])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown_floor(board: Board, floors: dict[str, dict[str, Any]]) -> list[str]:
    """The board's real-data floor: a sentence and a table of real-vs-real values against n (or why none shows)."""
    record, current = floor_for(board, floors)
    command = f"`zoo protocol floor {board.protocol_name}`"
    if record is None:
        return []
    if not current:
        return [f"The real-data floor in `floors/{board.protocol_name}.json` was measured under another result hash "
                f"(other weights, counts or scoring code); re-run {command}.", ""]
    keys = record["metrics"]
    lines = [f"**Real-data floor** ({command}, `floors/{board.protocol_name}.json`): {summary(record, board.primary_metric)}"
             " Held-out clips of the real split (never reference clips) are scored as the generated videos, against "
             "the protocol's real set (`real` = its size and `protocol`; `*` where it is smaller than n and so the "
             "limit) and against the split's first n clips (`matched`; at n = the protocol's real count that is the "
             "protocol row, not repeated).", "",
             "| n | real | " + " | ".join(keys) + " |", "|" + " ---: |" * (len(keys) + 2)]
    for row in distinct_floor_rows(record):
        real = f"{row['num_real']}{'*' if row['limited_by'] == 'real' else ''} {row['real_set']}"
        lines.append(f"| {row['n']} | {real} | " + " | ".join(cell_text(row["metrics"][k]) for k in keys) + " |")
    return [*lines, ""]


def render_markdown(boards: list[Board], excluded: list[Excluded], out_dir: Path) -> str:
    """The leaderboard README: one sorted table per protocol, best values in bold, then the sample strips."""
    lines = [
        "# Leaderboard",
        "",
        "Generated by `zoo leaderboard build` from the result files in `results/`; do not edit by hand.",
        "An interactive version (sortable tables, quality-over-time and quality-vs-speed plots) is `index.html`.",
        "",
        "↓ lower is better, ↑ higher is better, · a diagnostic with no better direction. " + UNCERTAINTY
        + " `name@Nx` is a metric on rollouts N times the training length. `missing` means the metric could not be "
        "computed for that model (the result file says why); it is never scored as 0. Results share a table only "
        "when their protocol hash and reference-set hash agree. Tables are listed best-founded first: by the most "
        "seeds a model row has, then the most generated videos per seed behind the primary metric.",
        "",
        RANKING_RULE.replace("the bold", "the **bold**"),
        "",
        VERIFICATION_RULE,
        "",
        REPRODUCIBILITY,
        "",
    ]
    if not boards:
        lines += ["No results yet: run `zoo bench quick`.", ""]
    floors = load_floors(out_dir)
    for board in boards:
        lines += [
            f"## {board.title}",
            "",
            f"Primary metric `{board.primary_metric}`; protocol sha256 `{board.protocol_hash}`, "
            f"reference set sha256 `{board.reference_sha256}`.",
            "",
            *_markdown_table(board),
            "",
            *[line for note in [*table_notes(board), *row_findings(board)] for line in (note, "")],
            *_markdown_floor(board, floors),
        ]
        strips = [(row, strip) for row in board.rows for strip in row.strips[:1]]
        if strips:
            lines += ["Samples (first seed):", ""]
            for row, strip in strips:
                rel = Path(os.path.relpath(strip, out_dir)).as_posix()
                lines.append(f"- `{row.id}`<br>![{row.id}]({rel})")
            lines.append("")
    if excluded:
        lines += ["## Excluded result files", ""]
        for item in excluded:
            lines.append(f"- `{Path(os.path.relpath(item.path, out_dir)).as_posix()}`: {item.reason}")
        lines.append("")
    return "\n".join(lines)


def render_csv(boards: list[Board]) -> str:
    """One line per (protocol, model id); metric columns are the union over protocols (empty where absent)."""
    metric_keys: list[str] = []
    for board in boards:
        metric_keys.extend(k for k in board.metric_keys if k not in metric_keys)
    header = ["protocol", "protocol_version", "protocol_hash", "reference_sha256", "rank", "id", "model", "tag",
              "seeds"]
    header += [column for key in metric_keys
               for column in (key, f"{key}_std", f"{key}_low", f"{key}_high", f"{key}_rank")]
    header += [key for key, _ in COST_COLUMNS] + ["sampling_batch_size", "hardware", "verification",
                                                  "conditioned_on"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for board in boards:
        for row in board.rows:
            model = row.first["model"]
            primary_rank = board.rank(board.primary_metric, row)
            line: list[object] = [board.protocol_name, board.protocol_version, board.protocol_hash,
                                  board.reference_sha256, "" if primary_rank is None else primary_rank, row.id,
                                  model["name"], model["tag"], " ".join(map(str, row.seeds))]
            for key in metric_keys:
                aggregate = row.metrics.get(key)
                rank = board.rank(key, row) if aggregate is not None else None
                line += ["" if aggregate is None or value is None else repr(value)
                         for value in ((aggregate.mean, aggregate.std, aggregate.low, aggregate.high)
                                       if aggregate is not None else (None,) * 4)]
                line.append("" if rank is None else rank)
            line += ["" if row.cost(key) is None else repr(row.cost(key)) for key, _ in COST_COLUMNS]
            line += [row.first["cost"]["sampling_batch_size"], row.hardware,
                     row.verification, row.conditioned_on]
            writer.writerow(line)
    return buffer.getvalue()


LOG_WIDTH = 100  # a plain log (CI, a pipe) gets tables that fit 100 columns
KEY_METRICS = 3  # metrics shown beside the primary one in the terminal table


def log_console() -> Console:
    """A rich console; when output is not a terminal (CI logs, pipes) it is LOG_WIDTH columns wide."""
    console = Console()
    return console if console.is_terminal else Console(width=LOG_WIDTH)


def key_metrics(board: Board, count: int = KEY_METRICS) -> list[str]:
    """The metrics shown beside the primary one: at the primary's rollout, ranked (a direction), prompt adherence
    first (the headline of a text-conditioned protocol), then in protocol order."""
    rollout = board.primary_metric.rsplit("@", 1)[1]
    candidates = [key for key in board.metric_keys if key != board.primary_metric and key.endswith(f"@{rollout}")
                  and board.higher_is_better[key] is not None]
    candidates.sort(key=lambda key: not key.startswith("prompt_adherence"))
    return candidates[:count]


METRIC_COLUMN_WIDTH = 12  # room for "value ± half-width" and its borders


def print_boards(boards: list[Board], excluded: list[Excluded], console: Console | None = None,
                 first_protocol: str | None = None) -> None:
    """Print a compact table per board (rank on the primary metric, the whole model id, the primary metric ± its
    interval and up to `KEY_METRICS` key metrics, as many as the console's width leaves room for; bold: rank 1),
    `first_protocol`'s boards first, then the excluded files. The full tables are the markdown / CSV / HTML pages."""
    console = console or log_console()
    if not boards:
        console.print("[yellow]no results yet[/yellow]: run `zoo bench quick`")
    for board in sorted(boards, key=lambda board: board.protocol_name != first_protocol):
        name_width = max(len("model"), *(len(row_label(board, row)) for row in board.rows))
        room = max(1, (console.width - name_width - 10) // METRIC_COLUMN_WIDTH)
        keys = [board.primary_metric, *key_metrics(board)][:room]
        rollout = board.primary_metric.rsplit("@", 1)[1]
        caption = (f"#: rank on {board.primary_metric}; ± is a 95% bootstrap half-width; rows sharing a rank do "
                   "not differ significantly")
        table = Table(title=f"{board.title}, metrics at {rollout}", title_justify="left", caption_justify="left",
                      caption="\n".join([caption, *table_notes(board)]).replace("`", ""))
        table.add_column("#", justify="right")
        table.add_column("model", no_wrap=True, min_width=name_width)
        for key in keys:
            # Spaces, not underscores, so a long name wraps between words rather than mid-word.
            header = f"{key.rsplit('@', 1)[0].replace('_', ' ')} {arrow(board.higher_is_better[key])}"
            table.add_column(header, justify="right", min_width=METRIC_COLUMN_WIDTH - 3)
        for row in board.rows:
            cells = [rank_text(board, row), row_label(board, row)]
            for key in keys:
                text = row.metrics[key].format()
                cells.append(f"[bold green]{text}[/bold green]" if is_best(board, row, key) else text)
            table.add_row(*cells)
        console.print(table)
    for item in excluded:
        console.print(f"[red]excluded[/red] {item.path}: {item.reason}")
