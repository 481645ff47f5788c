"""Plugins: modules imported at start-up, so that the executors and verify hooks they register
(`register_executor`, `register_webhook_verify_hook`) are there before the first request or run,
without wrapping `main()`.

Two ways to name them: APFLOW_PLUGINS (module names, comma-separated) and the entry-point group
`apflow_server.plugins` of installed packages (each entry point is loaded, which imports its
module). A plugin that fails to import stops start-up with one line saying which and why.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from apflow_server.config import ConfigError, Settings

ENTRY_POINT_GROUP = "apflow_server.plugins"


@dataclass(frozen=True)
class Plugin:
    name: str  # the module (APFLOW_PLUGINS) or the entry point's name
    target: str  # what was imported
    source: str  # "APFLOW_PLUGINS" or "entry point (<distribution>)"


_loaded: dict[str, Plugin] = {}


def load_plugins(settings: Settings) -> list[Plugin]:
    """Import every configured plugin once; the plugins loaded so far."""
    for module in settings.plugins:
        if f"env:{module}" in _loaded:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError(
                f"APFLOW_PLUGINS: cannot import {module!r}: {type(exc).__name__}: {exc}"
            ) from None
        _loaded[f"env:{module}"] = Plugin(module, module, "APFLOW_PLUGINS")
    for point in entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry:{point.name}:{point.value}"
        if key in _loaded:
            continue
        try:
            point.load()
        except Exception as exc:
            raise ConfigError(
                f"plugin {point.name!r} ({point.value}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        distribution = point.dist.name if point.dist is not None else "unknown package"
        _loaded[key] = Plugin(point.name, point.value, f"entry point ({distribution})")
    return list(_loaded.values())
