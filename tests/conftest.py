"""Shared fixtures: a migrated database on SQLite and on PostgreSQL for every storage test.

PostgreSQL tests create their own database (apflow_test_<random>) on the run's server
(tests/postgres_server.py: APFLOW_TEST_POSTGRES_URL, else the local server on 5432, else a
throwaway one, else they are skipped) and drop it afterwards.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import postgres_server
import pytest
from sqlalchemy import text

from apflow_server.storage.database import Database
from apflow_server.storage.models import Base


def pytest_configure(config: pytest.Config) -> None:
    """Find or start the PostgreSQL server of this run (tests/postgres_server.py), once: a
    pytest-xdist worker inherits the choice through the environment."""
    if hasattr(config, "workerinput"):
        return
    try:
        decision = postgres_server.decide()
    except postgres_server.NoPostgres as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[_POSTGRES] = decision
    if decision.url is not None:
        os.environ[postgres_server.URL_VARIABLE] = decision.url
    else:
        os.environ[postgres_server.MISSING_VARIABLE] = decision.description
    if decision.throwaway is not None:
        os.environ[postgres_server.DATA_VARIABLE] = str(decision.throwaway.data)


_POSTGRES_FIXTURES = {
    "postgres_url",
    "fresh_postgres_url",
    "migrated_postgres_url",
    "postgres_alone",
}


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec is not None else ():
        # The databases' parameter ("postgresql"), or a fixture's name ("migrated_postgres_url").
        if isinstance(value, str) and (value == "postgresql" or value in _POSTGRES_FIXTURES):
            return True
    if item.get_closest_marker("postgres") or item.get_closest_marker("restarts_postgres"):
        return True
    return bool(_POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a PostgreSQL server, its tests are deselected (the summary's last line says
    why and how to run them), not reported one by one as skipped."""
    if not os.environ.get(postgres_server.MISSING_VARIABLE):
        return
    kept = [item for item in items if not _needs_postgres(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if _needs_postgres(item)])
        items[:] = kept


def pytest_unconfigure(config: pytest.Config) -> None:
    decision = config.stash.get(_POSTGRES, None)
    if decision is not None and decision.throwaway is not None:
        decision.throwaway.stop()


def pytest_report_header(config: pytest.Config) -> str | None:
    decision = config.stash.get(_POSTGRES, None)
    return None if decision is None else decision.description


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    decision = terminalreporter.config.stash.get(_POSTGRES, None)
    if decision is not None and decision.url is None:
        terminalreporter.write_line(decision.description)


_POSTGRES = pytest.StashKey[postgres_server.Decision]()


def _server_url(database: str) -> str:
    return postgres_server.database_url(database)


async def _create_pg_database() -> str:
    return await postgres_server.create_database("apflow_test")


async def _drop_pg_database(name: str) -> None:
    await postgres_server.drop_database(name)


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
