"""Business calendars through the service on both databases: who sees which calendar, the
days a calendar closes and why, changes that bump the version, refusals that write nothing,
and a calendar a schedule names that cannot be deleted."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import holidays
import pytest
from sqlalchemy import func, select, update

from apflow_server.config import Settings
from apflow_server.core.errors import NotFoundError, ValidationError
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import BusinessCalendar, Task
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
