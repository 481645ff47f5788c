"""LISTEN for schedule changes on PostgreSQL, so a scheduler wakes when another process changes
a schedule instead of sleeping until its poll_interval runs out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from apflow_server.storage.postgres_url import postgres_target
from apflow_server.storage.signals import CHANNEL

logger = logging.getLogger(__name__)


def asyncpg_dsn(url: str) -> str:
    """A DSN that asyncpg opens by itself for a database URL, its libpq SSL options kept
    (connect_timeout and the startup options need `PostgresTarget.connect_args`)."""
    return postgres_target(make_url(url)).asyncpg_dsn()


class ScheduleListener:
    """Keeps one LISTEN connection open, reconnecting with backoff when it drops."""

    def __init__(self, url: str, on_change: Callable[[], None]) -> None:
        # The URL's libpq options, as the pooled connections get them (storage.postgres_url).
        target = postgres_target(make_url(url))
        self.dsn = target.asyncpg_dsn()
        self.connect_args = target.connect_args()
        self.connect_args.pop("dsn", None)  # its SSL options are in self.dsn
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
