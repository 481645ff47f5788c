"""Fixtures for the execution tests: every test runs on SQLite and on PostgreSQL (`database`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import support
from execution_support import Harness

from apflow_server.config import Settings
from apflow_server.storage.database import Database


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=database.url)


@pytest.fixture
async def harness(database: Database, settings: Settings) -> AsyncIterator[Harness]:
    support.RECORDED.clear()
    harness = Harness(database, settings)
    try:
        yield harness
    finally:
        await harness.close()
