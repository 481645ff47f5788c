"""Fixtures for the `apflow` CLI tests: the CLI in-process on SQLite and PostgreSQL, and the
real executable in a subprocess."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import CLEARED, Cli, Process

from apflow_server.storage.database import Database
from apflow_server.storage.models import Base


async def _empty_tables(url: str) -> None:
    database = Database(url)
    try:
        async with database.connect() as connection:
            async with connection.begin():
                for table in reversed(Base.metadata.sorted_tables):  # children first
                    await connection.execute(table.delete())
    finally:
        await database.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """The CLI on a fresh SQLite file (migrated by the CLI itself) or on the session's
    migrated PostgreSQL database (emptied)."""
    if request.param == "sqlite":
        return Cli(f"sqlite+aiosqlite:///{tmp_path / 'apflow.db'}", tmp_path)
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(_empty_tables(url))
    return Cli(url, tmp_path)


@pytest.fixture
def process(tmp_path: Path) -> Iterator[Process]:
    """Subprocesses with a temporary APFLOW_HOME and no APFLOW_DATABASE_URL: the embedded
    SQLite default (APFLOW_HOME/apflow.db)."""
    env = {name: value for name, value in os.environ.items() if name not in CLEARED}
    env["APFLOW_HOME"] = str(tmp_path / "home")
    yield Process(env)
