"""Models and datasets defined outside the package: importing their modules runs their `@register_model` /
`@register_dataset` (`zoo --plugin my_models ...`, or `ZOO_PLUGINS=my_models,path/to/more.py`)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from zoo.config import ConfigError

PLUGINS_ENV = "ZOO_PLUGINS"


def import_plugins(plugins: Sequence[str]) -> list[str]:
    """Import modules (dotted names, or paths to .py files) so their `@register_model` / `@register_dataset` run.

    Returns the module names imported; a plugin that cannot be imported is a one-line `ConfigError`.
    """
    names = []
    for plugin in (p.strip() for p in plugins):
        if not plugin:
            continue
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).expanduser().resolve()
                name = f"zoo_plugin_{path.stem}"
                if name not in sys.modules:
                    spec = importlib.util.spec_from_file_location(name, path)
                    if spec is None or spec.loader is None or not path.is_file():
                        raise FileNotFoundError(f"no such file: {path}")
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    try:
                        spec.loader.exec_module(module)
                    except BaseException:
                        del sys.modules[name]
                        raise
            else:
                name = importlib.import_module(plugin).__name__
        except Exception as exc:
            raise ConfigError(
                f"cannot import plugin '{plugin}' ({type(exc).__name__}: {exc}); pass an importable module name "
                f"or a .py path in --plugin / {PLUGINS_ENV}"
            ) from exc
        names.append(name)
    return names
