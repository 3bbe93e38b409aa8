"""Atomic file writes: a reader never sees half a result, a half-written manifest or a torn leaderboard.

The one place the benchmarks write files from: the harness (results, sample folders, real-set caches) and the
leaderboard (rendered tables) both import it, so neither imports the other to write. (`zoo/files.py` cannot serve:
the leaderboard reads results without importing the zoo.)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, then `os.replace` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# A JSON array of numbers (or nulls) only, as `json.dumps(indent=2)` spreads it over one line per item.
_NUMBER_ARRAY = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*|null)(?:,\s*(?:-?[0-9][0-9.eE+-]*|null))*)\s*\]")


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Indented JSON, except that arrays of numbers (curves, bootstrap draws) stay on one line."""
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    # Only matches that span lines: a JSON string holds no raw newline, so text inside strings is never touched.
    text = _NUMBER_ARRAY.sub(lambda match: "[" + re.sub(r",\s+", ", ", match.group(1)) + "]"
                             if "\n" in match.group(0) else match.group(0), text)
    return atomic_write_text(path, text + "\n")
