"""YAML configs merged through omegaconf and checked against dataclass schemas.

An unknown or mistyped key is an error naming the key and its closest valid spelling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from hvz_registry import Registry, UnknownNameError, did_you_mean, unknown_name

T = TypeVar("T")

# The folder above the package: the checkout in an editable install, site-packages in a wheel. Only for recording
# the git commit the code runs from; configs are package data (`config_dir()`), never looked up here.
REPO_ROOT = Path(__file__).resolve().parents[1]
# Package data beside this file, so an editable install and a wheel find the same defaults.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config a user wrote that cannot be used as written."""


def config_dir() -> Path:
    """The package's `zoo/configs/` folder: defaults of models, datasets, trainers and autoencoders, and presets."""
    return CONFIG_DIR


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
        raise ConfigError(unknown_name(kind, str(name_or_path), known(),
                                       f"{kind}s live in {folder}, or pass a path to a .yaml file"))
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

    @property
    def builtin(self) -> bool:
        """Defined inside this package, so its default YAML ships with it (a plugin's defaults are its dataclass)."""
        return self.cls.__module__.partition(".")[0] == __name__.partition(".")[0]


def _same_class(old: RegistryEntry, new: RegistryEntry) -> bool:
    # A module imported twice (a plugin given twice, a test re-imported) defines a new class object of the same name.
    return old.cls.__qualname__ == new.cls.__qualname__


class ConfigRegistry(Registry[RegistryEntry]):
    """Names -> (class, config dataclass, `zoo/configs/<yaml_folder>/<name>.yaml`): the door to models and datasets.

    `kind` names the things in messages; `base_cls` / `base_config` are what registered classes must extend;
    `error` is the `UnknownNameError` subclass raised for an unknown name, `hint` the advice appended to it.
    """

    def __init__(self, kind: str, yaml_folder: str, base_cls: type, base_config: type,
                 error: type[UnknownNameError], hint: str) -> None:
        super().__init__(kind, error=error, hint=hint, same=_same_class, describe=lambda entry: entry.cls.__qualname__)
        self.yaml_folder, self.base_cls, self.base_config = yaml_folder, base_cls, base_config

    def register_class(self, name: str, cls: type, config_cls: type) -> type:
        """Register `cls`, configured by dataclass `config_cls`, as `name`; both must extend this registry's bases."""
        if not issubclass(cls, self.base_cls):
            raise TypeError(f"{cls.__name__} must subclass {self.base_cls.__module__}.{self.base_cls.__name__} "
                            f"to be registered as a {self.kind}")
        if not issubclass(config_cls, self.base_config):
            raise TypeError(f"config {config_cls.__name__} of {self.kind} {name} must extend "
                            f"{self.base_config.__module__}.{self.base_config.__name__}")
        self.register(name, RegistryEntry(name, cls, config_cls, self.yaml_folder))
        return cls

    def presets_dir(self) -> Path:
        return config_dir() / self.yaml_folder / "presets"

    def list_presets(self) -> list[str]:
        """Names of the presets shipped in `zoo/configs/<yaml_folder>/presets/` (e.g. GPU-size models)."""
        return sorted(path.stem for path in self.presets_dir().glob("*.yaml"))

    def config_yaml(self, name: str, config_path: str | Path | None = None) -> Path | None:
        """The YAML named for a config of `name`: `config_path` (a .yaml path or a preset name), else the default.

        None only for a plugin without a default YAML; a built-in's missing default is an error, never a silent
        fallback to its dataclass defaults.
        """
        if config_path is not None:
            self.get(name)
            if Path(config_path).suffix in (".yaml", ".yml"):
                return Path(config_path)  # load_yaml names a missing file
            return named_yaml(config_path, self.presets_dir(), "preset", self.list_presets)
        return self.default_yaml(name)

    def default_yaml(self, name: str) -> Path | None:
        """`zoo/configs/<yaml_folder>/<name>.yaml`; None for a plugin without one, an error for a built-in."""
        entry = self.get(name)
        if entry.default_yaml.is_file():
            return entry.default_yaml
        if entry.builtin:
            raise ConfigError(f"built-in {self.kind} '{name}' has no default config: {entry.default_yaml} is missing "
                              "(add it, or reinstall the package if it was removed)")
        return None

    def config_yamls(self, name: str, config_path: str | Path | None = None) -> list[Path]:
        """The YAMLs a config of `name` merges, in order: its default, then `config_path` (a preset or a path),
        which holds only what differs from the default (mappings merge key by key, lists are replaced)."""
        default = self.default_yaml(name)
        named = self.config_yaml(name, config_path) if config_path is not None else None
        return [path for path in (default, named) if path is not None]

    def config(self, name: str, overrides: Mapping[str, Any] | Sequence[str] | DictConfig | None = None,
               config_path: str | Path | None = None) -> Any:
        """The validated config of `name`: dataclass defaults < default YAML < `config_path` (a preset name or a
        YAML path, holding what differs from the default) < overrides."""
        yamls = [load_yaml(path) for path in self.config_yamls(name, config_path)]
        entry = self.get(name)
        return build_config(entry.config_cls, *yamls, as_overrides(overrides), where=f"config of {self.kind} '{name}'")
