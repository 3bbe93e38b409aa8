"""The arrows that must never exist (docs/ARCHITECTURE.md): `zoo` never imports `benchmarks` or the command line,
and `benchmarks` never imports the command line. `zoo_cli` is the composition root that joins them. `hvz_registry`,
which both packages (`benchmarks.metrics` included) import, imports nothing but the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a file imports, wherever the import sits (lazy imports inside functions count)."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            packages.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages


@pytest.mark.parametrize(("package", "forbidden"), [("zoo", {"benchmarks", "zoo_cli"}), ("benchmarks", {"zoo_cli"})])
def test_package_imports_none_of(package, forbidden):
    files = sorted((ROOT / package).rglob("*.py"))
    assert len(files) > 10
    offenders = {path.relative_to(ROOT).as_posix(): sorted(imported_packages(path) & forbidden) for path in files}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_registry_primitive_imports_only_the_standard_library():
    files = sorted((ROOT / "hvz_registry").rglob("*.py"))
    assert files
    imported = {path.relative_to(ROOT).as_posix(): imported_packages(path) - sys.stdlib_module_names for path in files}
    assert {path: sorted(found) for path, found in imported.items() if found} == {}


def test_the_boundary_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from benchmarks.harness import run_recipe\n    import zoo_cli.x\n")
    assert imported_packages(module) == {"benchmarks", "zoo_cli"}
