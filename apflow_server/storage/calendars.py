"""Business calendars: persistence only (what a calendar closes is decided in
schedules/calendars.py; who may read or change one, in service/calendars.py)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from apflow_server.core.errors import ValidationError
from apflow_server.core.types import ScheduleType
from apflow_server.schedules.calendars import BusinessCalendar as ClosedDays
from apflow_server.schedules.calendars import build_calendar
from apflow_server.schedules.plan import fire_after, schedule_of, set_next_run
from apflow_server.storage.batches import update_rows
from apflow_server.storage.database import Database
from apflow_server.storage.models import TASKS, BusinessCalendar, Task
from apflow_server.storage.signals import schedule_write


def new_calendar_id() -> str:
    return "cal_" + secrets.token_hex(8)


async def create(database: Database, calendar: BusinessCalendar) -> bool:
    """Insert it; False when the user already has a calendar of that name."""
    async with database.transaction(write=True) as session:
        taken = await session.scalar(
            select(BusinessCalendar.id).where(
                BusinessCalendar.user_id.is_(None)
                if calendar.user_id is None
                else BusinessCalendar.user_id == calendar.user_id,
                BusinessCalendar.name == calendar.name,
            )
        )
        if taken is not None:
            return False
        session.add(calendar)
        return True


async def count_of(database: Database, user_id: str | None) -> int:
    async with database.transaction() as session:
        query = select(func.count()).select_from(BusinessCalendar)
        query = query.where(_owned_by(user_id))
        return int(await session.scalar(query) or 0)


async def get(database: Database, user_id: str | None, name: str) -> BusinessCalendar | None:
    async with database.transaction() as session:
        return await session.scalar(
            select(BusinessCalendar).where(_owned_by(user_id), BusinessCalendar.name == name)
        )


async def listing(database: Database, user_id: str | None, *, everyone: bool) -> list[Any]:
    """One user's calendars by name (every user's when `everyone`)."""
    async with database.transaction() as session:
        query = select(BusinessCalendar).order_by(BusinessCalendar.user_id, BusinessCalendar.name)
        if not everyone:
            query = query.where(_owned_by(user_id))
        return list(await session.scalars(query))


@dataclass
class _Schedule:
    """The columns of a task row its schedule math reads and `set_next_run` writes."""

    id: str
    user_id: str | None
    schedule_type: str | None
    schedule_expression: str | None
    schedule_timezone: str
    schedule_start_at: datetime | None
    schedule_end_at: datetime | None
    schedule_anchor_at: datetime | None
    schedule_jitter_seconds: int
    schedule_mode: str
    trigger_grace_seconds: int | None
    schedule_calendar: str | None
    schedule_calendar_rule: str | None
    max_runs: int | None
    run_count: int
    next_run_at: datetime | None
    due_at: datetime | None
    schedule_enabled: bool
    loaded_calendar: Any = None


_SCHEDULE_COLUMNS = tuple(f.name for f in fields(_Schedule) if f.name != "loaded_calendar")
_MOVED_COLUMNS = ("next_run_at", "due_at", "schedule_enabled", "updated_at")


async def update(
    database: Database, calendar_id: str, values: dict[str, Any], now: datetime
) -> tuple[BusinessCalendar, int] | None:
    """Change a calendar, bump its version and move every enabled schedule that names it to
    its next occurrence under the new days, all in one transaction (so no scheduler claims
    by the old days once the new ones are visible; the rows are locked as the claim locks
    them). Plain rows in, one batched UPDATE of the schedules that moved out: at 100,000
    schedules the ORM spent 20 s building objects and writing every row back. Returns the
    calendar and how many schedules moved."""
    async with schedule_write(database) as session:
        calendar = await session.get(BusinessCalendar, calendar_id, with_for_update=True)
        if calendar is None:
            return None
        for name, value in values.items():
            setattr(calendar, name, value)
        calendar.version += 1
        calendar.updated_at = now
        await session.flush()
        closed = closed_days(calendar)
        tasks = TASKS.c
        user = (
            tasks.user_id.is_(None)
            if calendar.user_id is None
            else tasks.user_id == calendar.user_id
        )
        query = (
            select(*(tasks[name] for name in _SCHEDULE_COLUMNS))
            .where(user, tasks.schedule_calendar == calendar.name, tasks.schedule_enabled)
            .with_for_update()
        )
        moved = []
        for row in await session.execute(query):
            task = _Schedule(*row)
            task.loaded_calendar = closed
            before = (task.next_run_at, task.due_at)
            # From the occurrence it waits for (it may be due and not yet claimed), or now.
            start = min(task.next_run_at or now, now) - timedelta(microseconds=1)
            schedule = schedule_of(task)
            if schedule.type is ScheduleType.ONCE:  # its one occurrence, wherever it moves
                set_next_run(task, schedule.first_fire(now))
            else:
                set_next_run(task, fire_after(schedule, task, start))
            if (task.next_run_at, task.due_at) != before:
                moved.append({**{name: getattr(task, name) for name in _MOVED_COLUMNS[:3]},
                              "id": task.id, "updated_at": now})  # fmt: skip
        await update_rows(session, TASKS, "id", _MOVED_COLUMNS, moved)
        return calendar, len(moved)


async def delete(database: Database, calendar_id: str) -> str | None:
    """Delete it unless a schedule names it: None when deleted, else the id of such a task.
    The calendar's row is locked first, so a schedule cannot start naming it meanwhile
    without waiting for this decision."""
    async with database.transaction(write=True) as session:
        calendar = await session.get(BusinessCalendar, calendar_id, with_for_update=True)
        if calendar is None:
            return None
        user = (
            Task.user_id.is_(None) if calendar.user_id is None else Task.user_id == calendar.user_id
        )
        using = await session.scalar(
            select(Task.id).where(user, Task.schedule_calendar == calendar.name).limit(1)
        )
        if using is not None:
            return str(using)
        await session.delete(calendar)
        return None


# What a stored calendar closes, built once per (calendar id, version): building one reads
# the `holidays` tables, and claims read calendars on every batch of due tasks. The version is
# read in the caller's transaction, so a changed calendar is never served from here.
_BUILT: dict[tuple[str, int], ClosedDays] = {}
_BUILT_MAX = 1024


def closed_days(calendar: BusinessCalendar) -> ClosedDays:
    key = (calendar.id, calendar.version)
    built = _BUILT.get(key)
    if built is None:
        built = build_calendar(
            weekend=calendar.weekend,
            country=calendar.country,
            subdivision=calendar.subdivision,
            categories=calendar.categories,
            dates=calendar.dates,
            ics=calendar.ics,
        )
        if len(_BUILT) >= _BUILT_MAX:
            _BUILT.clear()
        _BUILT[key] = built
    return built


async def load_calendar(
    session: AsyncSession, user_id: str | None, name: str | None
) -> ClosedDays | None:
    """The calendar a schedule names (None when it names none); a name the task's user has
    no calendar for is refused, naming schedule_calendar."""
    if name is None:
        return None
    row = await session.scalar(
        select(BusinessCalendar).where(_owned_by(user_id), BusinessCalendar.name == name)
    )
    if row is None:
        raise ValidationError("schedule_calendar", f"no calendar named {name!r}")
    return closed_days(row)


async def attach_calendars(session: AsyncSession, tasks: Sequence[Any]) -> None:
    """Give each task that names a calendar its closed days (`loaded_calendar`), which the
    schedule math reads: one query for all of them."""
    wanted = {(task.user_id, task.schedule_calendar) for task in tasks if task.schedule_calendar}
    if not wanted:
        return
    query = select(BusinessCalendar).where(
        or_(*(and_(_owned_by(user), BusinessCalendar.name == name) for user, name in wanted))
    )
    found = {(row.user_id, row.name): closed_days(row) for row in await session.scalars(query)}
    for task in tasks:
        if task.schedule_calendar:
            task.loaded_calendar = found.get((task.user_id, task.schedule_calendar))


def _owned_by(user_id: str | None) -> Any:
    return (
        BusinessCalendar.user_id.is_(None)
        if user_id is None
        else BusinessCalendar.user_id == user_id
    )
