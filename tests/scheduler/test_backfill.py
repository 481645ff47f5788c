"""Backfill: a past period's occurrences queued and run, each exactly once with its own
scheduled_for, on SQLite and PostgreSQL; with real scheduler processes sharing the queue."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import support  # noqa: F401  (test executors)
from fixed_clock import Clock
from processes import spawn, stop
from sqlalchemy import select, update

from apflow_server.config import Settings
from apflow_server.core.errors import ForbiddenError, NotFoundError, ValidationError
from apflow_server.core.types import RunStatus
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import Backfill, TaskRun
from apflow_server.storage.repository import TaskRepository
from apflow_server.storage.runs import RunResult, RunStore

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ALICE = Principal("alice", is_admin=False, source="jwt")
BOB = Principal("bob", is_admin=False, source="jwt")


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 120 * MINUTE)


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=database.url, max_backfill_occurrences=100)


@pytest.fixture
def service(database: Database, settings: Settings, clock: Clock) -> Service:
    return Service(settings, database, TaskRepository(database, settings=settings, clock=clock))


async def minutely(service: Service, caller: Principal | None = None) -> str:
    spec = {
        "name": "job",
        "params": {"executor_id": "echo_executor"},
        "schedule_type": "cron",
        "schedule_expression": "* * * * *",
        "schedule_enabled": True,
    }
    (task,) = await service.tasks.create(caller, [spec], batch=False)
    return task.id


async def rows(database: Database, task_id: str) -> list[TaskRun]:
    async with database.transaction() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.scheduled_for)
        return list(await session.scalars(query))


async def drain(store: RunStore, status: RunStatus = RunStatus.COMPLETED, limit: int = 100):
    """Claim what the backfill queue gives and finish it; the occurrences, in claim order."""
    ran = []
    while claimed := await store.claim_backfill(limit):
        for run in claimed:
            ran.append(run.scheduled_for)
            await store.finish(run, RunResult(status))
    return ran


async def test_a_backfill_queues_each_occurrence_once_and_runs_it_with_its_instant(
    service: Service, database: Database, settings: Settings, clock: Clock
) -> None:
    task_id = await minutely(service)
    start, end = (T0 + 10 * MINUTE).isoformat(), (T0 + 20 * MINUTE).isoformat()
    dry = await service.schedules.backfill(None, task_id, start=start, end=end, dry_run=True)
    assert dry["queued"] == 10 and dry["backfill_id"] is None
    assert dry["occurrences"][0] == (T0 + 10 * MINUTE).isoformat()
    assert dry["occurrences"][-1] == (T0 + 19 * MINUTE).isoformat()
    assert await rows(database, task_id) == []  # a dry run writes nothing

    made = await service.schedules.backfill(
        None, task_id, start=start, end=end, max_concurrent=3, order="newest_first"
    )
    assert (made["queued"], made["already_done"]) == (10, 0)
    first = RunStore(database, settings, "a", clock=clock)
    second = RunStore(database, settings, "b", clock=clock)
    batch = await first.claim_backfill(100)
    assert [run.scheduled_for for run in batch] == [T0 + k * MINUTE for k in (19, 18, 17)]
    assert {run.trigger for run in batch} == {"backfill"}
    assert await second.claim_backfill(100) == []  # max_concurrent 3, all three running
    for run in batch:
        await first.finish(run, RunResult(RunStatus.COMPLETED))
    ran = [run.scheduled_for for run in batch] + await drain(second) + await drain(first)
    assert sorted(ran) == [T0 + k * MINUTE for k in range(10, 20)]  # each once
    history = await rows(database, task_id)
    assert [(r.trigger, r.status) for r in history] == [("backfill", "completed")] * 10
    async with database.transaction() as session:
        backfill = await session.get(Backfill, made["backfill_id"])
    assert backfill is not None and backfill.status == "done"

    # Again, nothing left to run; reprocess=failed runs only the failed ones again.
    again = await service.schedules.backfill(None, task_id, start=start, end=end)
    assert (again["queued"], again["already_done"]) == (0, 10)
    async with database.transaction(write=True) as session:
        await session.execute(
            update(TaskRun)
            .where(TaskRun.scheduled_for.in_([T0 + 12 * MINUTE, T0 + 15 * MINUTE]))
            .values(status="failed", error="boom")
        )
    redo = await service.schedules.backfill(None, task_id, start=start, end=end, reprocess="failed")
    assert (redo["queued"], redo["already_done"]) == (2, 8)
    assert await drain(first) == [T0 + 12 * MINUTE, T0 + 15 * MINUTE]
    assert {r.status for r in await rows(database, task_id)} == {"completed"}


async def test_cancelling_a_backfill_records_its_queue_cancelled(
    service: Service, database: Database, settings: Settings, clock: Clock
) -> None:
    task_id = await minutely(service, ALICE)
    made = await service.schedules.backfill(
        ALICE, task_id, start=(T0 + MINUTE).isoformat(), end=(T0 + 6 * MINUTE).isoformat()
    )
    store = RunStore(database, settings, "a", clock=clock)
    [running] = await store.claim_backfill(10)
    with pytest.raises(NotFoundError):
        await service.schedules.cancel_backfill(BOB, made["backfill_id"])
    cancelled = await service.schedules.cancel_backfill(ALICE, made["backfill_id"])
    assert cancelled["status"] == "cancelled"
    assert await store.claim_backfill(10) == []
    await store.finish(running, RunResult(RunStatus.COMPLETED))  # a running one finishes
    assert Counter(r.status for r in await rows(database, task_id)) == {
        "completed": 1,
        "cancelled": 4,
    }


async def test_bad_backfills_are_refused_naming_the_field_and_write_nothing(
    service: Service, database: Database, settings: Settings, clock: Clock
) -> None:
    task_id = await minutely(service, ALICE)
    (plain,) = await service.tasks.create(None, [{"name": "plain"}], batch=False)
    (root,) = await service.tasks.create(
        None,
        [{"name": "root", "schedule_type": "cron", "schedule_expression": "* * * * *"}],
        batch=False,
    )
    await service.tasks.create(
        None,
        [{"name": "kid", "parent_id": root.id, "params": {"executor_id": "echo_executor"}}],
        batch=False,
    )
    at = (T0 + MINUTE).isoformat()
    later = (T0 + 10 * MINUTE).isoformat()
    cases = [
        ({"task_id": plain.id, "start": at, "end": later}, "task_id"),
        ({"task_id": root.id, "start": at, "end": later}, "task_id"),
        ({"task_id": task_id, "start": later, "end": at}, "end"),
        ({"task_id": task_id, "start": at, "end": (clock.now + MINUTE).isoformat()}, "end"),
        ({"task_id": task_id, "start": (T0 - 200 * MINUTE).isoformat(), "end": at}, "end"),
        ({"task_id": task_id, "start": "yesterday", "end": at}, "start"),
        ({"task_id": task_id, "start": None, "end": at}, "start"),
        ({"task_id": task_id, "start": at, "end": later, "reprocess": "some"}, "reprocess"),
        ({"task_id": task_id, "start": at, "end": later, "order": "random"}, "order"),
        ({"task_id": task_id, "start": at, "end": later, "max_concurrent": 0}, "max_concurrent"),
        ({"task_id": task_id, "start": at, "end": later, "dry_run": "yes"}, "dry_run"),
    ]
    for params, field in cases:
        with pytest.raises(ValidationError) as refused:
            await service.schedules.backfill(None, **params)
        assert refused.value.data == {"field": field}, (params, refused.value)
    with pytest.raises(ForbiddenError):
        await service.schedules.backfill(BOB, task_id, start=at, end=later)
    async with database.transaction() as session:
        assert list(await session.scalars(select(Backfill))) == []
        assert list(await session.scalars(select(TaskRun))) == []


@pytest.mark.slow
async def test_two_scheduler_processes_run_a_backfill_of_1000_exactly_once(
    migrated_postgres_url: str, tmp_path: Path
) -> None:
    url = migrated_postgres_url
    journal = tmp_path / "journal.txt"
    journal.touch()
    database = Database(url)
    settings = Settings(home=tmp_path, database_url=url)
    service = Service(settings, database, TaskRepository(database, settings=settings))
    (task,) = await service.tasks.create(
        None,
        [
            {
                "name": "daily",
                "params": {"executor_id": "test_journal"},
                "schedule_type": "interval",
                "schedule_expression": "60",
                "schedule_start_at": "2020-01-01T00:00:00Z",
            }
        ],
        batch=False,
    )
    start = datetime(2020, 1, 1, tzinfo=UTC)
    processes = [spawn(url, journal, "--poll", "60", "--max-concurrent", "40") for _ in range(2)]
    try:
        # Both are asleep on a 60 s poll: the backfill's commit wakes them.
        made = await service.schedules.backfill(
            None,
            task.id,
            start=start.isoformat(),
            end=(start + 1000 * MINUTE).isoformat(),
            max_concurrent=50,
        )
        assert made["queued"] == 1000
        for _ in range(300):
            history = await rows(database, task.id)
            if sum(r.status == "completed" for r in history) == 1000:
                break
            await asyncio.sleep(0.2)
    finally:
        errors = [stop(process) for process in processes]
    await database.dispose()
    assert not any("Traceback" in error for error in errors), errors
    assert Counter(r.status for r in history) == {"completed": 1000}
    lines = [line.split() for line in journal.read_text().splitlines()]
    occurrences = Counter(occurrence for _, occurrence, *_ in lines)
    assert len(occurrences) == 1000 and max(occurrences.values()) == 1  # each ran once
    assert sorted(occurrences) == sorted((start + k * MINUTE).isoformat() for k in range(1000))
