"""Fixtures for the HTTP tests: the Starlette app under starlette's TestClient (its lifespan
running), on SQLite and on PostgreSQL. The machinery is in api_harness.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_harness import Service, ServiceFactory, empty_tables, service_factory

from apflow_server.scheduler.gateway.hooks import unregister_webhook_verify_hook


@pytest.fixture
def db_url(database_url: str) -> str:
    """A migrated, empty database: a fresh SQLite file, or the session's PostgreSQL database
    emptied for this test."""
    if not database_url.startswith("sqlite"):
        asyncio.run(empty_tables(database_url))
    return database_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For the tests about the protocol rather than storage: a SQLite file (the app migrates
    it at start)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'protocol.db'}"


@pytest.fixture
def make_service(db_url: str, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Builds apps on the test's database (SQLite and PostgreSQL), torn down after the test."""
    yield from service_factory(db_url, tmp_path)


@pytest.fixture
def make_protocol_service(sqlite_url: str, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Builds apps on a SQLite file only."""
    yield from service_factory(sqlite_url, tmp_path)


@pytest.fixture
def service(make_service: ServiceFactory) -> Service:
    """Auth off, scheduler running."""
    return make_service()


@pytest.fixture(autouse=True)
def _no_hook_left() -> Iterator[None]:
    unregister_webhook_verify_hook()
    yield
    unregister_webhook_verify_hook()
