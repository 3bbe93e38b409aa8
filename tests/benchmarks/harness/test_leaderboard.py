"""Result schema, like-with-like grouping, aggregation over seeds, rendering and submission."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from benchmarks.leaderboard import (
    ResultError,
    build_leaderboard,
    load_boards,
    print_table,
    result_schema,
    submit_result,
    validate_result,
)


def test_schema_is_a_valid_json_schema_and_accepts_a_good_result(make_result):
    jsonschema.Draft202012Validator.check_schema(result_schema())
    validate_result(make_result())


def _without(path: str):
    def change(result):
        *parents, last = path.split(".")
        target = result
        for part in parents:
            target = target[part]
        del target[last]

    return change


def _set(path: str, value):
    def change(result):
        *parents, last = path.split(".")
        target = result
        for part in parents:
            target = target[part]
        target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_without("provenance"), "'provenance' is a required property"),
        (_without("provenance.git_commit"), "'git_commit' is a required property"),
        (_without("provenance.checkpoint_sha256"), "'checkpoint_sha256' is a required property"),
        (_set("provenance.checkpoint_sha256", "abc"), "provenance/checkpoint_sha256"),
        (_set("metrics.fvd_domain@1x.value", "12.0"), "metrics/fvd_domain@1x/value"),
        (_without("metrics.fvd_domain@2x.value"), "'value' is a required property"),
        (_set("metrics.prompt_adherence@1x", {"value": None, "metric": "p", "variant": "p", "rollout": 1,
                                              "higher_is_better": True}), "'missing_reason' is a required property"),
        (_set("metrics", {}), "metrics"),
        (_set("id", "beta.toy_micro"), "id 'beta.toy_micro' must be"),
        (_set("provenance.protocol_hash", "f" * 64), "mixes two protocols"),
        (_set("seed", 3), "seed 3 is not among"),
        (_set("protocol.primary_metric", "fid@1x"), "primary metric 'fid@1x'"),
        (_set("cost.hardware", {}), "cost/hardware"),
        (_set("schema_version", 2), "schema_version"),
    ],
)
def test_bad_results_are_rejected_with_a_one_line_reason(change, message, make_result):
    result = make_result()
    change(result)
    with pytest.raises(ResultError) as info:
        validate_result(result)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_like_with_like_grouping_aggregation_and_sorting(results_dir):
    boards, excluded = load_boards(results_dir)
    # The changed protocol hash gets its own table; the file without provenance lands in none.
    assert len(boards) == 2
    assert len({board.protocol_hash for board in boards}) == 2
    assert [e.path.name for e in excluded] == ["delta.toy_micro.seed0.json"]
    assert "provenance" in excluded[0].reason
    main = next(board for board in boards if len(board.rows) == 3)
    other = next(board for board in boards if len(board.rows) == 1)
    assert other.rows[0].metrics["fvd_domain@1x"].mean == 1.0
    # Sorted best-first on the primary metric (lower FVD is better); a missing primary value sorts last.
    assert [row.id for row in main.rows] == ["beta.toy_micro", "alpha.toy_micro", "gamma.toy_micro"]
    alpha = main.rows[1]
    assert alpha.seeds == [0, 1]
    assert alpha.metrics["fvd_domain@1x"].mean == pytest.approx(11.0)
    assert alpha.metrics["fvd_domain@1x"].std == pytest.approx(math.sqrt(2.0))
    assert alpha.metrics["fvd_domain@1x"].num_seeds == 2
    gamma = main.rows[2]
    assert gamma.metrics["fvd_domain@1x"].mean is None
    assert gamma.metrics["fvd_domain@1x"].missing_reason == "could not be computed"
    assert main.best("fvd_domain@1x") == 5.0 and main.best("prompt_adherence@1x") == 0.9
    assert alpha.curve("fid_over_time@2x") == ([0.0, 1.0, 2.0], [1.25, 2.25, 3.25])


def test_tables_are_listed_best_founded_first(tmp_path, make_result, write_result):
    """Most seeds per model row first, then most generated videos per seed; not the protocol names' order."""
    root = tmp_path / "results"
    write_result(root, make_result("alpha", protocol="aaa_quick"))
    for seed in range(3):
        write_result(root, make_result("alpha", seed=seed, protocol="zzz_eval", protocol_hash="e" * 64))
    wide = make_result("alpha", protocol="mmm_wide", protocol_hash="d" * 64)
    wide["metrics"]["fvd_domain@1x"]["num_fake"] = 512
    write_result(root, wide)
    boards, _ = load_boards(root)
    assert [board.protocol_name for board in boards] == ["zzz_eval", "mmm_wide", "aaa_quick"]
    assert [board.evidence for board in boards] == [(3, 16), (1, 512), (1, 16)]
    markdown = build_leaderboard(root, tmp_path / "board")["markdown"].read_text()
    assert markdown.index("## zzz_eval") < markdown.index("## mmm_wide") < markdown.index("## aaa_quick")


def test_a_later_run_of_the_same_seed_supersedes_the_earlier(tmp_path, make_result, write_result):
    root = tmp_path / "results"
    write_result(root, make_result("alpha", fvd=10.0, created="2025-01-01T00:00:00+00:00"), name="a.json")
    write_result(root, make_result("alpha", fvd=8.0, created="2025-02-01T00:00:00+00:00"), name="b.json")
    boards, excluded = load_boards(root)
    assert boards[0].rows[0].metrics["fvd_domain@1x"].mean == 8.0
    assert [e.path.name for e in excluded] == ["a.json"] and "superseded" in excluded[0].reason


def test_a_rows_newest_finding_is_shown_under_its_table_on_the_pages_not_in_the_log(tmp_path, make_result,
                                                                                   write_result):
    root = tmp_path / "results"
    old = make_result("alpha", seed=0, created="2025-01-01T00:00:00+00:00")
    old["model"]["finding"] = "an older word"
    new = make_result("alpha", seed=1, created="2025-02-01T00:00:00+00:00")
    new["model"]["finding"] = "misses the digits target: tried `guidance` 2-7, no change"
    for result in (old, new, make_result("beta", seed=0)):
        validate_result(result)
        write_result(root, result)
    files = build_leaderboard(root, tmp_path / "board")
    markdown, page = files["markdown"].read_text(), files["html"].read_text()
    assert "Finding, `alpha.toy_micro`: misses the digits target: tried `guidance` 2-7, no change" in markdown
    assert "an older word" not in markdown and "Finding, `beta" not in markdown
    assert "<code>alpha.toy_micro</code>: misses the digits target: tried <code>guidance</code>" in page
    console = Console(record=True, width=100)
    print_table(root, console)
    assert "misses the digits" not in console.export_text()


def test_rendered_markdown_and_csv(results_dir, tmp_path):
    out = tmp_path / "board"
    files = build_leaderboard(results_dir, out)
    assert set(files) == {"markdown", "csv", "html"} and all(p.is_file() for p in files.values())
    markdown = files["markdown"].read_text()
    assert markdown.count("\n## toy v1") == 2  # one table per protocol hash
    beta_line = next(line for line in markdown.splitlines() if "`beta.toy_micro`" in line)
    assert "**5**" in beta_line  # best FVD marked
    gamma_line = next(line for line in markdown.splitlines() if "`gamma.toy_micro`" in line)
    assert "missing" in gamma_line and "**0.9**" in gamma_line
    alpha_line = next(line for line in markdown.splitlines() if "`alpha.toy_micro`" in line and "sd 1.4" in line)
    assert "11 (sd 1.4)" in alpha_line  # no interval recorded: the std over seeds alone, never as ±
    assert "delta.toy_micro.seed0.json" in markdown.split("## Excluded result files")[1]
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert len(rows) == 4
    by_id = {(r["id"], r["protocol_hash"][:8]): r for r in rows}
    main_hash = next(r["protocol_hash"][:8] for r in rows if r["id"] == "beta.toy_micro")
    assert float(by_id[("alpha.toy_micro", main_hash)]["fvd_domain@1x"]) == pytest.approx(11.0)
    assert by_id[("gamma.toy_micro", main_hash)]["fvd_domain@1x"] == ""  # missing is empty, never 0
    assert by_id[("beta.toy_micro", main_hash)]["rank"] == "1"


def test_submit_validates_copies_and_refuses_conflicts(tmp_path, make_result):
    results = tmp_path / "results"
    outside = tmp_path / "cluster"
    outside.mkdir()
    good = make_result("ext", tag="gpu_run", fvd=4.0)
    good["samples"] = {"strip": "ext.gif", "num_videos": 2, "fps": 8}
    (outside / "ext.gif").write_bytes(b"GIF89a")
    source = outside / "ext.json"
    source.write_text(json.dumps(good))
    destination = submit_result(source, results)
    assert destination == results / "toy" / "ext.gpu_run.seed0.json"
    stored = json.loads(destination.read_text())
    assert stored.pop("verification")["status"] == "self-reported"  # no sample folder: not re-scored here
    assert stored == good and (destination.parent / "ext.gif").read_bytes() == b"GIF89a"
    assert submit_result(source, results) == destination  # the same file again is a no-op
    changed = dict(good, metrics={**good["metrics"], "fvd_domain@1x": {**good["metrics"]["fvd_domain@1x"],
                                                                         "value": 1.0}})
    source.write_text(json.dumps(changed))
    with pytest.raises(ResultError, match="already holds a different result"):
        submit_result(source, results)
    bad = make_result("ext2")
    del bad["provenance"]["command"]
    source.write_text(json.dumps(bad))
    with pytest.raises(ResultError, match="'command' is a required property"):
        submit_result(source, results)
    source.write_text("{not json")
    with pytest.raises(ResultError, match="not valid JSON"):
        submit_result(source, results)


def test_print_table_shows_every_protocol_and_the_excluded_files(results_dir):
    console = Console(record=True, width=250)
    print_table(results_dir, console)
    text = console.export_text()
    assert text.count("toy v1") == 2
    assert "beta.toy_micro" in text and "missing" in text and "11 (sd 1.4)" in text
    assert "excluded" in text and "delta.toy_micro.seed0.json" in text


def test_a_sweep_of_one_model_is_plotted_against_its_knob(tmp_path, make_result, write_result):
    root = tmp_path / "results"
    for block, fvd, speed in ((1, 9.0, 0.04), (2, 7.0, 0.02), (4, 8.0, 0.01)):
        result = make_result(f"df_block{block}", fvd=fvd, speed=speed)
        result["model"]["variant_of"] = "diffusion_forcing"
        result["model"]["config"] = {"block_size": block, "schedule": {"chunk_size": 4}, "width": 4}
        write_result(root, result)
    write_result(root, make_result("other", fvd=6.0))  # not part of the sweep
    outside = make_result("df_default", tag="other_recipe", fvd=6.5)  # the same model in another recipe's run
    outside["model"]["variant_of"] = "diffusion_forcing"
    outside["model"]["config"] = {"block_size": 4, "schedule": {"chunk_size": 4}, "width": 4}
    write_result(root, outside)
    page = build_leaderboard(root, tmp_path / "board")["html"].read_text()
    sweeps = page.split('class="chart sweep"')[1:]
    assert len(sweeps) == 2  # quality and speed, each against block_size
    assert all("vs block_size" in chart and "diffusion_forcing" in chart for chart in sweeps)
    assert "other" not in "".join(chart.split("</svg>")[0] for chart in sweeps)


def test_a_column_where_every_row_ties_marks_no_best(tmp_path, make_result, write_result):
    root = tmp_path / "results"
    for model, fvd in (("alpha", 3.0), ("beta", 4.0)):
        write_result(root, make_result(model, fvd=fvd, adherence=0.0))
    (board,), _ = load_boards(root)
    assert board.best("fvd_domain@1x") == 3.0 and board.best("prompt_adherence@1x") is None
    markdown = build_leaderboard(root, tmp_path / "board")["markdown"].read_text()
    assert "**0**" not in markdown and "**3**" in markdown


def test_result_json_keeps_number_arrays_on_one_line_and_round_trips(tmp_path, make_result):
    from benchmarks.files import atomic_write_json

    result = make_result(curve=[1.0, None, 3.5])
    result["metrics"]["fvd_domain@1x"]["bootstrap"] = {
        "low": 9.0, "high": 11.0, "level": 0.95, "method": "centred-percentile", "lower_bound": 0.0, "draws": 3,
        "seed": 0, "n": 16, "n_real": 16, "scheme": "s", "values": [10.5, 9.75, -1e-05]}
    result["provenance"]["command"] = "zoo bench micro x=[1,  2]"  # array-like text inside a string is kept
    path = atomic_write_json(tmp_path / "r.json", result)
    text = path.read_text()
    assert '"values": [10.5, 9.75, -1e-05]' in text and '"y": [1.0, null, 3.5]' in text
    assert json.loads(text) == result
    validate_result(result)


def test_the_end_of_bench_table_fits_a_100_column_log_primary_protocol_first():
    from rich.console import Console

    from benchmarks.leaderboard import load_boards, print_table
    from benchmarks.leaderboard.render import LOG_WIDTH, key_metrics

    shipped = Path(__file__).resolve().parents[3] / "leaderboard" / "results"
    boards, _ = load_boards(shipped)
    assert len({board.protocol_name for board in boards}) >= 2
    last = sorted(board.protocol_name for board in boards)[-1]
    out = io.StringIO()
    print_table(shipped, Console(file=out, width=LOG_WIDTH, color_system=None), first_protocol=last)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= LOG_WIDTH
    first = min(text.index(b.title) for b in boards if b.protocol_name == last)
    assert first < min(text.index(b.title) for b in boards if b.protocol_name != last)
    for board in boards:
        for row in board.rows:
            assert row.id in text  # whole names, never folded into fragments
        assert f"{board.primary_metric.rsplit('@', 1)[0].replace('_', ' ')} " in text
        shown = key_metrics(board)
        assert len(shown) <= 3 and board.primary_metric not in shown
        assert all(board.higher_is_better[key] is not None for key in shown)


def _floor_record(result_hash: str) -> dict:
    """A `zoo protocol floor` record of the toy protocol: FVD falls with n, faster against n real clips."""
    def cell(values):
        mean = sum(values) / len(values)
        return {"values": values, "mean": mean, "std": 1.0}

    rows = []
    for real_set, values in (("protocol", {16: [40.0, 42.0], 32: [30.0, 32.0], 64: [20.0, 22.0]}),
                             ("matched", {16: [60.0, 62.0], 32: [30.0, 32.0], 64: [12.0, 14.0]})):
        for n, fvd in values.items():
            num_real = 32 if real_set == "protocol" else n
            rows.append({"n": n, "real_set": real_set, "num_real": num_real,
                         "limited_by": "real" if num_real < n else "generated",
                         "metrics": {"fvd_domain@1x": cell(fvd), "fvd_domain@2x": cell([v * 2 for v in fvd])}})
    return {"format": "zoo-floor/1", "protocol": {"name": "toy", "version": 1, "spec_hash": "s", "num_real": 32,
                                                  "result_hash": result_hash, "num_generated": 16,
                                                  "long_rollout_videos": 16},
            "counts": [16, 32, 64], "seeds": [0, 1], "real_sets": ["protocol", "matched"],
            "metrics": ["fvd_domain@1x", "fvd_domain@2x"], "rows": rows}


def test_the_real_data_floor_is_tabled_and_plotted_under_its_own_result_hash_only(tmp_path, make_result,
                                                                                   write_result):
    root, board_dir = tmp_path / "results", tmp_path / "board"
    write_result(root, make_result("alpha", fvd=50.0))
    (board_dir / "floors").mkdir(parents=True)
    floor_file = board_dir / "floors" / "toy.json"
    floor_file.write_text(json.dumps(_floor_record(make_result()["protocol"]["hash"])))
    files = build_leaderboard(root, board_dir)
    markdown, page = files["markdown"].read_text(), files["html"].read_text()
    assert "**Real-data floor** (`zoo protocol floor toy`, `floors/toy.json`)" in markdown
    assert "at this protocol's counts (16 generated vs 32 real) give fvd_domain@1x 41 ± 1, the value real data itself gets" in markdown
    assert "| 64 | 32* protocol | 21 ± 1 | 42 ± 1 |" in markdown  # 64 held-out clips vs 32 real: the real set limits
    assert "| 64 | 64 matched | 13 ± 1 | 26 ± 1 |" in markdown  # the same n, told apart from the protocol row
    # At n = 32 the matched real set is the protocol's own: one row, not the same numbers twice.
    assert "| 32 | 32 protocol | 31 ± 1 |" in markdown and "| 32 | 32 matched |" not in markdown
    assert "64 vs 32 real: 21 ± 1; 64 vs 64 real: 13 ± 1" in markdown
    [chart] = page.split('class="chart floor"')[1:]  # the 1x metric only, two series (protocol / n real clips)
    chart = chart.split("</svg>")[0]
    assert "fvd_domain@1x vs n" in chart and chart.count("<polyline") == 2
    assert "vs the 32 real clips" in chart and "vs n real clips" in chart
    assert ">16</text>" in chart and ">64</text>" in chart  # log axis labelled with the counts measured
    # Measured under another result hash (other weights, counts or scoring code): named stale, never shown.
    floor_file.write_text(json.dumps(_floor_record("0" * 64)))
    files = build_leaderboard(root, board_dir)
    markdown, page = files["markdown"].read_text(), files["html"].read_text()
    assert "measured under another result hash" in markdown and "| 64 | 32* protocol |" not in markdown
    assert 'class="chart floor"' not in page and "re-run <code>zoo protocol floor toy</code>" in page
