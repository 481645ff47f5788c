"""Overload: for a minute, more work comes due than max_concurrent allows.

Memory must stay bounded, the overlap and misfire policies must settle what cannot run (every
occurrence still ends as exactly one history row), and the backlog must drain afterwards.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from processes import spawn, stop
from sqlalchemy import func, select

from apflow_server.config import Settings
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskRepository, due_filter

SECONDS = 60
TASKS = 40
SLOTS = 10


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_minute_of_overload(
    migrated_postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APFLOW_MISFIRE_GRACE_SECONDS", "3")
    journal = tmp_path / "journal.txt"
    journal.touch()
    database = Database(migrated_postgres_url)
    repo = TaskRepository(
        database, settings=Settings(home=tmp_path, database_url=migrated_postgres_url)
    )
    start = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    end = start + timedelta(seconds=SECONDS)
    for index in range(TASKS):
        await repo.create_task(
            name=f"busy-{index}",
            params={"executor_id": "test_journal"},
            inputs={"seconds": 1.5},  # longer than the one-second interval: overlaps
            schedule_type="interval",
            schedule_expression="1s",
            schedule_start_at=start.isoformat(),
            schedule_end_at=end.isoformat(),
            schedule_enabled=True,
        )
    scheduler = spawn(
        migrated_postgres_url, journal, "--poll", "60", "--max-concurrent", str(SLOTS)
    )
    samples: list[int] = []
    try:
        for _ in range((SECONDS + 3) // 5):
            await asyncio.sleep(5)
            samples.append(rss_kib(scheduler.pid))
        drained_after = None
        for second in range(30):
            async with database.transaction() as session:
                backlog = await session.scalar(
                    due_filter(select(func.count()).select_from(Task), datetime.now(UTC), None)
                )
                running = await session.scalar(
                    select(func.count()).select_from(TaskRun).where(TaskRun.status == "running")
                )
            if backlog == 0 and running == 0:
                drained_after = second
                break
            await asyncio.sleep(1)
    finally:
        errors = stop(scheduler)

    async with database.transaction() as session:
        rows = list(await session.scalars(select(TaskRun)))
    await database.dispose()

    assert drained_after is not None, "the backlog never drained"
    warm = samples[2]  # after ten seconds of load
    assert max(samples) <= warm * 1.5 + 20_000, f"memory grew: {samples} KiB"
    history = Counter((row.task_id, row.scheduled_for) for row in rows)
    assert max(history.values()) == 1
    assert len(history) == TASKS * (SECONDS + 1), "an occurrence was lost"
    statuses = Counter(row.status for row in rows)
    assert statuses["skipped"] > 0 and statuses["missed"] > 0, statuses
    # Ten slots and 1.5 s runs: at most about 10 / 1.5 runs a second could complete.
    assert statuses["completed"] <= SLOTS / 1.5 * (SECONDS + 5), statuses
    executions = Counter(tuple(line.split()[:2]) for line in journal.read_text().splitlines())
    assert max(executions.values()) == 1
    assert "Traceback" not in errors
