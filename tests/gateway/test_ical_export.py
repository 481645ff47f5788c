"""The iCalendar export as text and against a real database, and the feed URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fixed_clock import Clock
from ical_support import YEAR, engine_instants, expand, scheduled
from icalendar import Calendar

from apflow_server.config import Settings
from apflow_server.core.errors import ValidationError
from apflow_server.scheduler.gateway import ICalExporter
from apflow_server.scheduler.gateway.ical import build_calendar, generate_ical_feed_url
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository

NOW = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)  # a Wednesday


def _tasks() -> list:
    daily = scheduled(
        "daily",
        "09:00,17:30",
        "Europe/Berlin",
        NOW,
        task_id="daily-report",
        name="Daily Report",
        inputs={"report_type": "summary", "recipients": ["a@example.com"]},
        params={"executor_id": "echo_executor"},
    )
    cron = scheduled("cron", "0 9 * * 1-5", "America/New_York", NOW, task_id="cron-task")
    weekly = scheduled("weekly", "1,3 08:15", "Asia/Kolkata", NOW, task_id="weekly-task")
    second_berlin = scheduled("monthly", "L 18:00", "Europe/Berlin", NOW, task_id="month-end")
    interval = scheduled("interval", "2h", "Europe/Berlin", NOW, task_id="interval-task")
    utc = scheduled("interval", "6h", "UTC", NOW, task_id="utc-task")
    once = scheduled("once", "2025-04-01T10:00:00+02:00", "Europe/Berlin", NOW, task_id="once")
    disabled = scheduled("daily", "09:00", "America/Chicago", NOW, task_id="disabled")
    disabled.schedule_enabled, disabled.next_run_at = False, None
    return [daily, cron, weekly, second_berlin, interval, utc, once, disabled]


def _parsed(**options) -> Calendar:
    text = build_calendar(_tasks(), now=NOW, **options).to_ical().decode()
    return Calendar.from_ical(text)


def _events(calendar: Calendar) -> dict[str, object]:
    return {str(event["UID"]): event for event in calendar.walk("VEVENT")}


# ---------------------------------------------------------------------- the text


def test_calendar_properties() -> None:
    calendar = _parsed(calendar_name="My Task Schedule")
    assert calendar["VERSION"] == "2.0"
    assert "apflow" in str(calendar["PRODID"])
    assert calendar["X-WR-CALNAME"] == "My Task Schedule"
    assert "X-WR-TIMEZONE" not in calendar  # readers would move every event into it


def test_one_event_per_scheduled_task() -> None:
    events = _events(_parsed())
    ids = ["daily-report", "cron-task", "weekly-task", "month-end", "interval-task", "utc-task"]
    assert sorted(events) == sorted(f"{task_id}@apflow" for task_id in [*ids, "once"])
    for task in _tasks():
        if task.next_run_at is None:
            continue
        event = events[f"{task.id}@apflow"]
        assert event.decoded("DTSTART").astimezone(UTC) == task.next_run_at
        assert event["SUMMARY"] == task.name


def test_uid_is_stable_across_exports() -> None:
    first = _events(_parsed())
    tasks = _tasks()
    for task in tasks:  # a day later every schedule has moved on
        if task.next_run_at is not None and task.schedule_type != "once":
            task.run_count += 1
            task.next_run_at = engine_instants(task, task.next_run_at + YEAR)[1]
    later = Calendar.from_ical(build_calendar(tasks, now=NOW + timedelta(days=1)).to_ical())
    assert sorted(first) == sorted(_events(later))


def test_dtstart_in_the_task_zone_with_one_vtimezone_per_zone() -> None:
    calendar = _parsed()
    events = _events(calendar)
    zones = [str(zone["TZID"]) for zone in calendar.walk("VTIMEZONE")]
    assert sorted(zones) == ["America/New_York", "Asia/Kolkata", "Europe/Berlin"]
    assert events["daily-report@apflow"]["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert events["cron-task@apflow"]["DTSTART"].params["TZID"] == "America/New_York"
    assert events["weekly-task@apflow"]["DTSTART"].params["TZID"] == "Asia/Kolkata"
    # an interval runs on elapsed time: it is anchored in UTC, whatever the task's zone
    assert "TZID" not in events["interval-task@apflow"]["DTSTART"].params
    assert events["interval-task@apflow"].decoded("DTSTART").utcoffset() == timedelta(0)
    text = build_calendar(_tasks(), now=NOW).to_ical().decode()
    assert text.count("BEGIN:VTIMEZONE") == 3
    assert "DTSTART;TZID=Europe/Berlin:20250305T173000" in text


def test_recurrence_properties() -> None:
    events = _events(_parsed())
    daily = events["daily-report@apflow"]["RRULE"]
    assert daily["FREQ"] == ["DAILY"] and daily["BYSETPOS"] == [1, 4]
    assert dict(events["cron-task@apflow"]["RRULE"]) == {
        "FREQ": ["WEEKLY"],
        "BYDAY": ["MO", "TU", "WE", "TH", "FR"],
        "BYHOUR": [9],
        "BYMINUTE": [0],
    }
    assert dict(events["month-end@apflow"]["RRULE"]) == {"FREQ": ["MONTHLY"], "BYMONTHDAY": [-1]}
    assert dict(events["interval-task@apflow"]["RRULE"]) == {"FREQ": ["HOURLY"], "INTERVAL": [2]}
    assert "RRULE" not in events["once@apflow"]


def test_description_has_real_line_breaks() -> None:
    event = _events(_parsed())["daily-report@apflow"]
    description = str(event["DESCRIPTION"])
    assert "\n" in description
    assert "\\n" not in description
    lines = description.split("\n")
    assert "Task ID: daily-report" in lines
    assert "Schedule: daily 09:00,17:30" in lines
    assert "Timezone: Europe/Berlin" in lines
    assert "Executor: echo_executor" in lines
    assert "Inputs: recipients, report_type" in lines  # names only: values can be secrets
    assert "a@example.com" not in description


def test_url_only_with_a_base_url() -> None:
    without = _events(_parsed())
    assert all("URL" not in event for event in without.values())
    with_url = _events(_parsed(base_url="https://app.example.com/"))
    # The task's page in the dashboard, which a browser can open.
    assert with_url["daily-report@apflow"]["URL"] == "https://app.example.com/ui/tasks/daily-report"
    assert all("URL" in event for event in with_url.values())


@pytest.mark.parametrize("minutes", [30, 45, 90])
def test_duration_is_the_default(minutes: int) -> None:
    events = _events(_parsed(default_duration_minutes=minutes))
    for event in events.values():
        assert event.decoded("DURATION") == timedelta(minutes=minutes)
        assert "DTEND" not in event


def test_dtstamp_and_transparency() -> None:
    for event in _events(_parsed()).values():
        assert event.decoded("DTSTAMP") == NOW
        assert event["TRANSP"] == "TRANSPARENT"


def test_text_is_rfc5545() -> None:
    text = build_calendar(_tasks(), now=NOW).to_ical()
    lines = text.split(b"\r\n")
    assert lines[0] == b"BEGIN:VCALENDAR" and lines[-2] == b"END:VCALENDAR"
    assert all(len(line) <= 75 for line in lines)  # folded
    assert Calendar.from_ical(text).walk("VEVENT")


def test_bad_duration_is_refused() -> None:
    with pytest.raises(ValidationError):
        ICalExporter(default_duration_minutes=0, repository=object())  # type: ignore[arg-type]


def test_the_exported_text_expands_to_the_engine_instants() -> None:
    tasks = [task for task in _tasks() if task.next_run_at is not None]
    calendar = build_calendar(tasks, now=NOW)
    end = NOW + YEAR
    expected = sorted(instant for task in tasks for instant in engine_instants(task, end))
    assert expand(calendar, NOW, end) == expected


# ---------------------------------------------------------------------- the database


@pytest.fixture
def repo(database: Database, tmp_path: Path) -> TaskRepository:
    settings = Settings(home=tmp_path, database_url=database.url)
    return TaskRepository(database, settings=settings, clock=Clock(NOW))


async def _create(repo: TaskRepository, name: str, **fields: object) -> str:
    defaults: dict[str, object] = {
        "schedule_type": "daily",
        "schedule_expression": "09:00",
        "schedule_timezone": "Europe/Berlin",
        "schedule_enabled": True,
    }
    task = await repo.create_task(name=name, **{**defaults, **fields})
    return task.id


def _uids(text: str) -> list[str]:
    return sorted(str(event["UID"]) for event in Calendar.from_ical(text).walk("VEVENT"))


async def test_export_scopes_by_user(repo: TaskRepository) -> None:
    alice_1 = await _create(repo, "A1", user_id="alice")
    alice_2 = await _create(
        repo, "A2", user_id="alice", schedule_type="cron", schedule_expression="*/30 9-17 * * 1-5"
    )
    bob = await _create(repo, "B", user_id="bob", schedule_timezone="Australia/Lord_Howe")
    nobody = await _create(repo, "N", schedule_type="interval", schedule_expression="1h")
    await repo.create_task(name="not scheduled", user_id="alice")
    exporter = ICalExporter(repository=repo, base_url="https://app.example.com")
    assert _uids(await exporter.export_tasks(user_id="alice")) == sorted(
        f"{task_id}@apflow" for task_id in (alice_1, alice_2)
    )
    assert _uids(await exporter.export_tasks(user_id="bob")) == [f"{bob}@apflow"]
    assert _uids(await exporter.export_tasks()) == sorted(
        f"{task_id}@apflow" for task_id in (alice_1, alice_2, bob, nobody)
    )
    assert _uids(await exporter.export_tasks(user_id="carol")) == []


async def test_export_enabled_only(repo: TaskRepository) -> None:
    enabled = await _create(repo, "on", user_id="alice")
    disabled = await _create(repo, "off", user_id="alice", schedule_enabled=False)
    exporter = ICalExporter(repository=repo)
    fetched = await exporter.fetch_tasks(user_id="alice", enabled_only=False)
    assert sorted(task.id for task in fetched) == sorted([enabled, disabled])
    assert [task.id for task in await exporter.fetch_tasks(user_id="alice")] == [enabled]
    # A disabled schedule has no next run, so it has nothing to show either way.
    for enabled_only in (True, False):
        text = await exporter.export_tasks(user_id="alice", enabled_only=enabled_only)
        assert _uids(text) == [f"{enabled}@apflow"]


async def test_export_limit(repo: TaskRepository) -> None:
    ids = [
        await _create(
            repo, f"T{hour}", schedule_expression=f"{hour:02d}:00", schedule_timezone="UTC"
        )
        for hour in (15, 13, 14)
    ]
    exporter = ICalExporter(repository=repo)
    assert _uids(await exporter.export_tasks(limit=2)) == sorted(f"{i}@apflow" for i in ids[1:])
    assert len(_uids(await exporter.export_tasks(limit=1500))) == 3
    with pytest.raises(ValidationError):
        await exporter.export_tasks(limit=0)


async def test_export_from_the_database_is_faithful(repo: TaskRepository) -> None:
    cases = [
        ("daily", "02:30", "Europe/Berlin", {}),
        ("cron", "0 * * * *", "Australia/Lord_Howe", {}),
        ("interval", "90m", "America/New_York", {"max_runs": 50}),
        ("monthly", "31,L 09:00", "Asia/Kolkata", {"schedule_end_at": "2025-12-31T00:00:00Z"}),
    ]
    for schedule_type, expression, zone, extra in cases:
        await _create(
            repo,
            f"{schedule_type} {expression}",
            schedule_type=schedule_type,
            schedule_expression=expression,
            schedule_timezone=zone,
            **extra,
        )
    exporter = ICalExporter(repository=repo, default_duration_minutes=5)
    text = await exporter.export_tasks()
    tasks = await exporter.fetch_tasks()
    end = NOW + timedelta(days=220)  # both of Lord Howe's transitions
    expected = sorted(instant for task in tasks for instant in engine_instants(task, end))
    assert expand(Calendar.from_ical(text), NOW, end) == expected


def test_default_repository_is_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APFLOW_HOME", str(tmp_path))
    exporter = ICalExporter()
    assert isinstance(exporter.repository, TaskRepository)
    assert exporter.calendar_name == "APFlow Tasks"
    assert exporter.base_url is None
    assert exporter.default_duration_minutes == 30


# ---------------------------------------------------------------------- the feed URL


def test_feed_url_as_in_the_guide() -> None:
    url = generate_ical_feed_url(
        base_url="https://api.example.com", user_id="user123", api_key="your-api-key"
    )
    assert url == "https://api.example.com/scheduler/ical?user_id=user123&api_key=your-api-key"


def test_feed_url_encodes_its_query() -> None:
    user_id, api_key = "ann & bob/é", "k+y=/?#%"
    url = generate_ical_feed_url("https://api.example.com/base/", user_id, api_key)
    parts = urlsplit(url)
    assert parts.path == "/base/scheduler/ical"
    assert parse_qs(parts.query) == {"user_id": [user_id], "api_key": [api_key]}
    assert url == (
        "https://api.example.com/base/scheduler/ical"
        "?user_id=ann+%26+bob%2F%C3%A9&api_key=k%2By%3D%2F%3F%23%25"
    )


def test_feed_url_without_parameters() -> None:
    assert generate_ical_feed_url("https://api.example.com") == (
        "https://api.example.com/scheduler/ical"
    )
    assert generate_ical_feed_url("https://api.example.com", api_key="k") == (
        "https://api.example.com/scheduler/ical?api_key=k"
    )
