"""Wake a scheduler when another process changes the schedules, instead of letting it sleep
until its poll_interval runs out: LISTEN on PostgreSQL, watching the file on SQLite."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from apflow_server.storage.database import Database
from apflow_server.storage.postgres_url import postgres_target
from apflow_server.storage.signals import CHANNEL

logger = logging.getLogger(__name__)

# How often a process that cannot LISTEN looks for other processes' changes at least.
UNWATCHED_POLL_SECONDS = 5.0


def asyncpg_dsn(url: str) -> str:
    """A DSN that asyncpg opens by itself for a database URL, its libpq SSL options kept
    (connect_timeout and the startup options need `PostgresTarget.connect_args`)."""
    return postgres_target(make_url(url)).asyncpg_dsn()


class ScheduleListener:
    """Keeps one LISTEN connection open, reconnecting with backoff when it drops."""

    def __init__(self, url: str, on_change: Callable[[], None]) -> None:
        # The URL's libpq options, as the pooled connections get them (storage.postgres_url).
        self.dsn, self.connect_args = postgres_target(make_url(url)).own_connection()
        self.on_change = on_change
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="apflow-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        delay = 0.5
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(self.dsn, **self.connect_args)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, lambda *_args: self.on_change())
                delay = 0.5
                self.on_change()  # changes made while we were not listening
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("schedule listener: %s; retrying in %.1f s", exc, delay)
            finally:
                if connection is not None and not connection.is_closed():
                    await connection.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)


class SqliteFileWatcher:
    """Watches an SQLite database for commits made by other processes (SQLite has no
    notifications): a commit changes the size or modification time of the database file or its
    write-ahead log. Checked every `interval` seconds, a stat of two files each time; our own
    commits wake the scheduler too, which costs it one extra look at what is due."""

    def __init__(self, path: str, on_change: Callable[[], None], interval: float = 1.0) -> None:
        self.paths = (path, f"{path}-wal")
        self.on_change = on_change
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="apflow-sqlite-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def signature(self) -> tuple[tuple[int, int], ...]:
        found = []
        for path in self.paths:
            try:
                status = os.stat(path)
            except OSError:
                found.append((0, 0))
            else:
                found.append((status.st_size, status.st_mtime_ns))
        return tuple(found)

    async def _run(self) -> None:
        last = self.signature()
        while True:
            await asyncio.sleep(self.interval)
            now = self.signature()
            if now != last:
                last = now
                self.on_change()


def shares_data(database: Database) -> bool:
    """Whether another engine on the same URL sees the same data (not an in-memory SQLite)."""
    if database.dialect == "postgresql":
        return True
    path = make_url(database.url).database
    return bool(path) and path != ":memory:" and not str(path).startswith("file:")


def change_listener(
    database: Database, on_change: Callable[[], None]
) -> ScheduleListener | SqliteFileWatcher | None:
    """What tells this process that another one changed something (schedules, run ownership,
    the notification outbox): LISTEN on PostgreSQL, a watch of the file on SQLite. None: no
    other process shares the data, or (behind a transaction pooler without a listen URL)
    nothing can tell; the caller then polls (UNWATCHED_POLL_SECONDS)."""
    if database.dialect == "postgresql":
        # Behind a transaction pooler LISTEN would hold whichever server connection the
        # pooler lent for one transaction: only a direct connection can listen.
        url = database.listen_url or (None if database.pooler == "transaction" else database.url)
        return None if url is None else ScheduleListener(url, on_change)
    if shares_data(database):
        return SqliteFileWatcher(str(make_url(database.url).database), on_change)
    return None
