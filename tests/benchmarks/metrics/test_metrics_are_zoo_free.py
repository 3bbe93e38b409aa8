"""`benchmarks.metrics` (and the extractors and weight cache it builds on) must work without the zoo."""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
# The domain network's training script is the one allowed user of zoo.data (it makes the training clips).
ALLOWED = {BENCHMARKS / "features" / "train_domain_net.py"}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_no_metric_feature_or_weights_module_imports_zoo():
    files = [*sorted((BENCHMARKS / "metrics").glob("*.py")), *sorted((BENCHMARKS / "features").glob("*.py"))]
    offenders = {
        path.relative_to(BENCHMARKS).as_posix(): sorted(m for m in imported_modules(path) if m.split(".")[0] == "zoo")
        for path in files
        if path not in ALLOWED
    }
    assert {path: modules for path, modules in offenders.items() if modules} == {}
    assert len(files) > 10
