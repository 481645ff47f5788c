"""`apflow plugins`: what this installation loads at start-up — the plugin modules, every
executor by name with where it comes from, and the webhook verify hook."""

from __future__ import annotations

from typing import Any

import click

from apflow_server.config import Settings
from apflow_server.execution.builtins import BUILTINS
from apflow_server.execution.registry import registry
from apflow_server.plugins import load_plugins
from apflow_server.webhooks.hooks import current_hook

from . import output
from .options import format_option


def _origin(value: Any) -> str:
    module = getattr(value, "__module__", None) or type(value).__module__
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}:{name}"


@click.command("plugins")
@format_option
def plugins(output_format: str) -> None:
    """The plugins, executors and webhook verify hook this installation loads.

    Plugins are the modules named in APFLOW_PLUGINS and the apflow_server.plugins entry points
    of installed packages; each executor is shown with the callable that provides it."""
    loaded = load_plugins(Settings.from_env())
    executors = [
        {
            "name": name,
            "origin": "built-in" if registry.get(name) is BUILTINS.get(name) else "plugin",
            "callable": _origin(registry.get(name)),
        }
        for name in registry.names()
    ]
    hook = current_hook()
    described = {
        "plugins": [
            {"name": plugin.name, "target": plugin.target, "source": plugin.source}
            for plugin in loaded
        ],
        "executors": executors,
        "verify_hook": _origin(hook) if hook is not None else None,
    }
    if output_format == "json":
        output.print_json(described)
        return
    output.line(f"Plugins: {len(loaded)}")
    for plugin in loaded:
        output.line(f"  {plugin.name}  ({plugin.source})")
    output.line(f"Executors: {len(executors)}")
    for executor in executors:
        output.line(f"  {executor['name']}  {executor['origin']}  {executor['callable']}")
    output.line(f"Webhook verify hook: {described['verify_hook'] or 'none'}")
