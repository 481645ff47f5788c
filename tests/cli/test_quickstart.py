"""The guide's quick start, run exactly as written with the real `apflow` executable: on the
embedded SQLite default, and on PostgreSQL after `apflow db upgrade`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import Process, assert_one_error_line


def next_nine_utc(now: datetime) -> datetime:
    nine = now.replace(hour=9, minute=0, second=0, microsecond=0)
    return nine if nine > now else nine + timedelta(days=1)


def quick_start(apflow: Process) -> None:
    # 1. Create a task: the id comes from the JSON output...
    created = apflow.json(
        "tasks", "create", "--name", "Daily Report", "--inputs", '{"report_type": "summary"}'
    )
    task_id = created["id"]
    assert created["name"] == "Daily Report"
    assert created["inputs"] == {"report_type": "summary"}
    assert created["schedule_enabled"] is False and created["next_run_at"] is None

    # ... and the command exactly as the guide writes it prints a copyable id.
    table = apflow.ok(
        "tasks", "create", "--name", "Daily Report", "--inputs", '{"report_type": "summary"}'
    )
    match = re.fullmatch(r"Created task (\S+) \(Daily Report\)\n", table)
    assert match, table
    other_id = match.group(1)
    listing = apflow.json("tasks", "list")
    assert [item["id"] for item in listing["items"]] == [task_id, other_id]
    assert listing["total"] == 2

    # 2. Configure the schedule.
    before = datetime.now(UTC)
    updated = apflow.ok(
        "tasks",
        "update",
        task_id,
        "--schedule-type",
        "daily",
        "--schedule-expression",
        "09:00",
        "--schedule-enabled",
    )
    assert f"Updated task {task_id} (Daily Report)" in updated
    assert "daily 09:00 UTC" in updated

    # 3. Initialise it: next_run_at is the next 09:00 UTC.
    initialised = apflow.ok("tasks", "scheduled", "init", task_id)
    after = datetime.now(UTC)
    assert task_id in initialised
    task = apflow.json("tasks", "get", task_id)
    next_run = datetime.fromisoformat(task["next_run_at"])
    assert next_run in {next_nine_utc(before), next_nine_utc(after)}
    assert task["schedule_enabled"] is True
    assert task["schedule_type"] == "daily" and task["schedule_expression"] == "09:00"

    # 4. Check for due tasks: nothing until 09:00 comes.
    assert apflow.ok("tasks", "scheduled", "due") == "No task is due.\n"
    just_before = (next_run - timedelta(seconds=1)).isoformat()
    assert apflow.json("tasks", "scheduled", "due", "--before", just_before)["items"] == []
    due = apflow.json("tasks", "scheduled", "due", "--before", next_run.isoformat())
    assert [item["id"] for item in due["items"]] == [task_id]
    assert due["total"] == 1
    due_table = apflow.ok("tasks", "scheduled", "due", "--before", task["next_run_at"])
    assert task_id in due_table and other_id not in due_table


def test_quick_start_on_embedded_sqlite(process: Process) -> None:
    quick_start(process)
    assert (Path(process.env["APFLOW_HOME"]) / "apflow.db").is_file()


@pytest.mark.postgres
def test_quick_start_on_postgresql(process: Process, fresh_postgres_url: str) -> None:
    process.env["APFLOW_DATABASE_URL"] = fresh_postgres_url

    # A database without the schema is refused with the way out, not migrated behind the
    # operator's back.
    refused = process("tasks", "list")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert_one_error_line(refused.stderr, "apflow db upgrade")

    upgraded = process.ok("db", "upgrade")
    assert "upgraded from an empty database to revision" in upgraded
    assert "is already at revision" in process.ok("db", "upgrade")

    quick_start(process)
