"""Chaos: scheduler processes SIGKILLed and restarted while one-second schedules fire.

No occurrence may run twice, every occurrence must end as exactly one history row (none lost),
and nothing may stay in_progress once a live scheduler has had a lease period to reclaim.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from processes import spawn, stop
from sqlalchemy import select

from apflow_server.config import Settings
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskRepository

LEASE = 3
CHAOS_SECONDS = 30


async def test_kill_and_restart_schedulers_loses_and_repeats_nothing(
    migrated_postgres_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.txt"
    journal.touch()
    database = Database(migrated_postgres_url)
    repo = TaskRepository(
        database, settings=Settings(home=tmp_path, database_url=migrated_postgres_url)
    )
    start = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    end = start + timedelta(seconds=CHAOS_SECONDS)
    ids = []
    for index in range(30):
        task = await repo.create_task(
            name=f"chaos-{index}",
            params={"executor_id": "test_journal"},
            inputs={"seconds": 0.2 if index % 3 == 0 else 0},
            schedule_type="interval",
            schedule_expression="1s",
            schedule_start_at=start.isoformat(),
            schedule_end_at=end.isoformat(),
            schedule_enabled=True,
        )
        ids.append(task.id)

    def launch() -> subprocess.Popen[str]:
        return spawn(
            migrated_postgres_url, journal, "--poll", "60", "--max-concurrent", "20", lease=LEASE
        )

    rng = random.Random(7)
    processes = [launch() for _ in range(3)]
    kills = 0
    try:
        deadline = time.monotonic() + 3 + CHAOS_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(2.0, 4.0))
            victim = rng.randrange(len(processes))
            processes[victim].send_signal(signal.SIGKILL)
            processes[victim].wait()
            kills += 1
            processes[victim] = launch()
        # Past the end bound: let a survivor reclaim every lease the killed ones left behind.
        await asyncio.sleep(2 * LEASE + 1)
    finally:
        errors = [stop(process) for process in processes]

    async with database.transaction() as session:
        rows = list(await session.scalars(select(TaskRun)))
        stuck = list(await session.scalars(select(Task).where(Task.status == "in_progress")))
        running = [row for row in rows if row.status == "running"]
    await database.dispose()

    assert kills >= 7
    executions = [line.split() for line in journal.read_text().splitlines()]
    twice = [k for k, n in Counter((t, o) for t, o, _, _ in executions).items() if n > 1]
    assert twice == [], f"occurrences executed twice: {twice[:5]}"
    assert stuck == [] and running == [], "a task or run was left in progress"
    assert max(Counter((row.task_id, row.scheduled_for) for row in rows).values()) == 1
    expected_count = CHAOS_SECONDS + 1  # start .. end inclusive, one per second
    for task_id in ids:
        occurrences = sorted(row.scheduled_for for row in rows if row.task_id == task_id)
        expected = [start + timedelta(seconds=k) for k in range(expected_count)]
        assert occurrences == expected, f"occurrences of {task_id} lost or invented"
    statuses = Counter(row.status for row in rows)
    assert set(statuses) <= {"completed", "skipped", "missed", "abandoned", "cancelled"}
    assert statuses["completed"] >= 0.7 * len(rows), statuses
    assert all("Traceback" not in err for err in errors), errors
