"""Behind a real PgBouncer in transaction pooling (tests/pgbouncer_server.py): with
APFLOW_DATABASE_POOLER=transaction the CLI migrates and two scheduler processes fire every
occurrence exactly once; without it, or with statement pooling, or with a listen URL that does
not answer, one line says what is wrong."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import postgres_server
import pytest
import support  # noqa: F401  (registers the test executors)
from pgbouncer_server import pgbouncer, through
from processes import spawn, stop
from sqlalchemy import text

from apflow_server.config import Settings
from apflow_server.service import Service
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository

pytestmark = pytest.mark.postgres
APFLOW = str(Path(sys.executable).parent / "apflow")
TASKS = 200


def apflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("APFLOW_")}
    return subprocess.run(
        [APFLOW, *args], env={**environment, **env}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def database_name() -> object:
    name = asyncio.run(postgres_server.create_database("apflow_pooler"))
    yield name
    asyncio.run(postgres_server.drop_database(name))


def test_through_pgbouncer_migrate_and_fire_exactly_once(
    database_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = postgres_server.database_url(database_name)
    with pgbouncer() as pooler:
        url = through(pooler, database_name)
        # What a deployment meets first: the start-up parameter PgBouncer refuses, named,
        # with the setting that fixes it.
        refused = apflow("db", "upgrade", APFLOW_DATABASE_URL=url, APFLOW_HOME=str(tmp_path))
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "unsupported startup parameter: jit" in refused.stderr
        assert "APFLOW_DATABASE_POOLER=transaction" in refused.stderr
        pooled = {"APFLOW_DATABASE_URL": url, "APFLOW_DATABASE_POOLER": "transaction"}
        migrated = apflow("db", "upgrade", **pooled, APFLOW_HOME=str(tmp_path))
        assert migrated.returncode == 0, migrated.stderr
        journal = tmp_path / "journal.txt"
        journal.touch()
        monkeypatch.setenv("APFLOW_DATABASE_POOLER", "transaction")
        # One listens on a direct connection, the other polls (no listen URL); each runs 10
        # at a time, 50 ms each, so that both take a share.
        monkeypatch.setenv("APFLOW_DATABASE_LISTEN_URL", direct)
        listening = spawn(url, journal, "--poll", "60", "--max-concurrent", "10")
        monkeypatch.delenv("APFLOW_DATABASE_LISTEN_URL")
        polling = spawn(url, journal, "--poll", "60", "--max-concurrent", "10")
        try:
            # Due after the polling one's next look (every 5 s without a listen URL).
            asyncio.run(_schedule(url, tmp_path, lead=7.0))
            counts: Counter[str] = Counter()
            for _ in range(600):
                lines = journal.read_text().splitlines()
                counts = Counter(line.split()[0] for line in lines)
                if len(counts) == TASKS:
                    break
                asyncio.run(asyncio.sleep(0.1))
            asyncio.run(asyncio.sleep(1.0))  # a duplicate would show by now
            lines = journal.read_text().splitlines()
        finally:
            errors = [stop(process) for process in (listening, polling)]
        assert not any("Traceback" in error or "ERROR" in error for error in errors), errors
        counts = Counter(line.split()[0] for line in lines)
        assert len(counts) == TASKS and set(counts.values()) == {1}, counts.most_common(3)
        pids = {line.split()[3] for line in lines}
        assert len(pids) == 2  # both processes claimed some


async def _schedule(url: str, home: Path, lead: float) -> None:
    """TASKS schedules that fire once, a moment from now."""
    database = Database(url, pooler="transaction")
    settings = Settings(home=home, database_url=url, database_pooler="transaction")
    service = Service(settings, database, TaskRepository(database, settings=settings))
    start = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    try:
        for index in range(TASKS):
            spec = {
                "name": f"pooled-{index}",
                "params": {"executor_id": "test_journal"},
                "inputs": {"seconds": 0.05},
                # Due even if making them all takes longer than that (the misfire policy runs
                # one late occurrence).
                "schedule_type": "once",
                "schedule_expression": start.isoformat(),
                "schedule_enabled": True,
            }
            await service.tasks.create(None, [spec], batch=False)
    finally:
        await database.dispose()


def test_a_pooler_mode_that_cannot_work_and_a_deaf_listen_url_are_one_line(
    tmp_path: Path,
) -> None:
    statement = apflow("tasks", "list", APFLOW_HOME=str(tmp_path),
                       APFLOW_DATABASE_POOLER="statement")  # fmt: skip
    assert statement.returncode == 1 and statement.stderr.count("\n") == 1
    assert "APFLOW_DATABASE_POOLER=statement cannot work" in statement.stderr
    nowhere = "postgresql://postgres@127.0.0.1:1/postgres"
    deaf = apflow("tasks", "list", APFLOW_HOME=str(tmp_path),
                  APFLOW_DATABASE_LISTEN_URL=nowhere)  # fmt: skip
    assert deaf.returncode == 1 and deaf.stderr.count("\n") == 1, deaf.stderr
    assert deaf.stderr.startswith("Error: cannot reach APFLOW_DATABASE_LISTEN_URL: ")


def test_under_contention_each_statement_runs_on_the_server_connection_it_was_prepared_on(
    database_name: str,
) -> None:
    """Twenty clients on two server connections: consecutive transactions of one client land
    on different server connections. A statement prepared outside a transaction used to be
    run on another one ("prepared statement ... does not exist" for a quarter of the reads),
    and named statements were left behind on the server connections (about 250 each after
    this much work). Every read and transaction answers its own question, and nothing stays
    prepared."""

    async def work(url: str) -> tuple[list[str], list[int]]:
        databases = [Database(url, pooler="transaction", pool_size=5) for _ in range(4)]
        failures: list[str] = []

        async def client(database: Database, number: int) -> None:
            for step in range(60):
                value = number * 1000 + step
                try:
                    if step % 2:
                        async with database.read() as session:
                            query = text("SELECT CAST(:v AS integer) + 1")
                            answer = (await session.execute(query, {"v": value})).scalar()
                        expected = value + 1
                    else:
                        async with database.transaction() as session:
                            query = text("SELECT CAST(:v AS integer) * 2")
                            answer = (await session.execute(query, {"v": value})).scalar()
                        expected = value * 2
                    if answer != expected:
                        failures.append(f"{answer} for {expected}")
                except Exception as exc:  # every failure is counted, not only the first
                    failures.append(f"{type(exc).__name__}: {exc}".splitlines()[0])

        try:
            await asyncio.gather(
                *(
                    client(db, 10 * index + n)
                    for index, db in enumerate(databases)
                    for n in range(5)
                )
            )
            left: list[int] = []
            for _ in range(4):
                async with databases[0].transaction() as session:
                    query = text("SELECT count(*) FROM pg_prepared_statements")
                    left.append(int((await session.execute(query)).scalar() or 0))
            return failures, left
        finally:
            for database in databases:
                await database.dispose()

    with pgbouncer(pool_size=2) as pooler:
        failures, left = asyncio.run(work(through(pooler, database_name)))
    assert failures == []
    assert left == [0, 0, 0, 0]
