"""Business calendars: persistence only (what a calendar closes is decided in
schedules/calendars.py; who may read or change one, in service/calendars.py)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from apflow_server.storage.database import Database
from apflow_server.storage.models import BusinessCalendar, Task


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


async def update(
    database: Database, calendar_id: str, values: dict[str, Any], now: datetime
) -> BusinessCalendar | None:
    """Change a calendar and bump its version, in one transaction."""
    async with database.transaction(write=True) as session:
        calendar = await session.get(BusinessCalendar, calendar_id, with_for_update=True)
        if calendar is None:
            return None
        for name, value in values.items():
            setattr(calendar, name, value)
        calendar.version += 1
        calendar.updated_at = now
        return calendar


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


def _owned_by(user_id: str | None) -> Any:
    return (
        BusinessCalendar.user_id.is_(None)
        if user_id is None
        else BusinessCalendar.user_id == user_id
    )
