"""PostgreSQL restarts under a running server: it keeps answering /healthz, its scheduler
backs off and resumes, nothing runs twice and nothing crashes.

This restarts the server the tests use (the run's throwaway one with `pg_ctl restart`, else
the local cluster with `pg_ctlcluster ... restart`) and runs alone: tests run in parallel
(pytest-xdist), and a browser test whose server lost its database mid-page failed when they
overlapped (tests/conftest.py holds the others back).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import postgres_server
import pytest
from api_support import SERVER_SCRIPT, free_port, server_env
from postgres_server import Throwaway
from sqlalchemy import select

from apflow_server.config import Settings
from apflow_server.storage.database import Database
from apflow_server.storage.models import TaskRun
from apflow_server.storage.repository import TaskRepository

SERVER = SERVER_SCRIPT


def _throwaway() -> Throwaway | None:
    """The run's own server (tests/postgres_server.py), when it started one."""
    data = os.environ.get(postgres_server.DATA_VARIABLE)
    programs = postgres_server.program_folder()
    url = os.environ.get(postgres_server.URL_VARIABLE, "")
    if not data or programs is None:
        return None
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return Throwaway(programs, Path(data), port, "postgres" if os.geteuid() == 0 else None)


_CLUSTER = shutil.which("pg_ctlcluster") is not None and Path("/etc/postgresql").is_dir()

pytestmark = [
    pytest.mark.skipif(
        _throwaway() is None and not _CLUSTER,
        reason="needs the run's throwaway PostgreSQL or a local cluster managed by pg_ctlcluster",
    ),
    # Every other test (of this run, and of any other on this machine) waits meanwhile.
    pytest.mark.restarts_postgres,
    pytest.mark.usefixtures("postgres_alone"),
]


def restart_postgres() -> None:
    """Restart the server the tests use: the run's throwaway one, else the local cluster."""
    throwaway = _throwaway()
    if throwaway is not None:
        throwaway.restart()
        return
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def test_server_survives_a_postgres_restart(
    migrated_postgres_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.txt"
    journal.touch()
    port = free_port()
    # server_env puts tests/ on the child's path: server_process.py imports the test executors.
    env = server_env(
        tmp_path,
        APFLOW_DATABASE_URL=migrated_postgres_url,
        APFLOW_TEST_JOURNAL=str(journal),
        APFLOW_LEASE_SECONDS="10",
    )
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    database = Database(migrated_postgres_url)
    health_failures: list[str] = []
    stop_probe = asyncio.Event()

    async def probe() -> int:
        checks = 0
        async with httpx.AsyncClient(timeout=2) as client:
            while not stop_probe.is_set():
                try:
                    response = await client.get(f"{base}/healthz")
                    if response.status_code != 200:
                        health_failures.append(f"HTTP {response.status_code}")
                except httpx.HTTPError as exc:
                    health_failures.append(type(exc).__name__)
                checks += 1
                await asyncio.sleep(0.2)
        return checks

    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(100):
                try:
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        repo = TaskRepository(
            database, settings=Settings(home=tmp_path, database_url=migrated_postgres_url)
        )
        start = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
        for index in range(10):
            await repo.create_task(
                name=f"tick-{index}",
                params={"executor_id": "test_journal"},
                schedule_type="interval",
                schedule_expression="1s",
                schedule_start_at=start.isoformat(),
                schedule_enabled=True,
            )
        await database.dispose()
        prober = asyncio.create_task(probe())
        await asyncio.sleep(4)
        restarted_at = datetime.now(UTC)
        await asyncio.to_thread(restart_postgres)
        await asyncio.sleep(10)  # the scheduler backs off, then resumes
        stop_probe.set()
        checks = await prober
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()

    assert server.returncode == 0, stderr[-2000:]
    assert checks > 50 and health_failures == [], health_failures
    assert "Traceback" not in stderr, stderr[-3000:]
    async with database.transaction() as session:
        rows = list(await session.scalars(select(TaskRun)))
    await database.dispose()
    after = [row for row in rows if row.status == "completed" and row.started_at > restarted_at]
    assert len(after) >= 30, "the scheduler did not resume after the restart"
    assert max(Counter((row.task_id, row.scheduled_for) for row in rows).values()) == 1
    executions = Counter(tuple(line.split()[:2]) for line in journal.read_text().splitlines())
    assert max(executions.values()) == 1, "an occurrence ran twice"
