"""Shared fixtures: a migrated database on SQLite and on PostgreSQL for every storage test.

PostgreSQL tests create their own database (apflow_test_<random>) on the server named by
APFLOW_TEST_POSTGRES_URL (default: the local server, user postgres) and drop it afterwards.
"""

from __future__ import annotations

import asyncio
import os
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
