"""`apflow audit` and `apflow notify` on both databases: CLI changes are recorded as
cli:<os user>; endpoints are created (secret shown once), listed, tested and deleted."""

from __future__ import annotations

import getpass
import json

from cli_support import Cli


def test_cli_changes_are_audited_as_the_os_user(cli: Cli) -> None:
    task = cli.create("--name", "report", "--executor", "echo_executor")
    cli.ok("tasks", "update", task["id"], "--priority", "1")
    cli.ok("tasks", "delete", task["id"])
    entries = cli.json("audit", "-f", "json")["items"]
    actor = f"cli:{getpass.getuser()}"
    assert [(e["actor"], e["action"], e["fields"]) for e in reversed(entries)] == [
        (actor, "task.create", ["name", "params"]),
        (actor, "task.update", ["priority"]),
        (actor, "task.delete", []),
    ]
    only = cli.json("audit", "--task", task["id"], "--actor", actor, "-f", "json")
    assert only["total"] == 3
    assert "No changes recorded." in cli.ok("audit", "--actor", "somebody-else")


def test_notify_endpoints_from_the_cli(cli: Cli) -> None:
    private = {"APFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "1"}
    made = cli(
        "notify", "endpoints", "create", "http://127.0.0.1:9/hook", "--event", "run.failed",
        "-f", "json", **private,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    endpoint = json.loads(made.output)
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["run.failed"]
    listed = cli.json("notify", "endpoints", "list", "-f", "json")["items"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    assert "Queued a ping" in cli.ok("notify", "endpoints", "test", endpoint["id"])
    sent = cli.json("notify", "deliveries", "-f", "json")["items"]
    assert [(d["event_type"], d["status"]) for d in sent] == [("ping", "pending")]
    cli.ok("notify", "endpoints", "update", endpoint["id"], "--disable")
    assert cli.json("notify", "deliveries", "-f", "json")["items"][0]["status"] == "cancelled"
    cli.ok("notify", "endpoints", "delete", endpoint["id"])
    assert cli.json("notify", "endpoints", "list", "-f", "json")["items"] == []


def test_notify_bad_input_is_one_line(cli: Cli) -> None:
    cli.ok("notify", "endpoints", "list")  # the database exists: nothing is written below
    refused = cli.fails(1, "notify", "endpoints", "create", "http://127.0.0.1:9/hook")
    assert "127.0.0.1 is a loopback address" in refused
    assert "APFLOW_NOTIFY_ALLOW_PRIVATE_URLS" in refused
    cli.fails(2, "notify", "endpoints", "create", "https://1.1.1.1/", "--event", "run.nope")
    cli.fails(1, "notify", "endpoints", "test", "ep_missing")
    cli.fails(2, "notify", "endpoints", "update", "ep_missing")
