"""The benchmark script prints one throughput line per metric."""

from __future__ import annotations

import re

from benchmarks.bench_metrics import main


def test_prints_positive_throughput_for_each_requested_metric(capsys):
    names = ["flicker", "warping_error", "tof", "prompt_adherence"]
    results = main(["--videos", "2", "--frames", "4", "--size", "16", "--metrics", ",".join(names)])
    output = capsys.readouterr().out
    assert [result.metric for result in results] == names
    for result in results:
        assert result.num_videos == 4 and result.videos_per_s > 0
        assert result.frames_per_s == result.videos_per_s * 4
        line = re.search(rf"^{result.metric}\s+([\d.]+)\s+([\d.]+)", output, re.MULTILINE)
        assert line is not None and float(line.group(1)) > 0
    assert "random weights (timing only)" in output
