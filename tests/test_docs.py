"""The README and the architecture picture point only at files inside the repository, and those files exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
MENTION = re.compile(r"`(\.\./[^`]+)`")


@pytest.mark.parametrize("doc", ["README.md", "docs/ARCHITECTURE.md"])
def test_docs_link_nothing_outside_the_repository(doc):
    text = (ROOT / doc).read_text()
    links = [target for target in LINK.findall(text) if "://" not in target]
    assert MENTION.findall(text) == []
    for target in links:
        resolved = (ROOT / doc).parent.joinpath(target).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc} links {target}, outside the repository"
        assert resolved.exists(), f"{doc} links {target}, which does not exist"


def test_architecture_rooms_exist():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    text = text[text.index("## Rooms"):text.index("## Arrows")]
    for room in re.findall(r"^- `([\w/.]+)`", text, flags=re.MULTILINE):
        assert (ROOT / room).exists(), f"docs/ARCHITECTURE.md names {room}, which does not exist"
