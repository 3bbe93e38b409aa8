"""Benchmarks: metrics (torchmetrics, zoo-free), feature extractors, harness and leaderboard."""
