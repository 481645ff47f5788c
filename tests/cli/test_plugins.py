"""Plugins load into the real `apflow` executable without wrapping main(): through
APFLOW_PLUGINS and through the `apflow_server.plugins` entry-point group; a broken one stops the
command with one line; tasks naming an executor nobody provides are refused."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from cli_support import Process, assert_one_error_line

PLUGIN = textwrap.dedent(
    """
    from apflow_server import register_executor, register_webhook_verify_hook
    from apflow_server.core.types import WebhookVerifyResult

    @register_executor("greet_executor")
    async def greet(inputs, context):
        return {"greeting": f"hello {inputs.get('who', 'world')}", "task": context.task_id}

    @register_webhook_verify_hook
    async def verify(context):
        return WebhookVerifyResult(valid=False, error="not from our cron")
    """
)


def with_path(process: Process, folder: Path, **variables: str) -> Process:
    return Process({**process.env, "PYTHONPATH": str(folder), **variables})


def test_apflow_plugins_loads_a_module_named_in_the_environment(
    process: Process, tmp_path: Path
) -> None:
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    plugged = with_path(process, tmp_path, APFLOW_PLUGINS="my_plugin")
    listed = plugged.json("plugins")
    assert listed["plugins"] == [
        {"name": "my_plugin", "target": "my_plugin", "source": "APFLOW_PLUGINS"}
    ]
    executors = {row["name"]: row for row in listed["executors"]}
    assert executors["greet_executor"] == {
        "name": "greet_executor",
        "origin": "plugin",
        "callable": "my_plugin:greet",
    }
    assert executors["echo_executor"]["origin"] == "built-in"
    assert listed["verify_hook"] == "my_plugin:verify"

    # The CLI's own runs see it, and tasks may name it.
    task = plugged.json(
        "tasks",
        "create",
        "--name",
        "hi",
        "--executor",
        "greet_executor",
        "--inputs",
        '{"who": "ops"}',
    )
    outcome = plugged.json("tasks", "execute", task["id"])
    assert outcome["status"] == "completed"
    assert outcome["result"]["greeting"] == "hello ops"

    # Without the plugin the same executor is unknown: refused, nothing written.
    before = plugged.json("tasks", "list")["total"]
    refused = process("tasks", "create", "--name", "x", "--executor", "greet_executor")
    assert refused.returncode == 1
    assert_one_error_line(refused.stderr, "params.executor_id", "greet_executor")
    assert plugged.json("tasks", "list")["total"] == before


def test_an_entry_point_plugin_is_loaded(process: Process, tmp_path: Path) -> None:
    (tmp_path / "packaged_plugin.py").write_text(PLUGIN)
    info = tmp_path / "packaged_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: packaged-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[apflow_server.plugins]\ngreetings = packaged_plugin\n")
    listed = with_path(process, tmp_path).json("plugins")
    assert {
        "name": "greetings",
        "target": "packaged_plugin",
        "source": "entry point (packaged-plugin)",
    } in listed["plugins"]
    assert "greet_executor" in {row["name"] for row in listed["executors"]}


def test_a_plugin_that_fails_to_import_stops_start_up_with_one_line(
    process: Process, tmp_path: Path
) -> None:
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('misconfigured')\n")
    broken = with_path(process, tmp_path, APFLOW_PLUGINS="broken_plugin")
    for command in (("plugins",), ("tasks", "list"), ("serve", "--port", "0")):
        result = broken(*command)
        assert result.returncode == 1, (command, result.stderr)
        assert_one_error_line(
            result.stderr, "APFLOW_PLUGINS", "broken_plugin", "RuntimeError: misconfigured"
        )
    missing = with_path(process, tmp_path, APFLOW_PLUGINS="not_there")("plugins")
    assert missing.returncode == 1
    assert_one_error_line(missing.stderr, "No module named 'not_there'")


def test_unknown_executors_are_accepted_when_allowed(process: Process) -> None:
    allowed = Process({**process.env, "APFLOW_ALLOW_UNKNOWN_EXECUTORS": "1"})
    task = allowed.json("tasks", "create", "--name", "x", "--executor", "elsewhere_executor")
    assert task["params"]["executor_id"] == "elsewhere_executor"
    assert json.loads(allowed.ok("tasks", "get", task["id"], "-f", "json"))["id"] == task["id"]
