"""`apflow scheduler export-ical` and `apflow scheduler feed-key`, on both databases."""

from __future__ import annotations

from pathlib import Path

import icalendar
from cli_support import Cli


def daily(cli: Cli, name: str, user: str) -> dict:  # type: ignore[type-arg]
    return cli.create(
        "--name",
        name,
        "--user-id",
        user,
        "--schedule-type",
        "daily",
        "--schedule-expression",
        "09:00",
        "--schedule-timezone",
        "America/New_York",
        "--schedule-enabled",
    )


def test_export_ical_to_a_file_and_to_stdout(cli: Cli, tmp_path: Path) -> None:
    alice = daily(cli, "Alice report", "alice")
    daily(cli, "Bob report", "bob")
    target = tmp_path / "alice.ics"
    out = cli.ok(
        "scheduler", "export-ical", "--user-id", "alice", "--name", "Mine", "-o", str(target)
    )
    assert "1 scheduled task" in out
    calendar = icalendar.Calendar.from_ical(target.read_bytes())
    assert str(calendar["X-WR-CALNAME"]) == "Mine"
    [event] = calendar.walk("VEVENT")
    assert str(event["SUMMARY"]) == "Alice report"
    assert event["DTSTART"].dt.isoformat().startswith(alice["next_run_at"][:10])
    everything = icalendar.Calendar.from_ical(cli.ok("scheduler", "export-ical"))
    assert {str(e["SUMMARY"]) for e in everything.walk("VEVENT")} == {
        "Alice report",
        "Bob report",
    }


def test_feed_keys_issue_list_and_revoke(cli: Cli) -> None:
    issued = cli.json("scheduler", "feed-key", "--user-id", "alice", "--label", "phone")
    assert issued["api_key"].startswith("afk_") and issued["user_id"] == "alice"
    assert issued["url"].startswith("http://127.0.0.1:8000/scheduler/ical?user_id=alice&api_key=")
    listed = cli.json("scheduler", "feed-key", "--list")
    assert [(k["key_id"], k["label"], k["revoked_at"]) for k in listed["items"]] == [
        (issued["key_id"], "phone", None)
    ]
    assert issued["api_key"] not in cli.ok("scheduler", "feed-key", "--list")  # never shown again
    assert "Revoked" in cli.ok("scheduler", "feed-key", "--revoke", issued["key_id"])
    [key] = cli.json("scheduler", "feed-key", "--list")["items"]
    assert key["revoked_at"] is not None


def test_feed_key_errors(cli: Cli) -> None:
    cli.ok("tasks", "list")  # the embedded database exists (and is migrated) before the snapshots
    cli.fails(2, "scheduler", "feed-key", names=("--user-id",))
    cli.fails(1, "scheduler", "feed-key", "--revoke", "nope", names=("nope",))
    cli.fails(2, "scheduler", "feed-key", "--list", "--revoke", "x", names=("--list",))
