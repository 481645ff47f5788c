"""Telling schedulers that a schedule changed, so they wake instead of sleeping it out.

In one process, listeners are called directly. Across processes on PostgreSQL, a NOTIFY on
CHANNEL is sent inside the writing transaction, so it is delivered exactly when (and only if)
the change commits; schedulers LISTEN on it. SQLite has no such channel: schedulers there rely
on their poll_interval for changes made by other processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from apflow_server.storage.database import Database

CHANNEL = "apflow_schedule"

_listeners: set[Callable[[], None]] = set()


def subscribe(listener: Callable[[], None]) -> None:
    _listeners.add(listener)


def unsubscribe(listener: Callable[[], None]) -> None:
    _listeners.discard(listener)


def wake_local() -> None:
    for listener in list(_listeners):
        listener()


async def notify_in_transaction(session: AsyncSession) -> None:
    """Queue a cross-process wake-up that fires when the current transaction commits."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text(f"NOTIFY {CHANNEL}"))


@asynccontextmanager
async def schedule_write(database: Database) -> AsyncIterator[AsyncSession]:
    """A write transaction that may change what is due: schedulers wake when it commits."""
    async with database.transaction(write=True) as session:
        yield session
        await notify_in_transaction(session)
    wake_local()
