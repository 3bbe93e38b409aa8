"""The static leaderboard page: sortable tables, quality-over-time and quality-vs-speed plots, sample strips.

Self-contained (inline CSS, JS and SVG, no network), so it renders from a checkout or any static host.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.leaderboard.floors import floor_for, load_floors, summary
from benchmarks.leaderboard.render import (
    COST_COLUMNS,
    REPRODUCIBILITY,
    UNCERTAINTY,
    arrow,
    format_cost,
    is_best,
    rank_text,
    row_findings,
    table_notes,
)
from benchmarks.leaderboard.results import RANKING_RULE, SELF_REPORTED, VERIFICATION_RULE, Aggregate, Board, Excluded

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
WIDTH, HEIGHT = 560, 280
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 180, 28, 44  # the right margin holds the legend
LEGEND_CHARS = 28

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } .note { color: #555; font-size: .9rem; max-width: 900px; }
table.board { border-collapse: collapse; margin: 1rem 0; font-size: .85rem; }
table.board th, table.board td { border-bottom: 1px solid #ddd; padding: .3rem .55rem; text-align: right;
                                 white-space: nowrap; }
table.board th { cursor: pointer; background: #f4f4f4; user-select: none; position: sticky; top: 0; }
table.board th[aria-sort="ascending"]::after { content: " ▲"; }
table.board th[aria-sort="descending"]::after { content: " ▼"; }
table.board td.id, table.board th.id { text-align: left; font-family: ui-monospace, monospace; }
td.best { font-weight: 700; color: #0a6b1f; } td.missing { color: #999; font-style: italic; }
.mark { color: #a15c00; font-family: system-ui, sans-serif; font-size: .8rem; margin-left: .3rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
svg.chart { background: #fff; border: 1px solid #e4e4e4; }
svg.chart text { font-size: 11px; fill: #333; } svg.chart .grid { stroke: #eee; }
svg.chart .axis { stroke: #666; } svg.chart .title { font-size: 13px; font-weight: 600; }
.strips { display: flex; flex-wrap: wrap; gap: 1rem; }
.table-scroll { overflow-x: auto; max-width: 100%; }
.strips figure { margin: 0; }
.strips img { image-rendering: pixelated; height: 96px; width: auto; max-width: 100%; border: 1px solid #ddd; }
.strips figcaption { font-family: ui-monospace, monospace; font-size: .8rem; }
"""

SCRIPT = """
document.querySelectorAll("table.board").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = th.dataset.type === "number";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        var xMissing = x === undefined || x === "", yMissing = y === undefined || y === "";
        if (xMissing || yMissing) { return xMissing - yMissing; }  // missing values always sort last
        var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


@dataclass
class Series:
    label: str
    color: str
    points: list[tuple[float, float]]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    return [start + i * step for i in range(int(math.ceil((high - start) / step)) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:.3g}"


def svg_chart(series: Sequence[Series], title: str, x_label: str, y_label: str, css_class: str,
              lines: bool = True, log_x: bool = False, x_ticks: list[float] | None = None) -> str:
    """An SVG line (or scatter) chart with axes, ticks and a legend; `css_class` names what it shows.

    `x_ticks` fixes the x ticks (e.g. the rollout multipliers, in data units also on a log axis, where they are
    labelled with their values); by default they are chosen to fit the data (powers of ten on a log axis).
    """
    points = [p for s in series for p in s.points]
    if log_x:
        points = [(math.log10(x), y) for x, y in points if x > 0]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    tick_labels = None
    if x_ticks is not None and log_x:
        tick_labels = [str(int(t)) if float(t).is_integer() else _tick_label(t) for t in x_ticks if t > 0]
        x_ticks = [math.log10(t) for t in x_ticks if t > 0]
    if x_ticks is None:
        x_ticks = _ticks(min(xs), max(xs)) if not log_x else list(range(math.floor(min(xs)), math.ceil(max(xs)) + 1))
    if len(x_ticks) < 2:
        x_ticks = [x_ticks[0], x_ticks[0] + 1]
    y_ticks = _ticks(min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - MARGIN_LEFT - MARGIN_RIGHT, HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        x = math.log10(x) if log_x else x
        return MARGIN_LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return MARGIN_TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    parts = [f'<svg class="chart {css_class}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
             f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">',
             f'<text class="title" x="{MARGIN_LEFT}" y="18">{html.escape(title)}</text>']
    for index, tick in enumerate(x_ticks):
        x = MARGIN_LEFT + (tick - x0) / (x1 - x0) * plot_w
        if tick_labels is not None and index < len(tick_labels):
            label = tick_labels[index]
        else:
            label = f"1e{tick:.0f}" if log_x else _tick_label(tick)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN_TOP}" y2="{MARGIN_TOP + plot_h}"/>')
        parts.append(f'<text x="{x:.1f}" y="{MARGIN_TOP + plot_h + 14}" text-anchor="middle">{label}</text>')
    for tick in y_ticks:
        y = sy(tick)
        parts.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_label(tick)}</text>')
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" '
                 f'y2="{MARGIN_TOP + plot_h}"/>')
    parts.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + plot_w}" y1="{MARGIN_TOP + plot_h}" '
                 f'y2="{MARGIN_TOP + plot_h}"/>')
    parts.append(f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14,{MARGIN_TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
                 f'{html.escape(y_label)}</text>')
    for index, item in enumerate(series):
        coords = [(sx(x), sy(y)) for x, y in item.points if not log_x or x > 0]
        label = html.escape(item.label)
        if lines and len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline class="series" fill="none" stroke="{item.color}" stroke-width="2" '
                         f'points="{path}"><title>{label}</title></polyline>')
        for x, y in coords:
            parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{item.color}">'
                         f'<title>{label}</title></circle>')
        legend_y = MARGIN_TOP + 6 + 14 * index
        short = item.label if len(item.label) <= LEGEND_CHARS else item.label[: LEGEND_CHARS - 1] + "…"
        parts.append(f'<rect x="{WIDTH - MARGIN_RIGHT + 12}" y="{legend_y - 8}" width="9" height="9" '
                     f'fill="{item.color}"/><text x="{WIDTH - MARGIN_RIGHT + 25}" y="{legend_y}">'
                     f"<title>{label}</title>{html.escape(short)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _colors(board: Board) -> dict[str, str]:
    return {row_id: PALETTE[i % len(PALETTE)] for i, row_id in enumerate(sorted(r.id for r in board.rows))}


def _labels(board: Board) -> dict[str, str]:
    # One tag on the whole board (one recipe): the model name alone tells the rows apart in a legend.
    tags = {row.first["model"]["tag"] for row in board.rows}
    return {row.id: row.first["model"]["name"] if len(tags) == 1 else row.id for row in board.rows}


def _charts(board: Board) -> list[str]:
    colors, labels = _colors(board), _labels(board)
    charts = []
    primary = board.primary_metric
    speed = [Series(labels[row.id], colors[row.id], [(row.cost("sampling_seconds_per_frame"), row.metrics[primary].mean)])
             for row in board.rows
             if row.metrics[primary].mean is not None and row.cost("sampling_seconds_per_frame")]
    if speed:
        xs = [s.points[0][0] for s in speed]
        charts.append(svg_chart(speed, f"quality vs speed ({primary} {arrow(board.higher_is_better[primary])})",
                                "sampling seconds per frame", primary, "quality-vs-speed", lines=False,
                                log_x=max(xs) / min(xs) > 10))
    for key in board.curve_keys:
        series = []
        for row in board.rows:
            curve = row.curve(key)
            if curve is not None:
                points = [(x, y) for x, y in zip(*curve, strict=True) if y is not None]
                series.append(Series(labels[row.id], colors[row.id], points))
        series = [s for s in series if s.points]
        if series:
            charts.append(svg_chart(series, f"{key} over time", "frame", key, "quality-over-time"))
    # A metric scored at several rollout lengths is quality over time too: value vs rollout multiplier.
    by_variant: dict[str, list[tuple[int, str]]] = {}
    for key in board.metric_keys:
        variant, rollout = key.rsplit("@", 1)
        by_variant.setdefault(variant, []).append((int(rollout.rstrip("x")), key))
    for variant, keyed in by_variant.items():
        if len(keyed) < 2:
            continue
        series = []
        for row in board.rows:
            points = [(float(r), row.metrics[k].mean) for r, k in sorted(keyed) if row.metrics[k].mean is not None]
            if points:
                series.append(Series(labels[row.id], colors[row.id], points))
        if series:
            direction = arrow(board.higher_is_better[keyed[0][1]])
            charts.append(svg_chart(series, f"{variant} {direction} vs rollout length", "rollout (x the 1x length)",
                                    variant, "quality-over-time", x_ticks=[float(r) for r, _ in sorted(keyed)]))
    charts.extend(_sweep_charts(board, colors))
    return charts


def floor_charts(board: Board, floors: dict[str, dict[str, Any]]) -> list[str]:
    """The real-data floor of the board's protocol measured under its result hash: each 1x distribution metric of
    real clips against n, scored against the protocol's real set and against n real clips (mean over seeds)."""
    record, current = floor_for(board, floors)
    if record is None or not current:
        return []
    num_real = record["protocol"]["num_real"]
    labels = {"protocol": f"vs the {num_real} real clips", "matched": "vs n real clips"}
    charts = []
    for key in [k for k in record["metrics"] if k.endswith("@1x")]:
        series = []
        for index, real_set in enumerate(record["real_sets"]):
            points = [(float(row["n"]), row["metrics"][key]["mean"]) for row in record["rows"]
                      if row["real_set"] == real_set and row["metrics"][key].get("mean") is not None]
            if points:
                series.append(Series(labels.get(real_set, real_set), PALETTE[index % len(PALETTE)], points))
        if series:
            seeds = len(record["seeds"])
            charts.append(svg_chart(series, f"real-data floor: {key} vs n ({seeds} seeds)",
                                    "held-out real clips scored (n)", key, "floor", log_x=True,
                                    x_ticks=[float(n) for n in record["counts"]]))
    return charts


def _flat_numbers(config: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a nested config, keyed by dotted path."""
    leaves: dict[str, float] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            leaves.update(_flat_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            leaves[f"{prefix}{key}"] = float(value)
    return leaves


def _sweep_charts(board: Board, colors: dict[str, str]) -> list[str]:
    """A sweep (one recipe's variants of one model) plotted against its knob: rows of one tag that run the same
    registered model and whose configs differ in exactly one numeric key give the primary metric and the speed vs
    that key."""
    groups: dict[tuple[str, str], list] = {}
    for row in board.rows:
        model = row.first["model"]
        groups.setdefault((model.get("variant_of") or model["name"], model["tag"]), []).append(row)
    charts = []
    primary = board.primary_metric
    for (model, _), rows in sorted(groups.items()):
        if len(rows) < 3:
            continue
        configs = [_flat_numbers(row.first["model"].get("config") or {}) for row in rows]
        shared = set.intersection(*(set(c) for c in configs))
        knobs = [key for key in sorted(shared) if len({c[key] for c in configs}) == len(rows)]
        if len(knobs) != 1:
            continue
        knob = knobs[0]
        for label, values in (
            (f"{primary} {arrow(board.higher_is_better[primary])}", [r.metrics[primary].mean for r in rows]),
            ("sampling seconds per frame", [r.cost("sampling_seconds_per_frame") for r in rows]),
        ):
            points = sorted((c[knob], v) for c, v in zip(configs, values, strict=True) if v is not None)
            if len(points) >= 2:
                charts.append(svg_chart([Series(model, colors[rows[0].id], points)], f"{model}: {label} vs {knob}",
                                        knob, label, "sweep", x_ticks=[x for x, _ in points]))
    return charts


def _cell_title(aggregate: Aggregate, rank: int | None) -> str:
    """Hover text of a metric cell: the interval's ends and the rank."""
    parts = []
    if aggregate.low is not None:
        parts.append(f"{aggregate.level:.0%} bootstrap interval [{aggregate.low:.4g}, {aggregate.high:.4g}]")
    else:
        parts.append("no bootstrap interval recorded")
    if aggregate.std is not None:
        parts.append(f"sd over seeds {aggregate.std:.3g}")
    parts.append(f"rank {rank}" if rank is not None else "not ranked")
    return "; ".join(parts)


def _code(text: str) -> str:
    """Escaped text with its `backticks` as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _table(board: Board, index: int) -> str:
    headers = ['<th class="id" data-type="number">#</th>', '<th class="id" data-type="text">model</th>']
    titles = {True: "higher is better", False: "lower is better", None: "diagnostic: no better direction"}
    headers += [f'<th data-type="number" title="{titles[board.higher_is_better[k]]}">'
                f"{html.escape(k)} {arrow(board.higher_is_better[k])}</th>" for k in board.metric_keys]
    headers += [f'<th data-type="number">{html.escape(label)}</th>' for _, label in COST_COLUMNS]
    headers += ['<th data-type="text">seeds</th>']
    rows = []
    for row in board.rows:
        rank = rank_text(board, row)
        marks = ""
        if row.self_reported:
            marks += f'<sup class="mark self-reported" title="{SELF_REPORTED}">†</sup>'
        condition = board.condition_mark(row)
        if condition:
            marks += (f'<span class="mark off-condition" title="not ranked on the condition\'s metrics">'
                      f"{html.escape(condition)}</span>")
        cells = [f'<td class="id" data-value="{"" if rank == "-" else rank}">{rank}</td>',
                 f'<td class="id" data-value="{html.escape(row.id)}">{html.escape(row.id)}{marks}</td>']
        for key in board.metric_keys:
            aggregate = row.metrics[key]
            if aggregate.mean is None:
                reason = html.escape(aggregate.missing_reason or "")
                cells.append(f'<td class="missing" data-value="" title="{reason}">missing</td>')
            else:
                css = ' class="best"' if is_best(board, row, key) else ""
                title = html.escape(_cell_title(aggregate, board.rank(key, row)))
                cells.append(f'<td{css} data-value="{aggregate.mean!r}" title="{title}">'
                             f"{html.escape(aggregate.format())}</td>")
        for key, _ in COST_COLUMNS:
            value = row.cost(key)
            cells.append(f'<td data-value="{"" if value is None else repr(value)}">{format_cost(key, value)}</td>')
        cells.append(f'<td data-value="{" ".join(map(str, row.seeds))}">{",".join(map(str, row.seeds))}</td>')
        rows.append(f'<tr data-id="{html.escape(row.id)}">' + "".join(cells) + "</tr>")
    return (f'<div class="table-scroll"><table class="board" id="board-{index}"><thead><tr>{"".join(headers)}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>')


def render_html(boards: list[Board], excluded: list[Excluded], out_dir: Path) -> str:
    """The whole static page as one string; strip paths are made relative to `out_dir`."""
    body = ["<h1>hybrid-video-zoo leaderboard</h1>",
            '<p class="note">Click a column header to sort; hover a value for its interval and rank. '
            f"{html.escape(UNCERTAINTY)} <i>missing</i> means the metric could not be computed for that model and "
            "is never scored as 0. Results share a table only when their protocol hash and reference-set hash agree. "
            f"{html.escape(REPRODUCIBILITY)}</p>",
            f'<p class="note ranking">{html.escape(RANKING_RULE).replace("the bold", "the bold green")}</p>',
            f'<p class="note verification">{_code(VERIFICATION_RULE)}</p>']
    if not boards:
        body.append("<p>No results yet: run <code>zoo bench quick</code>.</p>")
    floors = load_floors(out_dir)
    for index, board in enumerate(boards):
        batch = board.rows[0].first["cost"]["sampling_batch_size"]
        body.append(f'<section class="protocol" id="protocol-{html.escape(board.protocol_name)}-{index}">')
        body.append(f"<h2>{html.escape(board.title)}</h2>")
        body.append(f'<p class="note">Primary metric <code>{html.escape(board.primary_metric)}</code>; sampling '
                    f"speed at batch {batch}; protocol sha256 <code>{board.protocol_hash}</code>; reference set "
                    f"sha256 <code>{board.reference_sha256}</code>; hardware: "
                    f"{html.escape(', '.join(sorted({row.hardware for row in board.rows})))}.</p>")
        body.append(_table(board, index))
        body.extend(f'<p class="note table-note">{_code(note)}</p>' for note in table_notes(board))
        body.extend(f'<p class="note finding">{_code(note)}</p>' for note in row_findings(board))
        body.append('<div class="charts">' + "".join(_charts(board)) + "</div>")
        record, current = floor_for(board, floors)
        if record is not None:
            name = html.escape(board.protocol_name)
            if current:
                body.append(f'<h3>Real-data floor</h3><p class="note floor">'
                            f"{html.escape(summary(record, board.primary_metric))} From <code>zoo protocol floor "
                            f"{name}</code> (<code>floors/{name}.json</code>): held-out real clips, never reference "
                            "clips, scored as the generated videos.</p>")
                body.append('<div class="charts">' + "".join(floor_charts(board, floors)) + "</div>")
            else:
                body.append(f'<p class="note floor">The real-data floor in <code>floors/{name}.json</code> was '
                            "measured under another result hash; re-run <code>zoo protocol floor "
                            f"{name}</code>.</p>")
        figures = []
        for row in board.rows:
            for strip in row.strips[:1]:
                rel = html.escape(Path(os.path.relpath(strip, out_dir)).as_posix())
                figures.append(f'<figure><img src="{rel}" alt="samples of {html.escape(row.id)}">'
                               f"<figcaption>{html.escape(row.id)}</figcaption></figure>")
        if figures:
            body.append("<h3>Samples</h3><div class=\"strips\">" + "".join(figures) + "</div>")
        body.append("</section>")
    if excluded:
        items = "".join(f"<li><code>{html.escape(Path(os.path.relpath(e.path, out_dir)).as_posix())}</code>: "
                        f"{html.escape(e.reason)}</li>" for e in excluded)
        body.append(f"<h2>Excluded result files</h2><ul class=\"excluded\">{items}</ul>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>hybrid-video-zoo leaderboard</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}<script>{SCRIPT}</script></body></html>\n"
    )
