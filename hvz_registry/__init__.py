"""One lookup primitive: names -> things, with the same one-line error and did-you-mean everywhere.

Models, datasets, metrics, feature extractors, weight files and text encoders are `Registry`s; protocols, recipes
and presets (names of files in a folder) build their error with `unknown_name`. Standard library only, so `zoo` and
`benchmarks` (its metrics included) may both import it without importing each other (tests/test_import_boundaries.py).
"""

from __future__ import annotations

import difflib
import fnmatch
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")
_UNSET: Any = object()


class UnknownNameError(KeyError):
    """A name that is not registered (a model, a dataset, a metric, ...)."""

    def __str__(self) -> str:  # KeyError quotes its message; a user wants it plain
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """A name registered a second time for something else."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest spelling of `name` among `choices`, or None if nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' — appended to error messages."""
    match = closest(name, choices)
    return f" (did you mean '{match}'?)" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str], hint: str | None = None) -> str:
    """The one-line message for a `name` not among `choices`: "unknown <kind> '<name>' (did you mean 'x'?); <hint>".

    `hint` (what to do instead) defaults to listing the choices.
    """
    choices = sorted(choices)
    if hint is None:
        hint = f"known {kind}s: {', '.join(choices) or 'none'}"
    return f"unknown {kind} '{name}'{did_you_mean(name, choices)}; {hint}"


def _qualname(item: object) -> str | None:
    name = getattr(item, "__qualname__", None)
    return name if isinstance(name, str) else None


class Registry(Generic[T]):
    """Names -> things of one `kind` ("model", "metric", ...), listed in sorted order.

    `get` of an unknown name raises `error` (an `UnknownNameError` unless given) with the `unknown_name` message;
    `hint` replaces its list of known names. Registering a name again is refused unless `same(old, new)` (default
    `==`) says it is the same thing, e.g. a module imported twice; the newer object then replaces the older.
    `describe(item)` names what holds a name in that error (default: a class's or function's qualified name).
    """

    def __init__(self, kind: str, *, error: Callable[[str], Exception] = UnknownNameError, hint: str | None = None,
                 same: Callable[[T, T], bool] = operator.eq,
                 describe: Callable[[T], str | None] = _qualname) -> None:
        self.kind, self.error, self.hint, self.same, self.describe = kind, error, hint, same, describe
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, item: T) -> T: ...

    def register(self, name: str, item: T = _UNSET) -> T | Callable[[T], T]:
        """Register `item` as `name` and return it; without `item`, a decorator that does so."""
        if item is _UNSET:
            return lambda decorated: self.register(name, decorated)
        existing = self._entries.get(name, _UNSET)
        if existing is not _UNSET and not self.same(existing, item):
            owner = self.describe(existing)
            holder = f"by {owner}" if owner else "to something else"
            raise DuplicateNameError(f"{self.kind} '{name}' is already registered {holder}; give this one another name")
        self._entries[name] = item
        return item

    def get(self, name: str) -> T:
        """The thing registered as `name`; an unknown name is a one-line error with the closest spelling."""
        if name not in self._entries:
            raise self.error(unknown_name(self.kind, name, self._entries, self.hint))
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        return sorted(name for name in self._entries if fnmatch.fnmatch(name, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} names)"
