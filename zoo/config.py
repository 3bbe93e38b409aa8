"""YAML configs merged through omegaconf and checked against dataclass schemas.

An unknown or mistyped key is an error naming the key and its closest valid spelling.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A config a user wrote that cannot be used as written."""


def config_dir() -> Path:
    """Where `configs/` lives: `$ZOO_CONFIG_DIR`, else the repository's own folder."""
    return Path(os.environ.get("ZOO_CONFIG_DIR", REPO_ROOT / "configs"))


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest spelling of `name` among `choices`, or None if nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' — appended to error messages."""
    match = closest(name, choices)
    return f" (did you mean '{match}'?)" if match else ""


def _schema_keys(schema: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(schema):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(f.type):
            keys.extend(_schema_keys(f.type, prefix + f.name + "."))
    return keys


def _full_key(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None) or getattr(error, "key", None) or ""
    return str(key)


def load_yaml(path: str | Path) -> DictConfig:
    """Read a YAML file, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml's errors are many classes; all mean the same to a user
        raise ConfigError(f"cannot parse {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return loaded


def named_yaml(name_or_path: str | Path, folder: Path, kind: str, known: Callable[[], Iterable[str]]) -> Path:
    """A `.yaml` path as given, or `<folder>/<name>.yaml` for a name; an unknown name suggests the closest of
    `known()` (called only then)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{kind} file not found: {path}")
        return path
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"unknown {kind} '{name_or_path}'{did_you_mean(str(name_or_path), known())}; {kind}s live in "
                          f"{folder}, or pass a path to a .yaml file")
    return candidate


def parse_overrides(dotlist: Sequence[str]) -> DictConfig:
    """`["a.b=1", "c=x"]` -> DictConfig; a malformed item is a one-line error."""
    for item in dotlist:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
    for item in dotlist:  # one at a time, so an error names the item
        try:
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"cannot parse override '{item}' ({reason}); values are YAML, e.g. k=[1,2] or k='a b'"
            ) from exc
    return OmegaConf.from_dotlist(list(dotlist))


def build_config(
    schema: type[T],
    *sources: Mapping[str, Any] | DictConfig | None,
    where: str = "config",
) -> T:
    """Merge `sources` (YAML contents, dicts, dotlist configs; later wins) onto `schema`'s defaults.

    Returns a `schema` instance. Unknown keys, wrong types and missing values raise `ConfigError`.
    """
    merged = OmegaConf.structured(schema)
    valid = _schema_keys(schema)
    for source in sources:
        if source is None:
            continue
        try:
            merged = OmegaConf.merge(merged, source)
        except ConfigKeyError as exc:
            key = _full_key(exc)
            raise ConfigError(f"unknown key '{key}' in {where}{did_you_mean(key, valid)}") from exc
        except ValidationError as exc:
            key = _full_key(exc)
            raise ConfigError(f"bad value for '{key}' in {where}: {exc}".splitlines()[0]) from exc
        except OmegaConfBaseException as exc:
            raise ConfigError(f"invalid {where}: {exc}".splitlines()[0]) from exc
    try:
        missing = sorted(OmegaConf.missing_keys(merged))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid {where}: {exc}".splitlines()[0]) from exc
    if missing:
        raise ConfigError(f"missing required value(s) {missing} in {where}; set them in the YAML or as key=value")
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid {where}: {exc}".splitlines()[0]) from exc


class UnknownNameError(KeyError):
    """A name that is not registered (a model, a dataset, ...)."""

    def __str__(self) -> str:  # KeyError quotes its message; a user wants it plain
        return str(self.args[0])


def as_overrides(overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None) -> Mapping[str, Any] | None:
    """Overrides given as a mapping pass through; a `key=value` dotlist is parsed."""
    if overrides is None or isinstance(overrides, (Mapping, DictConfig)):
        return overrides
    return parse_overrides(list(overrides))


@dataclasses.dataclass(frozen=True)
class RegistryEntry:
    """A registered class, its config dataclass, and where its default YAML lives."""

    name: str
    cls: type
    config_cls: type
    yaml_folder: str

    @property
    def default_yaml(self) -> Path:
        return config_dir() / self.yaml_folder / f"{self.name}.yaml"


class ConfigRegistry:
    """Names -> (class, config dataclass, `configs/<yaml_folder>/<name>.yaml`): the door to models and datasets.

    `kind` names the things in messages; `base_cls` / `base_config` are what registered classes must extend;
    `error` is the `UnknownNameError` subclass raised for an unknown name, `hint` the advice appended to it.
    """

    def __init__(self, kind: str, yaml_folder: str, base_cls: type, base_config: type,
                 error: type[UnknownNameError], hint: str) -> None:
        self.kind, self.yaml_folder, self.base_cls, self.base_config = kind, yaml_folder, base_cls, base_config
        self.error, self.hint = error, hint
        self.entries: dict[str, RegistryEntry] = {}

    def register(self, name: str, cls: type, config_cls: type) -> type:
        if not issubclass(cls, self.base_cls):
            raise TypeError(f"{cls.__name__} must subclass {self.base_cls.__module__}.{self.base_cls.__name__} "
                            f"to be registered as a {self.kind}")
        if not issubclass(config_cls, self.base_config):
            raise TypeError(f"config {config_cls.__name__} of {self.kind} {name} must extend "
                            f"{self.base_config.__module__}.{self.base_config.__name__}")
        existing = self.entries.get(name)
        if existing is not None and existing.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.kind} name '{name}' is already registered by {existing.cls.__qualname__}")
        self.entries[name] = RegistryEntry(name, cls, config_cls, self.yaml_folder)
        return cls

    def names(self) -> list[str]:
        return sorted(self.entries)

    def entry(self, name: str) -> RegistryEntry:
        if name not in self.entries:
            raise self.error(f"unknown {self.kind} '{name}'{did_you_mean(name, self.entries)}; {self.hint}")
        return self.entries[name]

    def config(self, name: str, overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None = None,
               config_path: str | Path | None = None) -> Any:
        """The validated config of `name`: dataclass defaults < YAML (its default or `config_path`) < overrides."""
        entry = self.entry(name)
        yaml_path = Path(config_path) if config_path is not None else entry.default_yaml
        yaml = load_yaml(yaml_path) if (config_path is not None or yaml_path.is_file()) else None
        return build_config(entry.config_cls, yaml, as_overrides(overrides), where=f"config of {self.kind} '{name}'")
