"""Fixtures for the execution tests: every test runs on SQLite and on PostgreSQL (`database`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).resolve().parent.parent)
if TESTS_DIR not in sys.path:  # `import support` works however pytest was started
    sys.path.insert(0, TESTS_DIR)

import support  # noqa: E402  (registers the test_* executors)
from execution_support import Harness  # noqa: E402

from apflow_server.config import Settings  # noqa: E402
from apflow_server.storage.database import Database  # noqa: E402


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
