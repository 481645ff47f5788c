"""Every `apflow tasks` command in table and JSON mode, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli_support import Cli


def sh(command: str) -> list[str]:
    return shlex.split(command)


def ids(listing: dict[str, Any]) -> list[str]:
    return [item["id"] for item in listing["items"]]


# ---------------------------------------------------------------------- create and update


def test_create_with_every_field_flag(cli: Cli) -> None:
    root = cli.create("--name", "Root", "--id", "root-1", "--user-id", "alice")
    assert root["id"] == "root-1" and root["user_id"] == "alice"
    first = cli.create(
        "--name",
        "Fetch",
        "--parent-id",
        "root-1",
        "--priority",
        "1",
        "--inputs",
        '{"k": [1, 2]}',
        "--params",
        '{"url": "https://example.com", "executor_id": "old"}',
        "--executor",
        "rest_executor",
        "--schemas",
        '{"method": "GET"}',
    )
    assert first["parent_id"] == "root-1"
    assert first["user_id"] == "alice"  # a child has its root's owner
    assert first["priority"] == 1
    assert first["inputs"] == {"k": [1, 2]}
    assert first["params"] == {"url": "https://example.com", "executor_id": "rest_executor"}
    assert first["schemas"] == {"method": "GET"}
    second = cli.create(
        *sh("--name Report --parent-id root-1"),
        *sh("""--dependencies '[{"id": "Fetch", "required": false}]'"""),
    )
    assert second["dependencies"] == [{"id": first["id"], "required": False}]
    assert second["priority"] == 2 and second["status"] == "pending"


def test_create_with_every_schedule_flag(cli: Cli) -> None:
    task = cli.create(
        "--name",
        "Every 15 minutes",
        "--schedule-type",
        "interval",
        "--schedule-expression",
        "15m",
        "--schedule-timezone",
        "Europe/Berlin",
        "--schedule-start-at",
        "2030-01-01T00:00:00Z",
        "--schedule-end-at",
        "2030-01-02T00:00:00Z",
        "--max-runs",
        "5",
        "--schedule-misfire",
        "skip",
        "--schedule-overlap",
        "buffer_one",
        "--schedule-jitter-seconds",
        "30",
        "--schedule-enabled",
    )
    assert task["schedule_type"] == "interval"
    assert task["schedule_expression"] == "15m"
    assert task["schedule_timezone"] == "Europe/Berlin"
    assert task["schedule_enabled"] is True
    assert task["schedule_start_at"] == "2030-01-01T00:00:00+00:00"
    assert task["schedule_end_at"] == "2030-01-02T00:00:00+00:00"
    assert task["next_run_at"] == "2030-01-01T00:00:00+00:00"
    assert task["max_runs"] == 5
    assert task["schedule_misfire"] == "skip"
    assert task["schedule_overlap"] == "buffer_one"
    assert task["schedule_jitter_seconds"] == 30


def test_create_in_table_mode_prints_the_id(cli: Cli) -> None:
    out = cli.ok("tasks", "create", "--name", "Plain", "--id", "plain-1")
    assert out == "Created task plain-1 (Plain)\n"
    out = cli.ok(
        "tasks",
        "create",
        "--name",
        "Nightly",
        "--id",
        "nightly-1",
        "--schedule-type",
        "once",
        "--schedule-expression",
        "2031-05-01T02:00:00Z",
        "--schedule-enabled",
    )
    assert out == "Created task nightly-1 (Nightly)\n  next run: 2031-05-01 02:00:00Z\n"


def test_create_a_tree_from_a_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "tree.json"
    path.write_text(
        json.dumps(
            [
                {"name": "Pipeline", "id": "pipe", "user_id": "bob"},
                {"name": "Extract", "parent_id": "Pipeline", "priority": 0},
                {"name": "Load", "parent_id": "pipe", "dependencies": ["Extract"]},
            ]
        )
    )
    created = cli.json("tasks", "create", "--file", str(path))
    assert created["total"] == 3
    names = [item["name"] for item in created["items"]]
    assert names == ["Pipeline", "Extract", "Load"]
    extract, load = created["items"][1], created["items"][2]
    assert extract["parent_id"] == "pipe" and load["parent_id"] == "pipe"
    assert load["dependencies"] == [{"id": extract["id"], "required": True}]
    assert {item["user_id"] for item in created["items"]} == {"bob"}

    single = tmp_path / "single.json"
    single.write_text(json.dumps({"name": "Alone", "id": "alone"}))
    assert cli.ok("tasks", "create", "--file", str(single)) == "Created task alone (Alone)\n"


def test_update_sends_only_the_flags_given(cli: Cli) -> None:
    task = cli.create(
        *sh("""--name Report --inputs '{"a": 1}'"""),
        *sh("""--params '{"executor_id": "echo_executor", "x": 1}'"""),
    )
    task_id = task["id"]
    renamed = cli.json("tasks", "update", task_id, "--name", "Weekly Report")
    assert renamed["name"] == "Weekly Report"
    assert renamed["inputs"] == {"a": 1}
    assert renamed["params"] == {"executor_id": "echo_executor", "x": 1}

    # --executor keeps the other params.
    moved = cli.json("tasks", "update", task_id, "--executor", "rest_executor")
    assert moved["params"] == {"executor_id": "rest_executor", "x": 1}
    replaced = cli.json(
        "tasks", "update", task_id, "--params", '{"y": 2}', "--executor", "echo_executor"
    )
    assert replaced["params"] == {"y": 2, "executor_id": "echo_executor"}

    scheduled = cli.json(
        "tasks",
        "update",
        task_id,
        "--schedule-type",
        "weekly",
        "--schedule-expression",
        "1-5 09:00",
        "--schedule-timezone",
        "America/New_York",
        "--schedule-end-at",
        "2099-01-01T00:00:00Z",
        "--max-runs",
        "3",
        "--schedule-enabled",
    )
    assert scheduled["schedule_enabled"] is True and scheduled["next_run_at"] is not None
    assert scheduled["schedule_end_at"] == "2099-01-01T00:00:00+00:00"
    assert scheduled["max_runs"] == 3

    # `none` clears a schedule field.
    cleared = cli.json("tasks", "update", task_id, *sh("--schedule-end-at none --max-runs None"))
    assert cleared["schedule_end_at"] is None and cleared["max_runs"] is None
    assert cleared["next_run_at"] == scheduled["next_run_at"]
    unscheduled = cli.json(
        "tasks", "update", task_id, "--schedule-type", "none", "--schedule-disabled"
    )
    assert unscheduled["schedule_type"] is None
    assert unscheduled["schedule_enabled"] is False and unscheduled["next_run_at"] is None

    out = cli.ok("tasks", "update", task_id, "--priority", "0")
    assert out.startswith(f"Updated task {task_id} (Weekly Report)\n")


def test_get_shows_every_field(cli: Cli) -> None:
    task = cli.create("--name", "[red]Not markup[/red]", "--inputs", '{"report_type": "summary"}')
    out = cli.ok("tasks", "get", task["id"])
    for name in ("id", "name", "inputs", "schedule_timezone", "next_run_at", "run_count"):
        assert name in out
    assert task["id"] in out
    assert "[red]Not markup[/red]" in out
    assert '{"report_type": "summary"}' in out
    assert cli.json("tasks", "get", task["id"]) == task


# ---------------------------------------------------------------------- listings


def test_list_filters_and_pages(cli: Cli) -> None:
    first = cli.create("--name", "One", "--user-id", "alice")
    second = cli.create("--name", "Two", "--user-id", "alice")
    third = cli.create("--name", "Three", "--user-id", "bob")
    child = cli.create("--name", "Child", "--parent-id", third["id"])
    everything = cli.json("tasks", "list")
    assert ids(everything) == [first["id"], second["id"], third["id"], child["id"]]
    assert everything["total"] == 4 and everything["limit"] == 50 and everything["offset"] == 0
    assert ids(cli.json("tasks", "list", "--roots-only"))[::-1][0] == third["id"]
    assert cli.json("tasks", "list", "--roots-only")["total"] == 3
    assert ids(cli.json("tasks", "list", "--parent-id", third["id"])) == [child["id"]]
    assert ids(cli.json("tasks", "list", "--user-id", "alice")) == [first["id"], second["id"]]
    assert cli.json("tasks", "list", "--status", "pending")["total"] == 4
    assert cli.json("tasks", "list", "--status", "completed")["items"] == []
    page = cli.json("tasks", "list", "--limit", "2", "--offset", "1")
    assert ids(page) == [second["id"], third["id"]]
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)

    table = cli.ok("tasks", "list")
    for task in (first, second, third, child):
        assert task["id"] in table and task["name"] in table
    assert "1-4 of 4" in table
    assert "2-3 of 4" in cli.ok("tasks", "list", "--limit", "2", "--offset", "1")
    assert cli.ok("tasks", "list", "--user-id", "nobody") == "No tasks found.\n"
    empty = cli.json("tasks", "list", "--user-id", "nobody")
    assert empty == {"items": [], "total": 0, "limit": 50, "offset": 0}


def test_scheduled_list(cli: Cli) -> None:
    later = cli.create(
        *sh("--name Later --schedule-type once --schedule-expression 2032-01-01T00:00:00Z"),
        "--schedule-enabled",
    )
    sooner = cli.create(
        *sh("--name Sooner --schedule-type once --schedule-expression 2031-01-01T00:00:00Z"),
        *sh("--schedule-enabled --user-id alice"),
    )
    paused = cli.create(*sh("--name Paused --schedule-type daily --schedule-expression 09:00"))
    cli.create("--name", "Unscheduled")

    enabled = cli.json("tasks", "scheduled", "list")
    assert ids(enabled) == [sooner["id"], later["id"]]  # soonest first
    assert enabled["total"] == 2
    everything = cli.json("tasks", "scheduled", "list", "--all")
    assert ids(everything) == [sooner["id"], later["id"], paused["id"]]
    assert ids(cli.json("tasks", "scheduled", "list", "--all", "--type", "daily")) == [paused["id"]]
    assert ids(cli.json("tasks", "scheduled", "list", "--user-id", "alice")) == [sooner["id"]]
    assert cli.json("tasks", "scheduled", "list", "--status", "failed")["total"] == 0
    assert ids(cli.json("tasks", "scheduled", "list", "--limit", "1", "--offset", "1")) == [
        later["id"]
    ]

    table = cli.ok("tasks", "scheduled", "list", "--all")
    assert "daily 09:00 UTC (disabled)" in table
    assert "once 2031-01-01T00:00:00Z UTC" in table
    assert "2031-01-01 00:00:00Z" in table
    assert "Unscheduled" not in table
    assert cli.ok("tasks", "scheduled", "list", "--type", "cron") == "No scheduled tasks found.\n"


def test_tree_in_both_modes(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "tree.json"
    path.write_text(
        json.dumps(
            [
                {"name": "Root", "id": "r"},
                {"name": "Low", "id": "low", "parent_id": "r", "priority": 3},
                {"name": "Urgent", "id": "urgent", "parent_id": "r", "priority": 0},
                {"name": "Grandchild [x]", "id": "gc", "parent_id": "low"},
            ]
        )
    )
    cli.ok("tasks", "create", "--file", str(path))
    tree = cli.json("tasks", "tree", "gc")  # any member shows the whole tree
    assert tree["id"] == "r"
    assert [child["id"] for child in tree["children"]] == ["urgent", "low"]
    assert tree["children"][0]["children"] == []
    assert [c["name"] for c in tree["children"][1]["children"]] == ["Grandchild [x]"]
    assert tree["children"][1]["children"][0]["children"] == []

    table = cli.ok("tasks", "tree", "r")
    lines = table.splitlines()
    assert lines[0].startswith("Root  r  [pending]")
    assert "├── Urgent  urgent" in lines[1]
    assert "└── Low  low" in lines[2]
    assert "└── Grandchild [x]  gc" in lines[3]


def test_delete(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "tree.json"
    path.write_text(
        json.dumps(
            [
                {"name": "Root", "id": "r"},
                {"name": "A", "id": "a", "parent_id": "r"},
                {"name": "B", "id": "b", "parent_id": "r", "dependencies": ["a"]},
                {"name": "C", "id": "c", "parent_id": "b"},
            ]
        )
    )
    cli.ok("tasks", "create", "--file", str(path))
    cli.fails(1, "tasks", "delete", "a", names=("depends on it",))
    assert cli.ok("tasks", "delete", "c") == "Deleted task c (C)\n"
    assert cli.json("tasks", "delete", "b") == {"deleted": ["b"]}
    out = cli.ok("tasks", "delete", "r")
    assert out == "Deleted task r (Root) and 1 descendant\n  a (A)\n"
    assert cli.json("tasks", "list")["total"] == 0
    cli.ok("tasks", "create", "--file", str(path))
    deleted = cli.json("tasks", "delete", "r")["deleted"]
    assert deleted[0] == "r" and sorted(deleted) == ["a", "b", "c", "r"]


# ---------------------------------------------------------------------- preview


def test_preview_an_unsaved_schedule_across_dst(cli: Cli) -> None:
    args = (
        "tasks",
        "scheduled",
        "preview",
        "--schedule-type",
        "daily",
        "--schedule-expression",
        "02:30",
        "--schedule-timezone",
        "Europe/Berlin",
        "--after",
        "2025-03-28T12:00:00Z",
        "--count",
        "3",
    )
    preview = cli.json(*args)
    assert preview["task_id"] is None
    assert preview["schedule_timezone"] == "Europe/Berlin"
    # 02:30 does not exist on 2025-03-30 (02:00 -> 03:00): it fires at 03:30 CEST = 01:30Z.
    # JSON-RPC's fire_times (UTC), and each in the schedule's zone.
    assert preview["fire_times"] == [
        "2025-03-29T01:30:00+00:00",
        "2025-03-30T01:30:00+00:00",
        "2025-03-31T00:30:00+00:00",
    ]
    assert preview["local_times"] == [
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:30:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]
    assert "skipped" not in preview  # a draft has no pauses or skips
    table = cli.ok(*args)
    assert "daily 02:30 (Europe/Berlin)" in table
    assert "2025-03-30 01:30:00Z" in table
    assert "2025-03-30 03:30:00 CEST (+02:00)" in table
    assert "2025-03-29 02:30:00 CET (+01:00)" in table

    # Fall back: 02:30 happens twice on 2025-10-26 and fires once, at the first (CEST).
    autumn = cli.json(*args[:-4], "--after", "2025-10-25T12:00:00Z", "--count", "2")
    assert autumn["fire_times"] == [
        "2025-10-26T00:30:00+00:00",
        "2025-10-27T01:30:00+00:00",
    ]
    capped = cli.json(*args[:-2], "--count", "5", "--max-runs", "2")
    assert len(capped["fire_times"]) == 2
    once = cli.json(
        *sh("tasks scheduled preview --schedule-type once"),
        *sh("--schedule-expression 2031-06-01T09:00:00 --schedule-timezone Asia/Tokyo"),
    )
    assert once["fire_times"] == ["2031-06-01T00:00:00+00:00"]
    assert once["local_times"] == ["2031-06-01T09:00:00+09:00"]


def test_preview_a_stored_task(cli: Cli) -> None:
    task = cli.create(
        *sh("--name Berlin --schedule-type daily --schedule-expression 02:30"),
        *sh("--schedule-timezone Europe/Berlin --schedule-enabled"),
    )
    preview = cli.json(
        "tasks", "scheduled", "preview", task["id"], *sh("--after 2025-03-29T12:00:00Z --count 2")
    )
    assert preview["task_id"] == task["id"]
    assert (preview["schedule_type"], preview["schedule_expression"]) == ("daily", "02:30")
    assert preview["skipped"] == []
    assert preview["local_times"] == [
        "2025-03-30T03:30:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]
    table = cli.ok("tasks", "scheduled", "preview", task["id"], "--after", "2025-03-29T12:00:00Z")
    assert f"task {task['id']}: daily 02:30 (Europe/Berlin)" in table
    assert "2025-03-30 03:30:00 CEST (+02:00)" in table
    assert len([line for line in table.splitlines() if "CEST" in line]) == 10
    # Previewing does not save anything.
    assert cli.json("tasks", "get", task["id"]) == task


# ---------------------------------------------------------------------- init, complete, runs


def test_init_complete_and_runs(cli: Cli) -> None:
    task = cli.create(
        *sh("--name Daily --schedule-type daily --schedule-expression 09:00 --schedule-enabled")
    )
    task_id = task["id"]
    other = cli.create("--name", "Other")

    # Put the schedule on a past occurrence: it is due now.
    out = cli.ok("tasks", "scheduled", "init", task_id, "--from-time", "2025-01-01T00:00:00Z")
    assert out.startswith(f"Next run of task {task_id} (Daily): 2025-01-01 09:00:00Z\n")
    assert ids(cli.json("tasks", "scheduled", "due")) == [task_id]

    failed = cli.json(
        *sh("tasks scheduled complete"),
        task_id,
        *sh("""--failure --error 'upstream down' --result '{"rows": 0}' --no-next-run"""),
    )
    assert failed["status"] == "failed" and failed["error"] == "upstream down"
    assert failed["result"] == {"rows": 0}
    assert failed["run_count"] == 1
    assert failed["next_run_at"] == "2025-01-01T09:00:00+00:00"  # --no-next-run

    # The same occurrence cannot be reported twice.
    cli.fails(1, "tasks", "scheduled", "complete", task_id, names=("already recorded",))

    runs = cli.json("tasks", "runs", task_id)
    assert runs["total"] == 1
    (run,) = runs["items"]
    assert run["status"] == "failed" and run["error"] == "upstream down"
    assert run["scheduled_for"] == "2025-01-01T09:00:00+00:00"
    assert run["result"] == {"rows": 0} and run["trigger"] == "api"

    reinitialised = cli.json("tasks", "scheduled", "init", task_id)
    next_run = datetime.fromisoformat(reinitialised["next_run_at"])
    assert next_run > datetime.now(UTC)
    out = cli.ok("tasks", "scheduled", "complete", task_id, "--result", "42")
    assert out.startswith(f"Recorded a successful run of task {task_id} (Daily); next run: ")
    completed = cli.json("tasks", "get", task_id)
    assert completed["status"] == "completed" and completed["result"] == 42
    assert completed["run_count"] == 2 and completed["error"] is None

    both = cli.json("tasks", "runs", task_id)
    assert [r["status"] for r in both["items"]] == ["completed", "failed"]  # newest first
    assert ids(cli.json("tasks", "runs", "--status", "failed")) == [run["id"]]
    assert cli.json("tasks", "runs", task_id, "--limit", "1")["total"] == 2
    assert len(cli.json("tasks", "runs", "--limit", "1", "--offset", "1")["items"]) == 1
    assert cli.json("tasks", "runs", other["id"])["items"] == []
    assert cli.ok("tasks", "runs", other["id"]) == "No runs found.\n"

    table = cli.ok("tasks", "runs")
    assert run["id"] in table and "upstream down" in table and "completed" in table
    assert "2025-01-01 09:00:00Z" in table
    assert "1-2 of 2" in table


def test_init_in_table_mode_reports_a_finished_schedule(cli: Cli) -> None:
    task = cli.create(
        *sh("--name Once --schedule-type once --schedule-expression 2030-01-01T00:00:00Z"),
        "--schedule-enabled",
    )
    out = cli.ok("tasks", "scheduled", "init", task["id"], "--from-time", "2031-01-01T00:00:00Z")
    assert out.startswith(f"Task {task['id']} (Once) has no next run")
    assert cli.json("tasks", "get", task["id"])["schedule_enabled"] is False


# ---------------------------------------------------------------------- db


def test_db_upgrade_on_a_new_sqlite_file(tmp_path: Path) -> None:
    cli = Cli(f"sqlite+aiosqlite:///{tmp_path / 'new' / 'apflow.db'}", tmp_path)
    first = cli.ok("db", "upgrade")
    assert "upgraded from an empty database to revision" in first
    assert "(the latest)" in first
    assert "is already at revision" in cli.ok("db", "upgrade")
    assert cli.json("tasks", "list")["total"] == 0
