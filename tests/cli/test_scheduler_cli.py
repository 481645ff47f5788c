"""`apflow scheduler list|status|trigger|stop` and `apflow tasks execute|cancel` in-process, on
SQLite and PostgreSQL: listings and their filters, the live-scheduler check behind `trigger`,
running a tree in the CLI's own process, and every refusal as one line with the right code.
(The daemon itself, with real processes, is in test_scheduler_daemon.py.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_support import Cli, assert_one_error_line
from scheduler_support import add_instance, forget_instances, set_task_status, task_row

REFUSED, USAGE = 1, 2


@pytest.fixture
def scli(cli: Cli) -> Iterator[Cli]:
    """The `cli` fixture with no scheduler instance rows (the PostgreSQL database is shared by
    the session's tests)."""
    if cli.url.startswith("postgresql"):
        forget_instances(cli.url)
    yield cli
    if cli.url.startswith("postgresql"):
        forget_instances(cli.url)


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    return Cli(f"sqlite+aiosqlite:///{tmp_path / 'apflow.db'}", tmp_path)


def ids(listing: dict[str, Any]) -> list[str]:
    return [item["id"] for item in listing["items"]]


# ---------------------------------------------------------------------- list


def test_list_shows_scheduled_tasks_with_the_guides_filters(scli: Cli) -> None:
    cli = scli
    hourly = cli.create(
        *("--name", "Hourly", "--executor", "echo_executor", "--inputs", '{"n": 1}'),
        *("--schedule-type", "interval", "--schedule-expression", "3600", "--schedule-enabled"),
    )["id"]
    later = cli.create(
        *("--name", "Far away", "--user-id", "alice", "--schedule-type", "once"),
        *("--schedule-expression", "2099-01-01T00:00:00Z", "--schedule-enabled"),
    )["id"]
    off = cli.create(
        "--name", "Weekly off", "--schedule-type", "weekly", "--schedule-expression", "1 09:00"
    )["id"]
    plain = cli.create("--name", "Plain")["id"]

    # Enabled schedules only, soonest next run first; --all adds the disabled ones.
    listing = cli.json("scheduler", "list")
    assert ids(listing) == [hourly, later] and listing["total"] == 2
    assert ids(cli.json("scheduler", "list", "--all")) == [hourly, later, off]
    assert ids(cli.json("scheduler", "list", "--type", "once")) == [later]
    assert ids(cli.json("scheduler", "list", "--type", "weekly")) == []
    assert ids(cli.json("scheduler", "list", "--type", "weekly", "--all")) == [off]
    assert ids(cli.json("scheduler", "list", "--user-id", "alice")) == [later]
    assert ids(cli.json("scheduler", "list", "--status", "completed")) == []

    cli.ok("tasks", "execute", hourly)
    assert ids(cli.json("scheduler", "list", "--status", "completed")) == [hourly]
    assert ids(cli.json("scheduler", "list", "--status", "pending")) == [later]
    assert ids(cli.json("scheduler", "list", "--status", "pending", "--all")) == [later, off]

    table = cli.ok("scheduler", "list")
    assert hourly in table and later in table and "interval 3600 UTC" in table
    assert off not in table and plain not in table
    assert cli.ok("scheduler", "list", "--type", "cron") == "No scheduled tasks found.\n"


# ---------------------------------------------------------------------- trigger and status


def runs_of(cli: Cli, task_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cli.json("tasks", "runs", task_id)["items"]
    return items


def test_trigger_runs_here_when_no_live_scheduler_takes_the_task(scli: Cli) -> None:
    cli = scli
    task_id = cli.create("--name", "Report", "--user-id", "bob", "--executor", "echo_executor")[
        "id"
    ]
    trigger = ("scheduler", "trigger", task_id)
    result = cli(*trigger)
    assert result.exit_code == 0, result.stderr
    assert "running it in this process" in result.stderr
    assert "completed" in result.stdout
    assert [(run["trigger"], run["status"]) for run in runs_of(cli, task_id)] == [
        ("manual", "completed")
    ]

    # Rows of schedulers that stopped or stopped beating are not live.
    now = datetime.now(UTC)
    add_instance(cli.url, id="silent", heartbeat_at=now - timedelta(minutes=2))
    add_instance(cli.url, id="stopped", heartbeat_at=now, state="stopped")
    result = cli(*trigger, "--wait", "-f", "json")
    assert result.exit_code == 0 and "running it in this process" in result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    assert len(runs_of(cli, task_id)) == 2

    # Live ones that would not claim it (paused, or running only another user's tasks): here.
    add_instance(cli.url, id="paused", heartbeat_at=now, state="paused")
    add_instance(cli.url, id="alice-only", heartbeat_at=now, user_filter="alice")
    assert "running it in this process" in cli(*trigger).stderr
    assert len(runs_of(cli, task_id)) == 3
    assert task_row(cli.url, task_id).trigger_requested_at is None

    # A run made here that fails exits 1 with one error line.
    # (the private-address guard refuses the URL)
    inputs = '{"url": "http://127.0.0.1:1/", "method": "GET"}'
    failing = cli.create("--name", "Broken", "--executor", "rest_executor", "--inputs", inputs)
    result = cli("scheduler", "trigger", failing["id"])
    assert result.exit_code == REFUSED
    notice, error = result.stderr.splitlines()
    assert "running it in this process" in notice
    assert error.startswith("Error: run ") and f"of task {failing['id']} ended failed" in error

    status = cli.json("scheduler", "status")
    assert status["daemon"]["state"] == "not_running" and status["daemon"]["pid"] is None
    assert sorted(i["id"] for i in status["instances"]) == ["alice-only", "paused"]
    table = cli.ok("scheduler", "status")
    assert "Background scheduler: not running" in table
    assert "Live scheduler instances in the database: 2" in table and "alice-only" in table

    # One that takes bob's tasks: the request is recorded for it to claim.
    add_instance(cli.url, id="bob-only", heartbeat_at=now, user_filter="bob")
    requested = cli.json(*trigger)
    assert requested == {
        "task_id": task_id,
        "requested": True,
        "task_status": "completed",  # its last run (made here, above)
        "schedulers": ["bob-only"],
    }
    assert task_row(cli.url, task_id).trigger_requested_at is not None
    assert "Requested a run of task" in cli.ok(*trigger)

    # Nobody really claims it here: --wait gives up after --timeout, exit 1.
    result = cli(*trigger, "--wait", "--timeout", "0.5")
    assert result.exit_code == REFUSED and result.stdout == ""
    assert_one_error_line(result.stderr, "no scheduler started task", "within 0.5 s")


# ---------------------------------------------------------------------- execute and cancel


def write_tree(tmp_path: Path, tree: list[dict[str, Any]]) -> str:
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(tree))
    return str(path)


def test_execute_runs_a_tree_in_this_process(scli: Cli, tmp_path: Path) -> None:
    cli = scli
    echo = {"executor_id": "echo_executor"}
    tree = [
        {"name": "Pipeline", "id": "pipe"},
        {"name": "Fetch", "parent_id": "Pipeline", "params": echo, "inputs": {"n": 1}},
        {"name": "Store", "parent_id": "Pipeline", "params": echo, "inputs": {"n": 2}},
    ]
    created = cli.json("tasks", "create", "--file", write_tree(tmp_path, tree))
    fetch, store = created["items"][1]["id"], created["items"][2]["id"]

    outcome = cli.json("tasks", "execute", "pipe")
    assert outcome["task_id"] == "pipe" and outcome["trigger"] == "manual"
    assert outcome["status"] == "completed" and outcome["error"] is None
    assert outcome["result"] == {fetch: {"n": 1}, store: {"n": 2}}
    assert outcome["tasks"][0]["id"] == "pipe"  # the tree, depth first from the task run
    assert {t["name"]: t["status"] for t in outcome["tasks"]} == {
        "Pipeline": "completed",
        "Fetch": "completed",
        "Store": "completed",
    }
    assert {t["name"]: t["result"] for t in outcome["tasks"][1:]} == {
        "Fetch": {"n": 1},
        "Store": {"n": 2},
    }
    history = cli.json("tasks", "runs", "pipe")
    assert ids(history) == [outcome["id"]] and history["items"][0]["status"] == "completed"
    assert cli.json("tasks", "get", "pipe")["run_count"] == 1

    table = cli.ok("tasks", "execute", "pipe")
    assert table.startswith("Run ") and "of task pipe (Pipeline): completed\n" in table
    assert f"Fetch  {fetch}  [completed]" in table and f"Store  {store}  [completed]" in table

    # A subtree runs on its own.
    alone = cli.json("tasks", "execute", fetch)
    assert alone["status"] == "completed" and [t["id"] for t in alone["tasks"]] == [fetch]


def test_execute_shows_progress_on_a_terminal_only(scli: Cli, tmp_path: Path) -> None:
    """A long run is not silent on a terminal (FORCE_COLOR makes rich treat stderr as one):
    a status line with the time so far and the tasks finished. Redirected, stderr stays
    empty and stdout holds the outcome alone."""
    scli.env["APFLOW_PLUGINS"] = "support"  # the test executors (tests/support.py)
    sleep = {"executor_id": "test_sleep"}
    tree = [
        {"name": "Nightly", "id": "nightly"},
        {"name": "Nap", "parent_id": "Nightly", "params": sleep, "inputs": {"seconds": 2.5}},
    ]
    scli.json("tasks", "create", "--file", write_tree(tmp_path, tree))
    shown = scli("tasks", "execute", "nightly", FORCE_COLOR="1")
    assert shown.exit_code == 0, shown.stderr
    assert "Running nightly (Nightly)" in shown.stderr
    assert "of 2 tasks finished" in shown.stderr
    quiet = scli("tasks", "execute", "nightly", "-f", "json")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["status"] == "completed"


def test_execute_of_a_failing_tree_exits_1_after_the_outcome(scli: Cli, tmp_path: Path) -> None:
    cli = scli
    tree = [
        {"name": "Broken", "id": "broken"},
        {"name": "Good", "parent_id": "Broken", "params": {"executor_id": "echo_executor"}},
        {"name": "Bad", "parent_id": "Broken", "params": {"executor_id": "no_such_executor"}},
    ]
    # Written where the executor was known (APFLOW_ALLOW_UNKNOWN_EXECUTORS): missing at run time.
    created = cli(
        "tasks", "create", "--file", write_tree(tmp_path, tree), APFLOW_ALLOW_UNKNOWN_EXECUTORS="1"
    )
    assert created.exit_code == 0, created.stderr
    result = cli("tasks", "execute", "broken", "-f", "json")
    assert result.exit_code == REFUSED
    assert_one_error_line(result.stderr, "of task broken ended failed", "no_such_executor")
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "failed" and "no_such_executor" in outcome["error"]
    statuses = {t["name"]: t["status"] for t in outcome["tasks"]}
    assert statuses == {"Broken": "failed", "Good": "completed", "Bad": "failed"}

    result = cli("tasks", "execute", "broken")
    assert result.exit_code == REFUSED
    assert "of task broken (Broken): failed" in result.stdout
    assert_one_error_line(result.stderr, "ended failed")
    assert [r["status"] for r in cli.json("tasks", "runs", "broken")["items"]] == [
        "failed",
        "failed",
    ]


def test_cancel_of_an_idle_task_cancels_nothing(scli: Cli) -> None:
    cli = scli
    task_id = cli.create("--name", "Idle")["id"]
    before = cli.snapshot()
    out = cli.ok("tasks", "cancel", task_id)
    assert out == f"Task {task_id} (Idle) is not running (status pending); nothing to cancel.\n"
    assert cli.json("tasks", "cancel", task_id) == {
        "task_id": task_id,
        "cancelled": False,
        "run_id": None,
    }
    assert cli.snapshot() == before


# ---------------------------------------------------------------------- refusals

BAD_IDS = [
    ("tasks", "execute", "no-such-task"),
    ("tasks", "execute", "no-such-task", "-f", "json"),
    ("tasks", "cancel", "no-such-task"),
    ("scheduler", "trigger", "no-such-task"),
    ("scheduler", "trigger", "no-such-task", "--wait"),
]


@pytest.mark.parametrize("args", BAD_IDS, ids=" ".join)
def test_unknown_tasks_are_refused(scli: Cli, args: tuple[str, ...]) -> None:
    scli.create("--name", "Other")
    scli.fails(REFUSED, *args, names=("task 'no-such-task' not found",))


BAD_OPTIONS = {
    "poll interval zero": ("scheduler start --poll-interval 0", "--poll-interval"),
    "poll interval text": ("scheduler start --poll-interval soon", "--poll-interval"),
    "max concurrent zero": ("scheduler start --max-concurrent 0", "--max-concurrent"),
    "negative timeout": ("scheduler start --timeout -1", "--timeout"),
    "negative retries": ("scheduler start --max-retries -1", "--max-retries"),
    "negative grace": ("scheduler start --shutdown-grace -5", "--shutdown-grace"),
    "unknown start option": ("scheduler start --forever", "--forever"),
    "negative stop timeout": ("scheduler stop --timeout -1", "--timeout"),
    "status format": ("scheduler status -f xml", "--format"),
    "list type": ("scheduler list --type hourly", "--type"),
    "list status": ("scheduler list --status sleeping", "--status"),
    "trigger without id": ("scheduler trigger", "TASK_ID"),
    "trigger zero timeout": ("scheduler trigger x --wait --timeout 0", "--timeout"),
    "trigger timeout without wait": ("scheduler trigger x --timeout 5", "--timeout"),
    "execute zero timeout": ("tasks execute x --timeout 0", "--timeout"),
    "execute without id": ("tasks execute", "TASK_ID"),
    "cancel format": ("tasks cancel x -f yaml", "--format"),
    "unknown scheduler command": ("scheduler reboot", "reboot"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_option_values_are_usage_errors(sqlite_cli: Cli, case: str) -> None:
    args, name = BAD_OPTIONS[case]
    sqlite_cli.create("--name", "Other")
    sqlite_cli.fails(USAGE, *args.split(), names=(name,))


def test_stop_and_status_without_a_daemon(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    result = cli("scheduler", "stop")
    assert result.exit_code == REFUSED and result.stdout == ""
    assert_one_error_line(result.stderr, "no background scheduler is running", "scheduler.pid")
    status = cli.json("scheduler", "status")
    assert status["daemon"] == {
        "state": "not_running",
        "pid": None,
        "pid_file": str(cli.home / "scheduler.pid"),
        "log_file": str(cli.home / "scheduler.log"),
        "instance_id": None,
    }
    assert status["instances"] == []
    assert cli.ok("scheduler", "status") == (
        "Background scheduler: not running\nNo live scheduler instance in the database.\n"
    )


def dead_pid() -> int:
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


def test_stale_pid_files_are_reported_and_removed_without_signalling(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    pid_file = cli.home / "scheduler.pid"

    # A dead pid.
    gone = dead_pid()
    pid_file.write_text(f"{gone}\n")
    status = cli.json("scheduler", "status")
    assert status["daemon"]["state"] == "stale" and status["daemon"]["pid"] == gone
    assert f"names pid {gone}, which is not running" in cli.ok("scheduler", "status")
    out = cli.ok("scheduler", "stop")
    assert "removed the stale PID file" in out and f"pid {gone} is not running" in out
    assert not pid_file.exists()

    # A live process that is not apflow (the pid was reused): stale, and left alone.
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(f"{bystander.pid}\n")
        assert cli.json("scheduler", "status")["daemon"]["state"] == "stale"
        assert "removed the stale PID file" in cli.ok("scheduler", "stop")
        assert not pid_file.exists()
        assert bystander.poll() is None, "stop signalled a process that is not the scheduler"
    finally:
        bystander.kill()
        bystander.wait()

    # Garbage.
    pid_file.write_text("not a pid\n")
    assert cli.json("scheduler", "status")["daemon"] == {
        **status["daemon"],
        "state": "stale",
        "pid": None,
    }
    assert "it held no pid" in cli.ok("scheduler", "stop")
    assert not pid_file.exists()


def test_the_guides_running_is_in_progress_and_help_shows_none(cli: Cli) -> None:
    task_id = cli.create("--name", "busy", "--executor", "echo_executor")["id"]
    cli.ok(
        "tasks",
        "update",
        task_id,
        "--schedule-type",
        "interval",
        "--schedule-expression",
        "60",
        "--schedule-enabled",
    )
    set_task_status(cli.url, task_id, "in_progress")
    running = cli.json("scheduler", "list", "--status", "running")
    assert [item["id"] for item in running["items"]] == [task_id]
    assert running == cli.json("scheduler", "list", "--status", "in_progress")
    assert cli.json("tasks", "list", "--status", "running")["total"] == 1

    help_text = cli.ok("tasks", "update", "--help")
    assert "[once|interval|cron|daily|weekly|monthly|none]" in help_text
    assert "--max-runs INTEGER|none" in help_text


def test_pause_resume_and_skip_from_the_cli(cli: Cli) -> None:
    task_id = cli.create(
        "--name",
        "nightly",
        "--executor",
        "echo_executor",
        "--schedule-type",
        "daily",
        "--schedule-expression",
        "03:00",
        "--schedule-enabled",
    )["id"]
    paused = cli.json(
        "tasks",
        "scheduled",
        "pause",
        task_id,
        "--note",
        "holiday freeze",
        "--until",
        "2099-01-02T00:00:00+00:00",
    )
    assert paused["schedule_paused"] is True
    assert paused["schedule_pause_note"] == "holiday freeze"
    table = cli.ok("tasks", "scheduled", "preview", task_id, "--count", "2")
    assert "Skipped" in table and table.count("paused") == 2
    assert "(paused)" in cli.ok("scheduler", "list")
    resumed = cli.ok("tasks", "scheduled", "resume", task_id)
    assert resumed.startswith(f"Resumed task {task_id} (nightly); next run: ")
    skipped = cli.json("tasks", "scheduled", "skip", task_id, "--count", "3")
    assert skipped["schedule_skip_count"] == 3
    preview = cli.json("tasks", "scheduled", "preview", task_id, "--count", "4")
    assert [entry["reason"] for entry in preview["skipped"]] == ["skipped by the operator"] * 3
    assert [entry["fire_time"] for entry in preview["skipped"]] == preview["fire_times"][:3]

    plain = cli.create("--name", "plain")["id"]
    cli.fails(REFUSED, "tasks", "scheduled", "pause", plain, names=("task_id", "no schedule"))
    cli.fails(
        REFUSED,
        "tasks",
        "scheduled",
        "pause",
        task_id,
        "--until",
        "2001-01-01T00:00:00Z",
        names=("until", "in the future"),
    )
    cli.fails(2, "tasks", "scheduled", "skip", task_id, "--count", "0", names=("--count",))


def test_backfill_from_the_cli(cli: Cli) -> None:
    task_id = cli.create(
        "--name", "minutely", "--executor", "echo_executor", "--schedule-type", "cron",
        "--schedule-expression", "* * * * *",
    )["id"]  # fmt: skip
    period = ("--start", "2025-01-01T00:00:00Z", "--end", "2025-01-01T00:04:00Z")
    dry = cli.ok("tasks", "scheduled", "backfill", task_id, *period, "--dry-run")
    assert dry == f"Would queue 4 of 4 occurrence(s) of task {task_id} (0 already done).\n"
    made = cli.json("tasks", "scheduled", "backfill", task_id, *period, "--max-concurrent", "2")
    assert made["queued"] == 4 and len(made["occurrences"]) == 4
    # No scheduler runs here: the queue is in the history, and can be cancelled.
    runs = cli.json("tasks", "runs", task_id)["items"]
    assert {(run["status"], run["trigger"]) for run in runs} == {("queued", "backfill")}
    cancelled = cli.json("tasks", "scheduled", "backfill", task_id, "--cancel", made["backfill_id"])
    assert cancelled["status"] == "cancelled"
    statuses = {run["status"] for run in cli.json("tasks", "runs", task_id)["items"]}
    assert statuses == {"cancelled"}

    cli.fails(REFUSED, "tasks", "scheduled", "backfill", task_id, "--start",
              "2025-01-01T00:05:00Z", "--end", "2025-01-01T00:00:00Z", names=("end",))  # fmt: skip
    cli.fails(USAGE, "tasks", "scheduled", "backfill", task_id, names=("--start",))
