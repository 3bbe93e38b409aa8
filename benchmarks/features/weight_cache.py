"""Checksum-verified download cache of the weight files the benchmark's feature extractors need.

Every file has a name, the URLs it is published at, its sha256 and a place in the cache (`$ZOO_CACHE`, default
`$XDG_CACHE_HOME/hybrid-video-zoo` or `~/.cache/hybrid-video-zoo`). `fetch(name)` returns a verified local path:
it downloads (with a progress bar) when the file is missing and the network is allowed, and otherwise fails within
seconds with one line naming the file, its sha256 and where to put it. Nothing here ever substitutes random weights.

Set `ZOO_OFFLINE=1` to forbid downloads. Files we ship in the repository (`bundled`) are verified the same way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hvz_registry import Registry

# A connection (or a stalled read) may take this long before we give up on a URL: offline failures take seconds.
CONNECT_TIMEOUT_S = 5.0


class WeightsUnavailableError(RuntimeError):
    """A weight file is missing and cannot be downloaded (offline, no network, or every URL failed)."""


class ChecksumMismatchError(RuntimeError):
    """A weight file exists but its sha256 is not the recorded one (corrupt, truncated, or a different file)."""


@dataclass(frozen=True)
class WeightFile:
    """One published weight file.

    `sha256=None` means no checksum could be verified for the public file: it is accepted, a warning names its
    actual sha256, and results should record that hash. `bundled` is a path inside this repository.
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    description: str
    bundled: Path | None = None
    size_bytes: int | None = None
    notes: str = field(default="", compare=False)


# Not this cache: the domain networks' weights are committed in this folder (`bundled` files).
DOMAIN_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# Provenance of each sha256 below (how it was established) sits beside it; keep it that way when adding files.
_KNOWN_FILES: tuple[WeightFile, ...] = (
    WeightFile(
        name="inception-2015-12-05",
        filename="inception-2015-12-05.pt",
        urls=("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",),
        # Recorded identically by several independent projects (k-diffusion's download_file digest among them).
        sha256="f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
        size_bytes=95_607_719,
        description="TF Inception-v3 (2015-12-05) as NVIDIA's TorchScript; the network clean-fid uses for FID",
    ),
    WeightFile(
        name="pt_inception-2015-12-05",
        filename="weights-inception-2015-12-05-6726825d.pth",
        urls=(
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        ),
        # The file name carries the sha256 prefix (torch.hub convention); the full digest is recorded identically by
        # several independent projects.
        sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        size_bytes=95_628_359,
        description="torch-fidelity's port of the same Inception-v3 (torchmetrics' FID backbone)",
    ),
    WeightFile(
        name="i3d_torchscript",
        filename="i3d_torchscript.pt",
        urls=("https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",),
        # Not published by the authors. Two independent third-party projects record this digest (and 51,235,320
        # bytes) for their copies of the StyleGAN-V file; we could not download it to check it ourselves.
        sha256="bec6519f66ea534e953026b4ae2c65553c17bf105611c746d904657e5860a5e2",
        size_bytes=51_235_320,
        description="StyleGAN-V's TorchScript port of the tf.hub I3D (Kinetics-400), the canonical FVD detector",
    ),
    WeightFile(
        name="i3d_pretrained_400",
        filename="i3d_pretrained_400.pt",
        urls=(
            "https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt",
            "https://onedrive.live.com/download?cid=78EEF3EB6AE7DBCB&resid=78EEF3EB6AE7DBCB%21199&authkey=AApKdFHPXzWLNyI",
        ),
        # No sha256 for this file is published anywhere we could find, and we could not download it: unverified.
        sha256=None,
        description="InceptionI3d state dict (VideoGPT / TATS / cd-fvd FVD detector, Kinetics-400)",
    ),
    WeightFile(
        name="alexnet-owt",
        filename="alexnet-owt-7be5be79.pth",
        urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
        # torchvision's file name carries the sha256 prefix 7be5be79; the full digest is recorded identically by
        # several independent projects.
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        size_bytes=244_408_911,
        description="torchvision AlexNet (ImageNet), the LPIPS backbone",
    ),
)

# A name registered again with other contents (URL, checksum, ...) is an error; the same contents again are not.
WEIGHT_FILES: Registry[WeightFile] = Registry("weight file")


def register_weight_file(weight_file: WeightFile) -> WeightFile:
    """Add a weight file to the registry (the domain networks register their bundled safetensors this way)."""
    return WEIGHT_FILES.register(weight_file.name, weight_file)


for _weight_file in _KNOWN_FILES:
    register_weight_file(_weight_file)


def get_weight_file(name: str) -> WeightFile:
    """The registered `WeightFile` called `name`; unknown names get a did-you-mean hint."""
    return WEIGHT_FILES.get(name)


def list_weight_files() -> list[str]:
    """Names of all registered weight files, sorted."""
    return WEIGHT_FILES.names()


def cache_dir() -> Path:
    """Where downloaded weights live: `$ZOO_CACHE`, else the user's cache folder."""
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "hybrid-video-zoo"


def offline() -> bool:
    """True when `ZOO_OFFLINE` is set to a true value (1, true, yes)."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_ACTUAL_SHA256: dict[tuple[str, int, int], str] = {}


def recorded_sha256(name: str) -> str | None:
    """The sha256 of weight file `name` that result keys pin, without reading the file where it has a recorded one.

    A recorded checksum is what `fetch` verifies every load against, so it is the sha256 of the file a load uses.
    A file without one is hashed (once per process and file version) if it is here; None if it is not (the metrics
    that need it are missing then, and the key changes once it arrives).
    """
    weight_file = get_weight_file(name)
    if weight_file.sha256 is not None:
        return weight_file.sha256
    path = local_path(name)
    try:
        stat = path.stat()
    except OSError:
        return None
    version = (str(path), stat.st_size, stat.st_mtime_ns)
    if version not in _ACTUAL_SHA256:
        _ACTUAL_SHA256[version] = sha256_of(path)
    return _ACTUAL_SHA256[version]


def local_path(name: str) -> Path:
    """Where the file `name` is (bundled) or belongs (cache), whether or not it exists yet."""
    weight_file = get_weight_file(name)
    if weight_file.bundled is not None:
        return weight_file.bundled
    return cache_dir() / weight_file.filename


def _unavailable(weight_file: WeightFile, destination: Path, reason: str) -> WeightsUnavailableError:
    checksum = weight_file.sha256 or "unrecorded (no verified public checksum)"
    source = f"download it from {weight_file.urls[0]}" if weight_file.urls else "restore it from git"
    return WeightsUnavailableError(
        f"weight file '{weight_file.filename}' (sha256 {checksum}) is not available ({reason}); "
        f"{source} and put it at {destination}"
    )


def verify(name: str, path: str | Path) -> str:
    """Check `path` against the recorded sha256 of `name`; return its actual sha256.

    Raises `ChecksumMismatchError` on a mismatch; warns when no sha256 is recorded for the file.
    """
    weight_file = get_weight_file(name)
    actual = sha256_of(path)
    if weight_file.sha256 is None:
        warnings.warn(
            f"no verified sha256 is recorded for '{weight_file.filename}'; using it unverified (sha256 {actual})",
            stacklevel=2,
        )
    elif actual != weight_file.sha256:
        raise ChecksumMismatchError(
            f"{path} has sha256 {actual} but '{weight_file.filename}' must have {weight_file.sha256}; "
            f"delete it and fetch it again from {weight_file.urls[0] if weight_file.urls else 'git'}"
        )
    return actual


def _copy_with_progress(response, handle, total: int | None, label: str) -> None:
    with tqdm(total=total, unit="B", unit_scale=True, desc=label) as progress:
        for block in iter(lambda: response.read(1 << 20), b""):
            handle.write(block)
            progress.update(len(block))


def _download(weight_file: WeightFile, destination: Path) -> None:
    errors = []
    for url in weight_file.urls:
        try:
            response = urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S)  # noqa: S310 - fixed https URLs
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        total = int(response.headers.get("Content-Length") or 0) or weight_file.size_bytes
        # Write to a temporary file in the same folder so an interrupted download never looks complete.
        with response, tempfile.NamedTemporaryFile(dir=destination.parent, delete=False, suffix=".part") as part:
            try:
                _copy_with_progress(response, part, total, weight_file.filename)
                complete = True
            except OSError as exc:
                errors.append(f"{url}: {exc}")
                complete = False
        if not complete:
            Path(part.name).unlink(missing_ok=True)
            continue
        try:
            verify(weight_file.name, part.name)
        except ChecksumMismatchError:
            Path(part.name).unlink(missing_ok=True)
            raise
        shutil.move(part.name, destination)
        return
    raise _unavailable(weight_file, destination, "download failed: " + "; ".join(errors))


def fetch(name: str) -> Path:
    """A verified local path to the weight file `name`, downloading it into the cache if needed and allowed.

    Raises `WeightsUnavailableError` (offline / no network) or `ChecksumMismatchError`, each one line.
    """
    weight_file = get_weight_file(name)
    destination = local_path(name)
    if destination.is_file():
        verify(name, destination)
        return destination
    if weight_file.bundled is not None:
        raise _unavailable(weight_file, destination, "the bundled file is missing from this checkout")
    if offline():
        raise _unavailable(weight_file, destination, "ZOO_OFFLINE is set")
    _download(weight_file, destination)
    return destination
