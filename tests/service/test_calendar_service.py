"""Business calendars through the service on both databases: who sees which calendar, the
days a calendar closes and why, changes that bump the version, refusals that write nothing,
and a calendar a schedule names that cannot be deleted."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import pytest
import recurring_ical_events
from icalendar import Calendar
from processes import spawn, stop
from sqlalchemy import func, select, update

from apflow_server.config import Settings
from apflow_server.core.errors import NotFoundError, ValidationError
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import BusinessCalendar, Task, TaskRun
from apflow_server.storage.repository import TaskRepository

ALICE = Principal("alice", False, "jwt")
BOB = Principal("bob", False, "jwt")
ADMIN = Principal("root", True, "jwt")


@pytest.fixture
def service(database: Database, tmp_path: Path) -> Service:
    settings = Settings(home=tmp_path, database_url=database.url)
    return Service(settings, database, TaskRepository(database, settings=settings))


async def stored(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(BusinessCalendar)) or 0)


async def test_a_calendar_closes_weekends_and_the_countrys_holidays_with_their_names(
    service: Service,
) -> None:
    await service.calendars.create(
        ALICE, name="munich", holidays={"country": "DE", "subdivision": "BY"}
    )
    found = await service.calendars.days(ALICE, "munich", "2031-05-30", "2031-06-14")
    bavaria = holidays.country_holidays("DE", subdiv="BY", years=2031)
    # Whit Monday (2 June) and Corpus Christi (12 June) 2031, by the package's own names.
    assert date(2031, 6, 2) in bavaria and date(2031, 6, 12) in bavaria
    expected = []
    for ordinal in range(date(2031, 5, 30).toordinal(), date(2031, 6, 14).toordinal()):
        day = date.fromordinal(ordinal)
        reason = bavaria.get(day) or ("weekend" if day.isoweekday() in (6, 7) else None)
        expected.append((day.isoformat(), reason))
    assert [(day["date"], day["reason"]) for day in found] == expected
    assert [day["business_day"] for day in found] == [reason is None for _, reason in expected]
    assert dict(expected)["2031-06-03"] is None and dict(expected)["2031-05-31"] == "weekend"


async def test_explicit_dates_and_ics_days_are_closed_with_their_reasons(
    service: Service,
) -> None:
    ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        "BEGIN:VEVENT\r\nUID:1\r\nDTSTART;VALUE=DATE:20270104\r\nDTEND;VALUE=DATE:20270106\r\n"
        "SUMMARY:Inventory\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    await service.calendars.create(
        ALICE,
        name="shop",
        weekend=[7],
        dates=["2027-01-08", {"date": "2027-01-09", "reason": "Stocktake"}],
        ics=ics,
    )
    found = await service.calendars.days(ALICE, "shop", "2027-01-04", "2027-01-11")
    assert [(day["date"], day["reason"]) for day in found] == [
        ("2027-01-04", "Inventory"),  # Monday, from the ICS file (two days, end exclusive)
        ("2027-01-05", "Inventory"),
        ("2027-01-06", None),
        ("2027-01-07", None),
        ("2027-01-08", "closed"),
        ("2027-01-09", "Stocktake"),  # a Saturday: open in a Sunday-only weekend, but closed
        ("2027-01-10", "weekend"),
    ]


async def test_users_see_only_their_calendars_and_admins_see_all(service: Service) -> None:
    await service.calendars.create(ALICE, name="work")
    await service.calendars.create(BOB, name="work", weekend=[5, 6])  # same name, other user
    assert [c.user_id for c in await service.calendars.listing(ALICE)] == ["alice"]
    assert {c.user_id for c in await service.calendars.listing(ADMIN)} == {"alice", "bob"}
    assert (await service.calendars.get(BOB, "work")).weekend == [5, 6]
    with pytest.raises(NotFoundError):
        await service.calendars.get(BOB, "work", user_id="alice")
    with pytest.raises(NotFoundError):
        await service.calendars.delete(BOB, "work", user_id="alice")
    assert (await service.calendars.get(ADMIN, "work", user_id="alice")).weekend == [6, 7]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"holidays": {"country": "XX"}}, "holidays.country"),
        ({"holidays": {"country": "DE", "subdivision": "ZZ"}}, "holidays.subdivision"),
        ({"holidays": {"subdivision": "BY"}}, "holidays.subdivision"),
        ({"ics": "BEGIN:VCALENDAR\r\nthis is not ics"}, "ics"),
        ({"weekend": [1, 2, 3, 4, 5, 6, 7]}, "weekend"),
        ({"weekend": [0]}, "weekend"),
        ({"dates": ["2027-02-30"]}, "dates"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"holidays": {"country": "DE", "colour": "red"}}, "holidays.colour"),
    ],
)
async def test_bad_definitions_are_refused_naming_the_field_and_write_nothing(
    service: Service, database: Database, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await service.calendars.create(ALICE, name="bad", **fields)  # type: ignore[arg-type]
    assert refused.value.data["field"] == field
    assert await stored(database) == 0


async def test_names_are_unique_per_user(service: Service, database: Database) -> None:
    await service.calendars.create(ALICE, name="work")
    with pytest.raises(ValidationError) as refused:
        await service.calendars.create(ALICE, name="work")
    assert refused.value.data["field"] == "name"
    assert await stored(database) == 1


async def test_an_update_replaces_what_it_names_and_bumps_the_version(service: Service) -> None:
    created = await service.calendars.create(ALICE, name="work", dates=["2027-03-01"])
    changed = await service.calendars.update(ALICE, "work", {"weekend": [5, 6]})
    assert (changed.version, changed.weekend, changed.dates) == (
        created.version + 1,
        [5, 6],
        [{"date": "2027-03-01", "reason": "closed"}],
    )
    with pytest.raises(ValidationError) as refused:
        await service.calendars.update(ALICE, "work", {"weekend": [1, 2, 3, 4, 5, 6, 7]})
    assert refused.value.data["field"] == "weekend"
    assert (await service.calendars.get(ALICE, "work")).weekend == [5, 6]


async def test_a_calendar_a_schedule_names_is_not_deleted(
    service: Service, database: Database
) -> None:
    await service.calendars.create(ALICE, name="work")
    spec = {"name": "report", "params": {"executor_id": "echo_executor"}}
    (task,) = await service.tasks.create(ALICE, [spec], batch=False)
    async with database.transaction(write=True) as session:
        await session.execute(
            update(Task).where(Task.id == task.id).values(schedule_calendar="work")
        )
    with pytest.raises(ValidationError) as refused:
        await service.calendars.delete(ALICE, "work")
    assert refused.value.data["field"] == "name" and task.id in refused.value.message
    assert await stored(database) == 1
    async with database.transaction(write=True) as session:
        await session.execute(update(Task).where(Task.id == task.id).values(schedule_calendar=None))
    await service.calendars.delete(ALICE, "work")
    assert await stored(database) == 0


async def test_days_are_bounded(service: Service) -> None:
    await service.calendars.create(ALICE, name="work")
    with pytest.raises(ValidationError) as refused:
        await service.calendars.days(ALICE, "work", "2020-01-01", "2040-01-01")
    assert refused.value.data["field"] == "end"
    with pytest.raises(ValidationError) as refused:
        await service.calendars.days(ALICE, "work", "yesterday", "2040-01-01")
    assert refused.value.data["field"] == "start"


# ---------------------------------------------------------------------- schedules follow them


async def scheduled(service: Service, caller: Principal, **fields: object) -> str:
    spec = {
        "name": "report",
        "params": {"executor_id": "echo_executor"},
        "schedule_type": "daily",
        "schedule_expression": "09:00",
        "schedule_timezone": "Europe/Berlin",
        "schedule_enabled": True,
        **fields,
    }
    (task,) = await service.tasks.create(caller, [spec], batch=False)
    return str(task.id)


async def fires(service: Service, task_id: str, after: str, count: int = 8) -> list[str]:
    found = await service.schedules.preview(ALICE, task_id=task_id, count=count, after=after)
    return [fire.astimezone(ZoneInfo("Europe/Berlin")).strftime("%a %m-%d %H:%M") for fire in found]


async def test_next_business_day_moves_holidays_and_weekends_and_fires_once(
    service: Service,
) -> None:
    await service.calendars.create(
        ALICE, name="munich", holidays={"country": "DE", "subdivision": "BY"}
    )
    task_id = await scheduled(
        service, ALICE, schedule_calendar="munich", schedule_calendar_rule="next_business_day"
    )
    # Whit Monday (2 June 2031) moves to Tuesday and meets Tuesday's own 09:00: one fire; the
    # weekend of 7-8 June moves to Monday 9 June (one fire); Corpus Christi (Thursday 12 June)
    # moves to Friday 13 June, which has its own.
    assert await fires(service, task_id, "2031-05-31T12:00:00Z") == [
        "Tue 06-03 09:00",
        "Wed 06-04 09:00",
        "Thu 06-05 09:00",
        "Fri 06-06 09:00",
        "Mon 06-09 09:00",
        "Tue 06-10 09:00",
        "Wed 06-11 09:00",
        "Fri 06-13 09:00",
    ]


async def test_skip_keeps_the_occurrences_and_names_the_closed_day(service: Service) -> None:
    await service.calendars.create(
        ALICE, name="munich", holidays={"country": "DE", "subdivision": "BY"}
    )
    task_id = await scheduled(service, ALICE, schedule_calendar="munich")
    times = await service.schedules.preview(
        ALICE, task_id=task_id, count=3, after="2031-06-01T12:00:00Z"
    )
    holds = await service.schedules.preview_holds(ALICE, task_id, times)
    bavaria = holidays.country_holidays("DE", subdiv="BY", years=2031)
    assert holds == [bavaria[date(2031, 6, 2)], None, None]


async def test_business_day_expressions_count_in_the_calendar(service: Service) -> None:
    await service.calendars.create(
        ALICE, name="munich", holidays={"country": "DE", "subdivision": "BY"}
    )
    first = await scheduled(
        service, ALICE, schedule_type="monthly", schedule_expression="BD1 09:00",
        schedule_calendar="munich",
    )  # fmt: skip
    last = await scheduled(
        service, ALICE, schedule_type="monthly", schedule_expression="BDL 17:00",
        schedule_calendar="munich",
    )  # fmt: skip
    # January 2028: the 1st is a Saturday, the 3rd the first business day; 6 January
    # (Epiphany) is closed in Bavaria. The last business day of April 2028 is Friday the 28th.
    assert await fires(service, first, "2027-12-31T12:00:00Z", 2) == [
        "Mon 01-03 09:00",
        "Tue 02-01 09:00",
    ]
    assert (await fires(service, last, "2028-04-01T00:00:00Z", 1)) == ["Fri 04-28 17:00"]
    with pytest.raises(ValidationError) as refused:
        await scheduled(service, ALICE, schedule_type="monthly", schedule_expression="BD1 09:00")
    assert refused.value.data["field"] == "schedule_expression"


async def test_a_schedule_can_only_name_a_calendar_of_its_user(
    service: Service, database: Database
) -> None:
    await service.calendars.create(BOB, name="bobs")
    with pytest.raises(ValidationError) as refused:
        await scheduled(service, ALICE, schedule_calendar="bobs")
    assert refused.value.data["field"] == "schedule_calendar"
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Task)) == 0


async def test_changing_a_calendar_moves_the_schedules_that_follow_it(service: Service) -> None:
    await service.calendars.create(ALICE, name="work")
    task_id = await scheduled(
        service, ALICE, schedule_calendar="work", schedule_calendar_rule="next_business_day"
    )
    waiting = (await service.tasks.get(ALICE, task_id)).next_run_at
    assert waiting is not None
    day = waiting.astimezone(ZoneInfo("Europe/Berlin")).date()
    await service.calendars.update(ALICE, "work", {"dates": [day.isoformat()]})
    moved = (await service.tasks.get(ALICE, task_id)).next_run_at
    assert moved is not None and moved.astimezone(ZoneInfo("Europe/Berlin")).date() > day
    with pytest.raises(ValidationError):
        await service.calendars.delete(ALICE, "work")


async def test_a_scheduler_records_a_closed_day_skipped_with_its_name(
    service: Service, database: Database, tmp_path: Path
) -> None:
    """A scheduler in its own OS process: every occurrence of an interval schedule today
    falls on a day the calendar closes ("Audit day"), and each is recorded skipped with that
    reason."""
    today = datetime.now(ZoneInfo("UTC")).date()
    await service.calendars.create(
        ALICE,
        name="audit",
        weekend=[],
        dates=[
            {"date": (today + timedelta(days=offset)).isoformat(), "reason": "Audit day"}
            for offset in (-1, 0, 1)
        ],
    )
    task_id = await scheduled(
        service, ALICE, schedule_type="interval", schedule_expression="1",
        schedule_timezone="UTC", schedule_calendar="audit",
    )  # fmt: skip
    process = spawn(database.url, tmp_path / "journal", "--poll", "0.2")
    try:
        deadline = asyncio.get_running_loop().time() + 15
        runs: list[TaskRun] = []
        while asyncio.get_running_loop().time() < deadline and len(runs) < 2:
            await asyncio.sleep(0.2)
            runs = list((await service.runs.list_runs(ALICE, task_id=task_id)).items)
    finally:
        errors = stop(process)
    assert "Traceback" not in errors, errors
    assert len(runs) >= 2
    assert {(run.status, run.reason) for run in runs} == {("skipped", "Audit day")}


@pytest.mark.parametrize("rule", ["skip", "next_business_day", "previous_business_day"])
async def test_the_calendar_feed_expands_to_the_fire_times_that_run(
    service: Service, rule: str
) -> None:
    """The iCal feed, read by recurring_ical_events, shows exactly the occurrences that run:
    the preview's, less the ones its calendar skips (EXDATE or left out)."""
    await service.calendars.create(
        ALICE, name="munich", holidays={"country": "DE", "subdivision": "BY"}
    )
    await scheduled(service, ALICE, schedule_calendar="munich", schedule_calendar_rule=rule)
    [task] = (await service.schedules.list_scheduled(ALICE)).items
    text, _ = await service.schedules.export_ical(ALICE)
    now = datetime.now(UTC)
    end = now + timedelta(days=40)
    preview = await service.schedules.preview(ALICE, task_id=task.id, count=60, after=now)
    holds = await service.schedules.preview_holds(ALICE, task.id, preview)
    running = [fire for fire, hold in zip(preview, holds, strict=True) if hold is None]
    expanded = sorted(
        occurrence["DTSTART"].dt.astimezone(UTC)
        for occurrence in recurring_ical_events.of(Calendar.from_ical(text)).between(now, end)
        if str(occurrence.get("UID", "")).startswith(task.id)
    )
    assert expanded == [fire for fire in running if fire < end]
    assert len(expanded) >= 20  # about 27 business days in 40


async def test_a_scheduler_fires_a_moved_occurrence_once_at_its_moved_instant(
    service: Service, database: Database, tmp_path: Path
) -> None:
    """A scheduler in its own OS process: a `once` occurrence a few seconds from now falls on
    a closed day and previous_business_day moves it to yesterday at the same time; it is due
    at once and runs exactly once, recorded at the moved instant (the default misfire policy
    runs one late occurrence)."""
    now = datetime.now(UTC).replace(microsecond=0)
    when = now + timedelta(seconds=3)
    await service.calendars.create(
        ALICE, name="today-off", weekend=[],
        dates=[{"date": when.date().isoformat(), "reason": "Closed today"}],
    )  # fmt: skip
    task_id = await scheduled(
        service, ALICE, schedule_type="once", schedule_expression=when.isoformat(),
        schedule_timezone="UTC", schedule_calendar="today-off",
        schedule_calendar_rule="previous_business_day",
    )  # fmt: skip
    moved = when - timedelta(days=1)
    assert (await service.tasks.get(ALICE, task_id)).next_run_at == moved
    process = spawn(database.url, tmp_path / "journal", "--poll", "0.2")
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        runs: list[TaskRun] = []
        while loop.time() < deadline and not (runs and runs[0].status == "completed"):
            await asyncio.sleep(0.2)
            runs = list((await service.runs.list_runs(ALICE, task_id=task_id)).items)
        await asyncio.sleep(4)  # past the original instant: nothing more fires
        runs = list((await service.runs.list_runs(ALICE, task_id=task_id)).items)
    finally:
        errors = stop(process)
    assert "Traceback" not in errors, errors
    assert [(run.status, run.scheduled_for) for run in runs] == [("completed", moved)]


async def test_a_draft_preview_with_a_calendar_says_to_preview_a_stored_task(
    service: Service,
) -> None:
    await service.calendars.create(ALICE, name="work")
    with pytest.raises(ValidationError) as refused:
        await service.schedules.preview(
            ALICE, schedule_type="daily", schedule_expression="09:00", schedule_calendar="work"
        )
    assert refused.value.data["field"] == "schedule_calendar"
    assert "stored task" in refused.value.message
