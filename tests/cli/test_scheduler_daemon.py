"""The scheduler as real processes of the installed `apflow`: the background daemon's whole life
(start, status, refusing a second one, running what comes due, trigger --wait, cancel, stop) on
the embedded SQLite default and on PostgreSQL, and the foreground scheduler's graceful stop on
SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import Cli, Process, assert_one_error_line
from scheduler_support import instance_rows, kill_if_alive, runs_of, task_row, wait_for

from apflow_server.cli.daemon import process_alive
from apflow_server.storage.database import Database

IDENTITY = re.compile(
    r"scheduler (?P<id>\S+) started: host=(?P<host>\S+) pid=(?P<pid>\d+) "
    r"mode=(?P<mode>\S+) user=(?P<user>\S+)"
)


@pytest.fixture
def apflow(process: Process) -> Iterator[Process]:
    """Real `apflow` processes in a temporary APFLOW_HOME; whatever daemon a test leaves
    behind is killed."""
    process.env["APFLOW_LEASE_SECONDS"] = "3"  # a cancelled run is noticed within a second
    process.env["APFLOW_ALLOW_COMMAND_EXECUTOR"] = "1"
    yield process
    pid_file = Path(process.env["APFLOW_HOME"]) / "scheduler.pid"
    if pid_file.exists() and pid_file.read_text().strip().isdigit():
        kill_if_alive(int(pid_file.read_text()))


def database_url(apflow: Process) -> str:
    return apflow.env.get(
        "APFLOW_DATABASE_URL", f"sqlite+aiosqlite:///{apflow.env['APFLOW_HOME']}/apflow.db"
    )


def start_daemon(apflow: Process) -> int:
    """`scheduler start --background`: returns promptly, once the daemon runs."""
    began = time.monotonic()
    out = apflow.ok(
        "scheduler", "start", "--background", "--poll-interval", "1", "--shutdown-grace", "5"
    )
    assert time.monotonic() - began < 10
    match = re.search(r"Scheduler started in the background \(pid (\d+)\)\.", out)
    assert match, out
    pid = int(match.group(1))
    home = Path(apflow.env["APFLOW_HOME"])
    assert f"log file: {home / 'scheduler.log'}" in out
    assert (home / "scheduler.pid").read_text().strip() == str(pid)
    # Detached: alive after its parent exited, in a session of its own, not our child.
    assert process_alive(pid)
    assert os.getsid(pid) == pid and os.getpgid(pid) != os.getpgrp()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return pid


def in_process(apflow: Process) -> Cli:
    """The CLI in this process on the daemon's database and APFLOW_HOME: the commands that
    are not about processes run here, which is much faster than a new interpreter each."""
    return Cli(database_url(apflow), Path(apflow.env["APFLOW_HOME"]))


def daemon_lifecycle(apflow: Process, *, sqlite: bool) -> None:
    """Start, watch, use and stop the daemon."""
    url = database_url(apflow)
    home = Path(apflow.env["APFLOW_HOME"])
    cli = in_process(apflow)
    pid = start_daemon(apflow)

    # A task due in two seconds, created through the CLI, is run by the daemon.
    due = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    once = cli.create(
        *("--name", "Soon", "--executor", "echo_executor"),
        *("--inputs", '{"hello": "world"}', "--schedule-type", "once"),
        *("--schedule-expression", due.isoformat(), "--schedule-enabled"),
    )["id"]

    # status: running, and its heartbeat row among the live instances.
    status = apflow.json("scheduler", "status")
    assert status["daemon"]["state"] == "running" and status["daemon"]["pid"] == pid
    [instance] = status["instances"]
    assert instance["pid"] == pid and instance["host"] == socket.gethostname()
    assert instance["mode"] == "internal" and instance["state"] == "running"
    assert instance["user_filter"] is None
    assert status["daemon"]["instance_id"] == instance["id"]
    for key in ("tasks_executed", "tasks_succeeded", "tasks_failed", "active_tasks"):
        assert key in instance["stats"]
    table = cli.ok("scheduler", "status")
    assert f"Background scheduler: running (pid {pid}, instance {instance['id']})" in table
    *_, identity = IDENTITY.finditer((home / "scheduler.log").read_text())  # the latest start
    assert identity["id"] == instance["id"] and identity["pid"] == str(pid)

    if sqlite:  # one daemon per APFLOW_HOME
        second = apflow("scheduler", "start", "--background")
        assert second.returncode == 1 and second.stdout == ""
        assert_one_error_line(second.stderr, "already running", f"pid {pid}")

    wait_for(lambda: task_row(url, once).status == "completed", 15, "the scheduled run")
    [scheduled] = cli.json("tasks", "runs", once)["items"]
    assert scheduled["trigger"] == "schedule" and scheduled["status"] == "completed"
    assert scheduled["scheduled_for"] == due.isoformat()
    assert scheduled["instance_id"] == instance["id"]
    assert scheduled["result"] == {"hello": "world"}

    # trigger --wait: the daemon claims the request as a manual run; we get its outcome.
    outcome = cli.json("scheduler", "trigger", once, "--wait", "--timeout", "20")
    assert outcome["trigger"] == "manual" and outcome["status"] == "completed"
    assert outcome["instance_id"] == instance["id"] and outcome["result"] == {"hello": "world"}
    assert [r["trigger"] for r in cli.json("tasks", "runs", once)["items"]] == [
        "manual",
        "schedule",
    ]

    # A long run started through the daemon: busy for `tasks execute`, cancelled by `cancel`.
    sleeper = cli.create(
        *("--name", "Sleeper", "--executor", "command_executor"),
        *("--inputs", '{"command": ["sleep", "30"]}'),
    )["id"]
    assert "Requested a run of task" in cli.ok("scheduler", "trigger", sleeper)
    wait_for(lambda: task_row(url, sleeper).status == "in_progress", 10, "the sleeper to start")
    cli.fails(1, "tasks", "execute", sleeper, names=(f"task '{sleeper}' is already running",))
    cancelled = cli.ok("tasks", "cancel", sleeper)
    assert cancelled.startswith("Cancelled run ") and "(Sleeper)" in cancelled
    [run] = runs_of(url, sleeper)
    assert run.status == "cancelled" and run.instance_id == instance["id"]
    assert task_row(url, sleeper).status == "cancelled"

    # stop: SIGTERM, graceful exit; the PID file goes, the heartbeat row says stopped.
    began = time.monotonic()
    assert apflow.ok("scheduler", "stop") == f"Scheduler (pid {pid}) stopped.\n"
    assert time.monotonic() - began < 10
    assert not process_alive(pid)
    assert not (home / "scheduler.pid").exists()
    rows = {row.id: row.state for row in instance_rows(url)}
    assert rows[instance["id"]] == "stopped"
    log = (home / "scheduler.log").read_text()
    assert "SIGTERM received: stopping gracefully" in log
    assert f"scheduler {instance['id']} stopped" in log
    after = apflow.json("scheduler", "status")
    assert after["daemon"]["state"] == "not_running" and after["instances"] == []
    assert "Background scheduler: not running" in cli.ok("scheduler", "status")


def test_background_scheduler_on_sqlite(apflow: Process) -> None:
    home = Path(apflow.env["APFLOW_HOME"])
    daemon_lifecycle(apflow, sqlite=True)

    # Not running: stop is refused. A stale PID file is cleaned by the next start.
    cli = in_process(apflow)
    refused = apflow("scheduler", "stop")
    assert refused.returncode == 1 and refused.stdout == ""
    assert_one_error_line(refused.stderr, "no background scheduler is running")
    finished = subprocess.Popen(["true"])
    finished.wait()
    (home / "scheduler.pid").write_text(f"{finished.pid}\n")
    assert cli.json("scheduler", "status")["daemon"]["state"] == "stale"
    out = apflow.ok("scheduler", "start", "--background", "--poll-interval", "1")
    assert f"Removed a stale PID file {home / 'scheduler.pid'} (pid {finished.pid}" in out
    pid = int(re.findall(r"pid (\d+)\)\.", out)[-1])
    assert process_alive(pid) and cli.json("scheduler", "status")["daemon"]["pid"] == pid
    assert apflow.ok("scheduler", "stop") == f"Scheduler (pid {pid}) stopped.\n"
    assert not process_alive(pid)


@pytest.mark.postgres
def test_background_scheduler_on_postgresql(apflow: Process, fresh_postgres_url: str) -> None:
    apflow.env["APFLOW_DATABASE_URL"] = fresh_postgres_url
    # Unmigrated: the daemon cannot start, and the parent says why, in one line.
    refused = apflow("scheduler", "start", "--background")
    assert refused.returncode == 1 and refused.stdout == ""
    assert_one_error_line(refused.stderr, "did not start", "apflow db upgrade")
    assert not (Path(apflow.env["APFLOW_HOME"]) / "scheduler.pid").exists()

    async def migrate() -> None:
        database = Database(fresh_postgres_url)
        try:
            await database.upgrade()
        finally:
            await database.dispose()

    asyncio.run(migrate())
    daemon_lifecycle(apflow, sqlite=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_foreground_scheduler_stops_gracefully(
    apflow: Process, tmp_path: Path, signum: signal.Signals
) -> None:
    log_path = tmp_path / "foreground.log"
    with log_path.open("w") as log:
        foreground = subprocess.Popen(
            [apflow.executable, "scheduler", "start", "--poll-interval", "1"],
            env=apflow.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        identity = wait_for(
            lambda: IDENTITY.search(log_path.read_text()), 15, "the scheduler's identity line"
        )
        foreground.send_signal(signum)
        assert foreground.wait(15) == 0
    finally:
        if foreground.poll() is None:
            foreground.kill()
            foreground.wait()
    assert foreground.stdout is not None
    assert foreground.stdout.read() == b""
    foreground.stdout.close()
    assert identity["pid"] == str(foreground.pid)
    assert identity["host"] == socket.gethostname()
    assert identity["mode"] == "internal" and identity["user"] == "*"
    log = log_path.read_text()
    assert f"{signum.name} received: stopping gracefully" in log
    assert f"scheduler {identity['id']} stopped" in log
    assert "Traceback" not in log
    rows = {row.id: row.state for row in instance_rows(database_url(apflow))}
    assert rows == {identity["id"]: "stopped"}
    # Nothing was written to the daemon's files.
    assert not (Path(apflow.env["APFLOW_HOME"]) / "scheduler.pid").exists()
    assert in_process(apflow).json("scheduler", "status")["instances"] == []
