"""Shared fixtures: a migrated database on SQLite and on PostgreSQL for every storage test.

PostgreSQL tests create their own database (apflow_test_<random>) on the server named by
APFLOW_TEST_POSTGRES_URL (default: the local server, user postgres) and drop it afterwards.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from apflow_server.storage.database import Database
from apflow_server.storage.models import Base

ADMIN_URL = os.environ.get(
    "APFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _server_url(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _create_pg_database() -> str:
    name = f"apflow_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def _drop_pg_database(name: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    database = Database(url)
    try:
        await database.upgrade()
    finally:
        await database.dispose()


# One test restarts the PostgreSQL server every test shares (reliability/
# test_postgres_restart.py). Under pytest-xdist, and when two test runs share a machine, the
# other tests must not be running then. Every other test holds a shared lock while it runs;
# the restart test takes it exclusively. A turnstile gives the exclusive taker precedence:
# once it waits, no test starts, and the ones running finish first.
_LOCKS = Path(tempfile.gettempdir()) / f"apflow-tests-{os.getuid()}"


def _lock_file(name: str) -> int:
    _LOCKS.mkdir(exist_ok=True)
    return os.open(_LOCKS / name, os.O_RDWR | os.O_CREAT, 0o600)


@pytest.fixture(autouse=True)
def _shared_postgres(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("restarts_postgres"):
        yield
        return
    turnstile, server = _lock_file("turnstile"), _lock_file("server")
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(server, fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield
    finally:
        os.close(server)  # releases its lock
        os.close(turnstile)


@pytest.fixture
def postgres_alone() -> Iterator[None]:
    """Wait until no other test runs, and keep them waiting: for a test that restarts the
    shared PostgreSQL server."""
    turnstile, server = _lock_file("turnstile"), _lock_file("server")
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(server, fcntl.LOCK_EX)
        yield
    finally:
        os.close(server)
        os.close(turnstile)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database for the whole session (tables emptied per test)."""
    name = asyncio.run(_create_pg_database())
    url = _server_url(name)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_drop_pg_database(name))


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """An empty PostgreSQL database of its own (no schema), for migration and process tests."""
    name = asyncio.run(_create_pg_database())
    yield _server_url(name)
    asyncio.run(_drop_pg_database(name))


@pytest.fixture
def migrated_postgres_url(fresh_postgres_url: str) -> str:
    """A PostgreSQL database of its own, migrated: for tests with several processes."""
    asyncio.run(_migrate(fresh_postgres_url))
    return fresh_postgres_url


@pytest.fixture
def migrated_sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite file of its own: for tests with several processes."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    asyncio.run(_migrate(url))
    return url


async def _empty_tables(database: Database) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    async with database.connect() as connection:
        async with connection.begin():
            await connection.execute(text(f"TRUNCATE {tables} CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'apflow.db'}"
        asyncio.run(_migrate(url))
        return url
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    if not db.is_sqlite:
        await _empty_tables(db)
    yield db
    await db.dispose()
