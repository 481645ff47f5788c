"""Running a command's work against the database: Settings, Database and TaskRepository are
opened for one command, its coroutine runs under `asyncio.run`, and the engine is disposed."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from apflow_server.config import Settings
from apflow_server.plugins import load_plugins
from apflow_server.service import Service
from apflow_server.storage.database import Database, DatabaseError
from apflow_server.storage.repository import TaskRepository

T = TypeVar("T")

# The CLI acts as the local operator, who may do everything: the caller it passes to the
# service.
OPERATOR = None


def open_database(settings: Settings) -> Database:
    """The configured database, or a DatabaseError saying why it cannot be opened."""
    try:
        return Database.from_settings(settings)
    except ArgumentError as exc:
        raise DatabaseError(f"APFLOW_DATABASE_URL is not a database URL: {exc}") from None
    except OSError as exc:
        raise DatabaseError(f"cannot open the database: {exc}") from None


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn the driver's connection and operational errors into a one-line DatabaseError."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise DatabaseError(f"database error: {reason}") from None


async def _with_database(
    settings: Settings, work: Callable[[Database], Awaitable[T]], *, ensure_schema: bool
) -> T:
    database = open_database(settings)
    try:
        with database_errors():
            if ensure_schema:
                await database.ensure_schema()
            return await work(database)
    finally:
        await database.dispose()


def run_with_database(work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on the configured database as it is, without a schema check (`apflow db`)."""
    return asyncio.run(_with_database(Settings.from_env(), work, ensure_schema=False))


def cli_actor() -> str:
    """Who runs the CLI, as the audit log names them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container's)
        return f"cli:uid-{os.getuid()}"


def run_with_service(work: Callable[[Service], Awaitable[T]]) -> T:
    """Run `work` with the service (as the local operator: pass None as the caller) on the
        configured database, its schema ensured first: a fresh SQLite file is migrated; PostgreSQL
    must have been migrated by `apflow db upgrade`."""
    settings = Settings.from_env()
    load_plugins(settings)  # their executors: tasks are checked against them, and run here

    def with_service(database: Database) -> Awaitable[T]:
        repository = TaskRepository(database, settings=settings)
        return work(Service(settings, database, repository, local_actor=cli_actor()))

    return asyncio.run(_with_database(settings, with_service, ensure_schema=True))
