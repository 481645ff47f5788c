"""`apflow audit` and `apflow notify` on both databases: CLI changes are recorded as
cli:<os user>; endpoints are created (secret shown once), listed, tested and deleted."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess

import pytest
from cli_support import CLEARED, Cli, apflow_executable
from receiver import Receiver
from standardwebhooks.webhooks import Webhook


def test_cli_changes_are_audited_as_the_os_user(cli: Cli) -> None:
    task = cli.create("--name", "report", "--executor", "echo_executor")
    cli.ok("tasks", "update", task["id"], "--priority", "1")
    cli.ok("tasks", "delete", task["id"])
    entries = cli.json("audit", "--task", task["id"], "-f", "json")["items"]
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


@pytest.mark.slow
def test_notify_worker_delivers_beside_schedulers_that_do_not(cli: Cli) -> None:
    """`apflow notify worker` in its own process: what the CLI queues, it delivers, signed;
    SIGTERM stops it cleanly."""
    private = {"APFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "1"}
    with Receiver() as receiver:
        made = cli("notify", "endpoints", "create", receiver.url, "-f", "json", **private)
        endpoint = json.loads(made.output)
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update({k: v for k, v in cli.env.items() if v is not None}, **private)
        worker = subprocess.Popen(
            [apflow_executable(), "notify", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline().startswith("Delivering notifications")
            cli.ok("notify", "endpoints", "test", endpoint["id"])
            [request] = receiver.wait_for(1)
        finally:
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert Webhook(endpoint["secret"]).verify(request.body, request.headers)["type"] == "ping"
    delivered = cli.json("notify", "deliveries", "-f", "json")["items"]
    assert [d["status"] for d in delivered] == ["delivered"]
