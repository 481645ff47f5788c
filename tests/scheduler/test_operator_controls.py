"""Pause (with a note and an end), resume, skip and pause-after-failures, as the claim applies
them, with a fixed clock, on SQLite and PostgreSQL: every due occurrence still ends as exactly
one history row, and the reason says why it did not run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fixed_clock import Clock
from sqlalchemy import select

from apflow_server.config import Settings
from apflow_server.core.errors import ValidationError
from apflow_server.core.types import RunStatus
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskRepository
from apflow_server.storage.runs import RunResult, RunStore

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ALICE = Principal("alice", is_admin=False, source="jwt")
BOB = Principal("bob", is_admin=False, source="jwt")


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=database.url, misfire_grace_seconds=60)


@pytest.fixture
def service(database: Database, settings: Settings, clock: Clock) -> Service:
    return Service(settings, database, TaskRepository(database, settings=settings, clock=clock))


@pytest.fixture
def store(database: Database, settings: Settings, clock: Clock) -> RunStore:
    return RunStore(database, settings, "instance-a", clock=clock)


async def every_minute(service: Service, caller: Principal | None = None, **fields) -> Task:
    spec = {
        "name": "job",
        "params": {"executor_id": "echo_executor"},
        "schedule_type": "interval",
        "schedule_expression": "60",
        "schedule_start_at": (T0 + MINUTE).isoformat(),
        "schedule_enabled": True,
        **fields,
    }
    (task,) = await service.tasks.create(caller, [spec], batch=False)
    return task


async def history(database: Database, task_id: str) -> list[tuple[datetime, str, str | None]]:
    async with database.transaction() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.scheduled_for)
        return [(r.scheduled_for, r.status, r.reason) for r in await session.scalars(query)]


async def tick(store: RunStore, clock: Clock, at: datetime) -> list[datetime]:
    """Claim at `at` and finish what was claimed as completed; the occurrences that ran."""
    clock.now = at
    ran = []
    for run in await store.claim_due(10):
        ran.append(run.scheduled_for)
        await store.finish(run, RunResult(RunStatus.COMPLETED))
    return ran


async def test_a_paused_schedule_records_each_occurrence_skipped_and_resumes(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    task = await every_minute(service)
    assert await tick(store, clock, T0 + MINUTE) == [T0 + MINUTE]
    paused = await service.schedules.pause(None, task.id, note="database upgrade")
    assert (paused.schedule_paused, paused.schedule_pause_note) == (True, "database upgrade")
    for k in (2, 3):
        assert await tick(store, clock, T0 + k * MINUTE) == []
    resumed = await service.schedules.resume(None, task.id)
    assert not resumed.schedule_paused and resumed.schedule_pause_note is None
    assert await tick(store, clock, T0 + 4 * MINUTE) == [T0 + 4 * MINUTE]
    assert await history(database, task.id) == [
        (T0 + MINUTE, "completed", None),
        (T0 + 2 * MINUTE, "skipped", "paused"),
        (T0 + 3 * MINUTE, "skipped", "paused"),
        (T0 + 4 * MINUTE, "completed", None),
    ]


async def test_a_pause_with_an_end_resumes_by_itself_at_that_instant(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    task = await every_minute(service)
    until = T0 + 3 * MINUTE
    paused = await service.schedules.pause(None, task.id, until=until.isoformat())
    assert paused.schedule_paused_until == until
    assert paused.schedule_pause_note == "paused by the operator"
    ran = []
    for k in (1, 2, 3, 4):
        ran += await tick(store, clock, T0 + k * MINUTE)
    assert ran == [T0 + 3 * MINUTE, T0 + 4 * MINUTE]
    stored = await service.tasks.get(None, task.id)
    assert not stored.schedule_paused and stored.schedule_paused_until is None
    assert [row[1:] for row in await history(database, task.id)][:2] == [
        ("skipped", "paused"),
        ("skipped", "paused"),
    ]


async def test_occurrences_missed_while_paused_are_skipped_as_paused(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    """A scheduler that was down during a pause: the late occurrences were paused, not missed."""
    task = await every_minute(service)
    await service.schedules.pause(None, task.id, until=(T0 + 4 * MINUTE).isoformat())
    assert await tick(store, clock, T0 + 6 * MINUTE + timedelta(seconds=30)) == [T0 + 5 * MINUTE]
    assert await history(database, task.id) == [
        (T0 + MINUTE, "skipped", "paused"),
        (T0 + 2 * MINUTE, "skipped", "paused"),
        (T0 + 3 * MINUTE, "skipped", "paused"),
        (T0 + 4 * MINUTE, "missed", "late beyond the misfire grace (misfire run_once)"),
        (T0 + 5 * MINUTE, "completed", None),
    ]


async def test_skip_records_the_next_occurrences_skipped_by_whom(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    task = await every_minute(service, ALICE)
    await service.schedules.skip(ALICE, task.id, count=2)
    preview = await service.schedules.preview(ALICE, task_id=task.id, count=3)
    assert await service.schedules.preview_holds(ALICE, task.id, preview) == [
        "skipped by alice",
        "skipped by alice",
        None,
    ]
    ran = []
    for k in (1, 2, 3):
        ran += await tick(store, clock, T0 + k * MINUTE)
    assert ran == [T0 + 3 * MINUTE]
    assert [row[1:] for row in await history(database, task.id)] == [
        ("skipped", "skipped by alice"),
        ("skipped", "skipped by alice"),
        ("completed", None),
    ]
    assert (await service.tasks.get(None, task.id)).schedule_skip_count == 0


async def test_pause_after_failures_pauses_with_a_note_and_a_success_resets(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    task = await every_minute(service, pause_after_failures=2)

    async def run_once(at: datetime, status: RunStatus) -> None:
        clock.now = at
        (run,) = await store.claim_due(10)
        await store.finish(run, RunResult(status, None, "boom"))

    await run_once(T0 + MINUTE, RunStatus.FAILED)
    await run_once(T0 + 2 * MINUTE, RunStatus.COMPLETED)  # the count starts again
    await run_once(T0 + 3 * MINUTE, RunStatus.FAILED)
    assert not (await service.tasks.get(None, task.id)).schedule_paused
    await run_once(T0 + 4 * MINUTE, RunStatus.TIMEOUT)
    stored = await service.tasks.get(None, task.id)
    assert stored.schedule_paused and stored.consecutive_failures == 2
    assert stored.schedule_pause_note == "paused after 2 consecutive failed runs"
    assert await tick(store, clock, T0 + 5 * MINUTE) == []
    assert (await history(database, task.id))[-1][1:] == ("skipped", "paused")
    resumed = await service.schedules.resume(None, task.id, note="fixed the credentials")
    assert resumed.consecutive_failures == 0


async def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(
    service: Service, database: Database, clock: Clock
) -> None:
    plain = (await service.tasks.create(None, [{"name": "plain"}], batch=False))[0]
    off = await every_minute(service, schedule_enabled=False)
    on = await every_minute(service, ALICE)
    cases = [
        (service.schedules.pause(None, plain.id), "task_id"),
        (service.schedules.pause(None, off.id), "task_id"),
        (service.schedules.pause(None, on.id, until=(clock.now - MINUTE).isoformat()), "until"),
        (service.schedules.pause(None, on.id, until="tomorrow"), "until"),
        (service.schedules.pause(None, on.id, note="x" * 1001), "note"),
        (service.schedules.skip(None, off.id), "task_id"),
        (service.schedules.skip(None, on.id, count=0), "count"),
        (service.schedules.skip(None, on.id, count=True), "count"),
        (service.schedules.resume(None, plain.id), "task_id"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as refused:
            await call
        assert refused.value.data == {"field": field}, refused.value
    stored = await service.tasks.get(None, on.id)
    assert not stored.schedule_paused and stored.schedule_skip_count == 0

    # Another user's schedule is not theirs to pause, resume or skip.
    from apflow_server.core.errors import ForbiddenError

    for call in (
        service.schedules.pause(BOB, on.id),
        service.schedules.resume(BOB, on.id),
        service.schedules.skip(BOB, on.id),
    ):
        with pytest.raises(ForbiddenError):
            await call
