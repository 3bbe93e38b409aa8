"""The arrows that must never exist (docs/ARCHITECTURE.md): `zoo` never imports `benchmarks` or the command line,
and `benchmarks` never imports the command line. `zoo_cli` is the composition root that joins them. The result
record and the file writes sit below the harness and the leaderboard, and the harness writes nothing through the
leaderboard. `hvz_registry`, which both packages (`benchmarks.metrics` included) import, imports nothing but the
standard library."""

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


def runtime_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every absolute import a file runs, skipping `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree)
               if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
               for stmt in block.body for node in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("module", ["benchmarks/record.py", "benchmarks/files.py"])
def test_the_record_and_file_writes_import_neither_harness_nor_leaderboard_nor_zoo(module):
    offenders = [name for name, _ in runtime_imports(ROOT / module)
                 if name.split(".")[0] == "zoo" or name.startswith(("benchmarks.harness", "benchmarks.leaderboard"))]
    assert offenders == []


def test_the_harness_writes_nothing_through_the_leaderboard():
    writers = {"atomic_write_bytes", "atomic_write_text", "atomic_write_json", "validate_result", "submit_result"}
    offenders = [(path.relative_to(ROOT).as_posix(), sorted(set(names) & writers))
                 for path in sorted((ROOT / "benchmarks" / "harness").rglob("*.py"))
                 for module, names in runtime_imports(path) if module.startswith("benchmarks.leaderboard")]
    assert [(path, names) for path, names in offenders if names] == []
