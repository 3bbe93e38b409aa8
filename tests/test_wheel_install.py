"""`pip install` without `-e`: a built wheel carries its configs, protocols and recipes, and runs outside the repo.

The wheel is built from a copy of the packaging inputs (no stale `build/` of the checkout leaks into it) and
installed into a fresh venv. The heavy dependencies come from this venv through a `.pth` line in the fresh venv's
site-packages: such a line is only appended to `sys.path`; the `.pth` files over there (this project's editable
finder among them) are not run, so `zoo` can only be the installed copy. Every command runs from a folder outside
the checkout with PYTHONPATH unset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGING_INPUTS = ("pyproject.toml", "README.md", "zoo", "benchmarks", "zoo_cli", "hvz_registry")

# Run inside the fresh venv (one process: each start imports torch): `zoo list`, then as JSON where the packages were
# imported from and what the packaged defaults give.
CHECKS = textwrap.dedent("""
    import json, sys
    import benchmarks, hvz_registry, zoo
    from benchmarks.harness import list_protocols, list_recipes, load_protocol, load_recipe
    from zoo_cli import main
    assert main(["list"]) == 0
    print(json.dumps({
        "files": [zoo.__file__, benchmarks.__file__, hvz_registry.__file__],
        "block_size": zoo.create_model("diffusion_forcing").config.block_size,
        "learning_rate": zoo.create_model("interleaved_latent").config.learning_rate,
        "preset_dim": zoo.registry.model_config("video_diffusion", config_path="video_diffusion_large").dim,
        "protocol": load_protocol("moving_digits").name,
        "protocols": list_protocols(),
        "recipes": list_recipes(),
        "micro_protocol": load_recipe("micro").protocol,
    }))
""")


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _installed_files(site: Path) -> set[Path]:
    return {p.relative_to(site) for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_a_wheel_install_finds_its_defaults_and_runs_micro(tmp_path: Path) -> None:
    assert not tmp_path.resolve().is_relative_to(REPO)
    source = tmp_path / "source"
    source.mkdir()
    for name in PACKAGING_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_PLUGINS", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", ZOO_CACHE=str(tmp_path / "cache"))
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
         tmp_path, env)
    [wheel] = (tmp_path / "dist").glob("hybrid_video_zoo-*.whl")

    # A venv without its own pip (saves ~10 s of ensurepip); this venv's pip installs into it.
    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], tmp_path, env)
    python = fresh / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp_path, env)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()
    installed = _installed_files(site)

    *listing, report = _run([str(python), "-c", CHECKS], work, env).splitlines()
    found = json.loads(report)
    assert all(Path(file).resolve().is_relative_to(site.resolve()) for file in found["files"]), found["files"]
    model_yaml = REPO / "zoo" / "configs" / "model"
    assert found["block_size"] == yaml.safe_load((model_yaml / "diffusion_forcing.yaml").read_text())["block_size"]
    assert found["learning_rate"] == yaml.safe_load((model_yaml / "interleaved_latent.yaml").read_text())[
        "learning_rate"]
    assert (found["block_size"], found["learning_rate"]) == (4, 2e-3)  # not the dataclasses' 1 and 1e-3
    assert found["preset_dim"] == yaml.safe_load((model_yaml / "presets" / "video_diffusion_large.yaml").read_text())["dim"]
    assert found["protocol"] == found["micro_protocol"] == "moving_digits"
    assert found["protocols"] == sorted(p.stem for p in (REPO / "benchmarks" / "protocols").glob("*.yaml"))
    assert {"micro", "quick"} <= set(found["recipes"])

    listing = "\n".join(listing)
    assert "diffusion_forcing" in listing and "moving_digits" in listing and "fvd" in listing

    # micro end to end (train, generate, score, record, table) through the installed `zoo` script, on one of its two
    # models: the second (video_ar) adds ~80 s on a 2-core box and exercises no more of the packaging.
    out = _run([str(fresh / "bin" / "zoo"), "bench", "micro", "--force", "models=[video_diffusion]"], work, env)
    assert "video_diffusion.moving_digits_micro" in out and "1 result file(s)" in out
    result = json.loads(
        (work / "runs/bench_micro/results/moving_digits/video_diffusion.moving_digits_micro.seed0.json").read_text())
    assert result["metrics"]["fvd_domain@1x"]["value"] is not None
    assert _installed_files(site) == installed  # every output went to the working directory, none into the package
