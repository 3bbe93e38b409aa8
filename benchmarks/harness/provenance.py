"""Provenance and cost facts a result records: code version, packages, hardware, checksums, memory.

A run decides the git state once, before it writes anything into the tree (`git_state()` at its start, passed to
every `provenance(...)`), and measures each row's peak memory on its own (`PeakMemory`).
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from zoo.config import REPO_ROOT

try:
    import psutil
except ImportError:  # optional: /proc/self/status serves on Linux
    psutil = None

GitState = tuple[str | None, bool | None]

PACKAGES = ("hybrid-video-zoo", "torch", "torchvision", "lightning", "torchmetrics", "diffusers", "transformers",
            "timm", "numpy", "scipy")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> GitState:
    """(commit sha, dirty) of the checkout the code runs from; (None, None) outside a git checkout or before
    the first commit. Dirty means tracked files differ from the commit."""
    commit = _git("rev-parse", "--verify", "HEAD")
    if not commit:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["torch"] = versions["torch"] or torch.__version__
    return versions


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"device": device.type, "name": name, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


def _status_kib(field: str) -> int | None:
    """A field of /proc/self/status (`VmRSS`, `VmHWM`) in KiB; None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_bytes() -> int | None:
    if psutil is not None:
        return psutil.Process().memory_info().rss
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def _reset_rss_high_water_mark() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) back to the current RSS: `5` into /proc/self/clear_refs (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory of one stretch of work (one seed of a row): `with PeakMemory(device) as peak: ...`, then
    `peak.read() -> (MB, kind)`; inside the block it reads the peak so far.

    CUDA: allocations since entry (`cuda_max_allocated`). CPU: the process's peak RSS since entry, exactly from the
    kernel's high-water mark reset on entry (`process_peak_rss`), else sampled every `interval_s` by a background
    thread, which can miss a shorter spike (`process_peak_rss_sampled`); where neither can be read, the process's
    lifetime maximum, cumulative over rows (`process_max_rss`).
    """

    def __init__(self, device: str | torch.device, interval_s: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.kind = ""
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._final: tuple[float, str] | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
        elif _reset_rss_high_water_mark():
            self.kind = "process_peak_rss"
        elif (rss := _rss_bytes()) is not None:
            self.kind, self._sampled_peak = "process_peak_rss_sampled", rss
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        else:
            self.kind = "process_max_rss"
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sampled_peak = max(self._sampled_peak, _rss_bytes() or 0)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._final = self.read()

    def read(self) -> tuple[float, str]:
        """(peak MB, kind) of the block: so far inside it, the block's own after it."""
        if self._final is not None:
            return self._final
        if self.kind == "cuda_max_allocated":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.kind == "process_peak_rss":
            peak = (_status_kib("VmHWM") or 0) * 1024
        elif self.kind == "process_peak_rss_sampled":
            peak = max(self._sampled_peak, _rss_bytes() or 0)
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        return peak / 2**20, self.kind


def provenance(protocol_hash: str, checkpoint_sha256: str | None, seed: int, training_seed: int | None,
               command: str | None = None, git: GitState | None = None) -> dict[str, Any]:
    """The provenance block of a result; `git` is the state the run decided at its start (`git_state()` now if
    None: right only for a command that has written nothing into the tree yet)."""
    commit, dirty = git if git is not None else git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": package_versions(),
        "protocol_hash": protocol_hash,
        "checkpoint_sha256": checkpoint_sha256,
        "seeds": [seed],
        "training_seed": training_seed,
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
