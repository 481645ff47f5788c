"""The claim, misfire, overlap, lease and bound rules of storage/runs.py, with a fixed clock,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from fixed_clock import Clock
from sqlalchemy import event, select, update

from apflow_server.config import Settings
from apflow_server.core.errors import ConflictError, NotFoundError
from apflow_server.core.types import RunStatus, RunTrigger
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskRepository
from apflow_server.storage.runs import RunResult, RunStore

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def settings(database: Database, tmp_path) -> Settings:
    return Settings(
        home=tmp_path,
        database_url=database.url,
        misfire_grace_seconds=60,
        max_catchup_runs=3,
        lease_seconds=30,
    )


@pytest.fixture
def repo(database: Database, settings: Settings, clock: Clock) -> TaskRepository:
    return TaskRepository(database, settings=settings, clock=clock)


@pytest.fixture
def store(database: Database, settings: Settings, clock: Clock) -> RunStore:
    return RunStore(database, settings, "instance-a", clock=clock)


async def every_minute(repo: TaskRepository, **fields) -> Task:
    """An interval schedule on a one-minute grid starting at T0 + 1 min."""
    values = {
        "name": "job",
        "schedule_type": "interval",
        "schedule_expression": "60",
        "schedule_start_at": (T0 + MINUTE).isoformat(),
        "schedule_enabled": True,
        **fields,
    }
    return await repo.create_task(**values)


async def history(database: Database, task_id: str) -> list[TaskRun]:
    async with database.transaction() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.scheduled_for)
        return list(await session.scalars(query))


async def reload(database: Database, task_id: str) -> Task:
    async with database.transaction() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task


async def test_on_time_claim_runs_once_and_advances(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo)
    assert await store.claim_due(10) == []  # not due yet
    clock.now = T0 + MINUTE + timedelta(seconds=1)
    [run] = await store.claim_due(10)
    assert (run.task_id, run.scheduled_for, run.trigger) == (task.id, T0 + MINUTE, "schedule")
    assert await store.claim_due(10) == []  # claimed once, whoever asks again
    stored = await reload(database, task.id)
    assert stored.status == "in_progress"
    assert stored.current_run_id == run.run_id
    assert stored.next_run_at == T0 + 2 * MINUTE
    assert stored.run_count == 1
    await store.finish(run, RunResult(RunStatus.COMPLETED, {"ok": True}))
    stored = await reload(database, task.id)
    assert (stored.status, stored.result, stored.current_run_id) == (
        "completed",
        {"ok": True},
        None,
    )
    [row] = await history(database, task.id)
    assert (row.status, row.result, row.instance_id) == ("completed", {"ok": True}, "instance-a")


async def test_two_stores_never_claim_the_same_occurrence(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    tasks = [await every_minute(repo, name=f"job{i}") for i in range(20)]
    clock.now = T0 + MINUTE
    first = RunStore(database, settings, "a", clock=clock)
    second = RunStore(database, settings, "b", clock=clock)
    claimed = await first.claim_due(7) + await second.claim_due(100) + await first.claim_due(100)
    assert sorted(c.task_id for c in claimed) == sorted(t.id for t in tasks)


async def test_misfire_run_once_fires_latest_and_records_the_rest_missed(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo)  # schedule_misfire defaults to run_once
    clock.now = T0 + 10 * MINUTE + timedelta(seconds=30)  # occurrences 1..10 are due
    [run] = await store.claim_due(10)
    # Occurrences 1..9 are beyond the 60 s grace: 1..8 missed, the latest late one (9) runs;
    # occurrence 10 (30 s ago) is within grace and stays due for the next pass.
    assert run.scheduled_for == T0 + 9 * MINUTE
    rows = await history(database, task.id)
    assert [r.status for r in rows] == ["missed"] * 8 + ["running"]
    assert [r.scheduled_for for r in rows] == [T0 + k * MINUTE for k in range(1, 10)]
    assert (await reload(database, task.id)).next_run_at == T0 + 10 * MINUTE


async def test_misfire_skip_records_all_missed_and_waits(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_misfire="skip")
    clock.now = T0 + 5 * MINUTE + timedelta(seconds=90)
    assert await store.claim_due(10) == []
    rows = await history(database, task.id)
    # 1..4 are late (≤ now - 60 s); 5 became due 90 s ago → also late.
    assert [r.status for r in rows] == ["missed"] * 5
    stored = await reload(database, task.id)
    assert stored.next_run_at == T0 + 6 * MINUTE and stored.schedule_enabled


async def test_misfire_run_all_catches_up_in_order_capped(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_misfire="run_all")
    # 1..5 are late (due ≤ now - 60 s); 6 came due 10 s ago, on time. max_catchup_runs=3.
    clock.now = T0 + 5 * MINUTE + timedelta(seconds=70)
    fired = []
    for _ in range(5):
        claimed = await store.claim_due(10)
        if not claimed:
            break
        [run] = claimed
        fired.append(run.scheduled_for)
        # Nothing else is claimable while it runs: catch-up is one run at a time.
        assert await store.claim_due(10) == []
        await store.finish(run, RunResult(RunStatus.COMPLETED))
    assert fired == [T0 + 3 * MINUTE, T0 + 4 * MINUTE, T0 + 5 * MINUTE, T0 + 6 * MINUTE]
    statuses = Counter(r.status for r in await history(database, task.id))
    assert statuses == {"missed": 2, "completed": 4}


async def test_overlap_skip_records_occurrences_that_came_due_while_running(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo)  # schedule_overlap defaults to skip
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    clock.now = T0 + 3 * MINUTE + timedelta(seconds=10)  # 2 and 3 came due meanwhile
    assert await store.claim_due(10) == []  # a running task is left alone
    follow_up = await store.finish(run, RunResult(RunStatus.COMPLETED))
    assert follow_up is None
    rows = await history(database, task.id)
    assert [(r.scheduled_for, r.status) for r in rows] == [
        (T0 + MINUTE, "completed"),
        (T0 + 2 * MINUTE, "skipped"),
        (T0 + 3 * MINUTE, "skipped"),
    ]
    assert (await reload(database, task.id)).next_run_at == T0 + 4 * MINUTE


async def test_overlap_buffer_one_runs_the_first_waiting_when_the_run_ends(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_overlap="buffer_one")
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    clock.now = T0 + 3 * MINUTE + timedelta(seconds=10)
    follow_up = await store.finish(run, RunResult(RunStatus.COMPLETED))
    assert follow_up is not None and follow_up.scheduled_for == T0 + 2 * MINUTE
    stored = await reload(database, task.id)
    assert stored.status == "in_progress" and stored.current_run_id == follow_up.run_id
    assert stored.next_run_at == T0 + 4 * MINUTE
    rows = await history(database, task.id)
    assert [(r.scheduled_for, r.status) for r in rows] == [
        (T0 + MINUTE, "completed"),
        (T0 + 2 * MINUTE, "running"),
        (T0 + 3 * MINUTE, "skipped"),
    ]


async def test_overlap_cancel_other_asks_the_running_run_to_end_and_waits_for_it(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    """cancel_other: the newer occurrence asks the running run to end and starts only once it
    has ended (recorded cancelled by its owner); meanwhile no claim takes it again."""
    task = await every_minute(repo, schedule_overlap="cancel_other")
    first = RunStore(database, settings, "a", clock=clock)
    second = RunStore(database, settings, "b", clock=clock)
    clock.now = T0 + MINUTE
    [old] = await first.claim_due(10)
    clock.now = T0 + 2 * MINUTE
    assert await second.claim_due(10) == []  # asked, not started
    # The owner still owns the run (it must record its end), and sees the request.
    assert await first.renew([old.run_id]) == {old.run_id: True}
    assert await first.owned([old.run_id]) == {old.run_id: True}
    # Waiting: neither claimed again nor a reason to wake before the run ends.
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=5)
    assert await second.claim_due(10) == []
    # the lease renewed at 2:00
    assert await second.next_wake_at() == T0 + 2 * MINUTE + timedelta(seconds=30)
    stored = await reload(database, task.id)
    assert (stored.current_run_id, stored.next_run_at) == (old.run_id, T0 + 2 * MINUTE)
    follow_up = await first.finish(
        old, RunResult(RunStatus.CANCELLED, None, "cancelled by a newer occurrence")
    )
    assert follow_up is not None and follow_up.scheduled_for == T0 + 2 * MINUTE
    rows = await history(database, task.id)
    assert [(r.scheduled_for, r.status, r.error) for r in rows] == [
        (T0 + MINUTE, "cancelled", "cancelled by a newer occurrence"),
        (T0 + 2 * MINUTE, "running", None),
    ]
    stored = await reload(database, task.id)
    assert (stored.current_run_id, stored.next_run_at) == (follow_up.run_id, T0 + 3 * MINUTE)


async def test_overlap_cancel_other_asked_run_that_is_abandoned_still_lets_the_newest_run(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    """The owner of the run asked to end died: when its lease expires the run is abandoned
    and the waiting occurrence starts (wait for it to end, however it ends)."""
    task = await every_minute(repo, schedule_overlap="cancel_other")
    first = RunStore(database, settings, "a", clock=clock)
    second = RunStore(database, settings, "b", clock=clock)
    clock.now = T0 + MINUTE
    [old] = await first.claim_due(10)
    clock.now = T0 + 2 * MINUTE
    assert await second.claim_due(10) == []
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=31)  # the lease (30 s) ran out
    follow_ups: list = []
    assert await second.reclaim_expired(follow_ups=follow_ups) == [old.run_id]
    [follow_up] = follow_ups
    assert follow_up.scheduled_for == T0 + 2 * MINUTE
    rows = await history(database, task.id)
    assert [(r.scheduled_for, r.status) for r in rows] == [
        (T0 + MINUTE, "abandoned"),
        (T0 + 2 * MINUTE, "running"),
    ]


async def test_overlap_terminate_other_records_terminated_and_names_the_run(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_overlap="terminate_other")
    first = RunStore(database, settings, "a", clock=clock)
    clock.now = T0 + MINUTE
    [old] = await first.claim_due(10)
    clock.now = T0 + 2 * MINUTE
    [new] = await first.claim_due(10)
    # Its own scheduler is told which runs to stop now (others learn it from NOTIFY).
    assert first.interrupted == {old.run_id}
    assert await first.renew([old.run_id, new.run_id]) == {new.run_id: False}
    manual = await first.start_now(task.id, RunTrigger.MANUAL)  # a trigger replaces it too
    assert first.interrupted == {old.run_id, new.run_id}
    rows = {r.id: (r.status, r.error) for r in await history(database, task.id)}
    assert rows == {
        old.run_id: ("terminated", "terminated by a newer occurrence"),
        new.run_id: ("terminated", "terminated by a newer trigger"),
        manual.run_id: ("running", None),
    }
    assert (await reload(database, task.id)).current_run_id == manual.run_id


async def test_replacing_a_running_tree_on_request_starts_the_new_run(
    store: RunStore, repo: TaskRepository, database: Database
) -> None:
    """terminate_other given for one start, on a tree whose run has a child in progress: the
    old run ends and its tree is released, the new run starts (it was refused after the old
    run was already ended, leaving the root in_progress for good)."""
    root = await repo.create_task(name="root")
    child = await repo.create_task(
        name="child", parent_id=root.id, params={"executor_id": "echo_executor"}
    )
    old = await store.start_now(root.id, RunTrigger.MANUAL)
    async with database.transaction(write=True) as session:  # as the runner leaves it
        await session.execute(update(Task).where(Task.id == child.id).values(status="in_progress"))
    new = await store.start_now(root.id, RunTrigger.API, overlap="terminate_other")
    stored = await reload(database, root.id)
    assert (stored.status, stored.current_run_id) == ("in_progress", new.run_id)
    assert (await reload(database, child.id)).status == "failed"
    rows = {r.id: r.status for r in await history(database, root.id)}
    assert rows == {old.run_id: "terminated", new.run_id: "running"}
    # A child started alone while its tree runs is refused, and nothing is written.
    with pytest.raises(ConflictError):
        await store.start_now(child.id, RunTrigger.API, overlap="terminate_other")
    assert {r.id: r.status for r in await history(database, root.id)} == rows


async def test_overlap_cancel_other_runs_the_newest_when_the_run_ends_before_its_claim(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_overlap="cancel_other")
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    # 2 and 3 came due, and the run ended before a claim could cancel it: the newest runs.
    clock.now = T0 + 3 * MINUTE + timedelta(seconds=10)
    follow_up = await store.finish(run, RunResult(RunStatus.COMPLETED))
    assert follow_up is not None and follow_up.scheduled_for == T0 + 3 * MINUTE
    rows = await history(database, task.id)
    assert [(r.scheduled_for, r.status) for r in rows] == [
        (T0 + MINUTE, "completed"),
        (T0 + 2 * MINUTE, "skipped"),
        (T0 + 3 * MINUTE, "running"),
    ]
    assert (await reload(database, task.id)).next_run_at == T0 + 4 * MINUTE


async def test_a_buffered_run_that_reaches_max_runs_ends_the_schedule(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_overlap="buffer_one", max_runs=2)
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    clock.now = T0 + 3 * MINUTE + timedelta(seconds=10)
    follow_up = await store.finish(run, RunResult(RunStatus.COMPLETED))
    assert follow_up is not None and follow_up.scheduled_for == T0 + 2 * MINUTE
    stored = await reload(database, task.id)
    assert (stored.run_count, stored.schedule_enabled, stored.next_run_at) == (2, False, None)


async def test_max_runs_disables_after_the_last_run(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, max_runs=2)
    for minute in (1, 2):
        clock.now = T0 + minute * MINUTE
        [run] = await store.claim_due(10)
        await store.finish(run, RunResult(RunStatus.COMPLETED))
    stored = await reload(database, task.id)
    assert (stored.run_count, stored.schedule_enabled, stored.next_run_at) == (2, False, None)
    clock.now = T0 + 10 * MINUTE
    assert await store.claim_due(10) == []


async def test_end_bound_disables(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_end_at=(T0 + 2 * MINUTE).isoformat())
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    assert (await reload(database, task.id)).next_run_at == T0 + 2 * MINUTE
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    clock.now = T0 + 2 * MINUTE
    [run] = await store.claim_due(10)
    stored = await reload(database, task.id)
    assert (stored.schedule_enabled, stored.next_run_at) == (False, None)


async def test_once_disables_after_its_run_whatever_the_outcome(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await repo.create_task(
        name="once",
        schedule_type="once",
        schedule_expression=(T0 + MINUTE).isoformat(),
        schedule_enabled=True,
    )
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    assert (await reload(database, task.id)).schedule_enabled is False
    await store.finish(run, RunResult(RunStatus.FAILED, error="boom"))
    stored = await reload(database, task.id)
    assert (stored.status, stored.schedule_enabled, stored.next_run_at) == ("failed", False, None)


async def ran_and_enabled_again(store: RunStore, repo: TaskRepository, clock: Clock) -> Task:
    """A `once` task whose occurrence ran, enabled again: due at the same past instant."""
    when = (T0 + MINUTE).isoformat()
    task = await repo.create_task(
        name="once", schedule_type="once", schedule_expression=when, schedule_enabled=True
    )
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    await repo.update_task(task.id, schedule_enabled=True)
    return task


async def test_an_occurrence_already_recorded_never_runs_again(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await ran_and_enabled_again(store, repo, clock)
    assert await store.claim_due(10) == []
    stored = await reload(database, task.id)
    assert stored.schedule_enabled is False
    assert len(await history(database, task.id)) == 1


async def test_a_claim_with_one_recorded_occurrence_still_starts_the_others(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    """The claim writes its history rows and tasks in one statement expecting every
    occurrence to be new; one recorded already makes it roll back and claim again."""
    recorded = await ran_and_enabled_again(store, repo, clock)
    fresh = await every_minute(repo)
    clock.now = T0 + 2 * MINUTE
    seen: list[str] = []
    engine = database.engine.sync_engine

    def statement(conn, cursor, text, parameters, context, executemany) -> None:
        seen.append("history" if "INSERT INTO task_runs" in text else "other")

    def rollback(conn) -> None:
        seen.append("rollback")

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "rollback", rollback)
    try:
        [started] = await store.claim_due(10)
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "rollback", rollback)
    # The one-statement write went first, was rolled back, and the claim was made again.
    wrote = [step for step in seen if step != "other"]
    assert wrote[:2] == ["history", "rollback"] and wrote.count("history") >= 2
    assert (started.task_id, started.scheduled_for) == (fresh.id, T0 + 2 * MINUTE)
    assert len(await history(database, recorded.id)) == 1
    assert (await reload(database, recorded.id)).schedule_enabled is False
    stored = await reload(database, fresh.id)
    assert (stored.status, stored.current_run_id, stored.run_count) == (
        "in_progress",
        started.run_id,
        1,
    )
    assert [row.id for row in await history(database, fresh.id)] == [started.run_id]


async def test_expired_lease_is_reclaimed_and_the_schedule_continues(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    task = await every_minute(repo)
    crashed = RunStore(database, settings, "crashed", clock=clock)
    survivor = RunStore(database, settings, "survivor", clock=clock)
    clock.now = T0 + MINUTE
    [run] = await crashed.claim_due(10)
    clock.now = T0 + MINUTE + timedelta(seconds=29)
    assert await survivor.reclaim_expired() == []  # lease still valid
    clock.now = T0 + MINUTE + timedelta(seconds=31)
    assert await survivor.reclaim_expired() == [run.run_id]
    stored = await reload(database, task.id)
    assert stored.status == "failed" and "abandoned" in (stored.error or "")
    assert stored.current_run_id is None
    [row] = await history(database, task.id)
    assert row.status == "abandoned"
    # The crashed owner cannot write any more; the next occurrence fires normally.
    assert await crashed.finish(run, RunResult(RunStatus.COMPLETED)) is None
    clock.now = T0 + 2 * MINUTE
    [next_run] = await survivor.claim_due(10)
    assert next_run.scheduled_for == T0 + 2 * MINUTE


async def test_a_buffered_occurrence_after_an_abandoned_run_is_started_and_returned(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    """buffer_one: an occurrence came due while the run ran, and the run's owner died. The
    reclaiming scheduler starts the buffered occurrence and hands it back to be run (before,
    it was recorded running and never launched, then abandoned in turn)."""
    task = await every_minute(repo, schedule_overlap="buffer_one")
    crashed = RunStore(database, settings, "crashed", clock=clock)
    survivor = RunStore(database, settings, "survivor", clock=clock)
    clock.now = T0 + MINUTE
    [run] = await crashed.claim_due(10)
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=5)  # occurrence 2 came due meanwhile
    started: list = []
    assert await survivor.reclaim_expired(follow_ups=started) == [run.run_id]
    [follow_up] = started
    assert follow_up.scheduled_for == T0 + 2 * MINUTE
    stored = await reload(database, task.id)
    assert stored.status == "in_progress" and stored.current_run_id == follow_up.run_id
    assert await survivor.finish(follow_up, RunResult(RunStatus.COMPLETED)) is None
    rows = await history(database, task.id)
    assert [(r.scheduled_for, r.status) for r in rows] == [
        (T0 + MINUTE, "abandoned"),
        (T0 + 2 * MINUTE, "completed"),
    ]


async def test_overlap_buffer_all_runs_every_waiting_occurrence_in_order(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_overlap="buffer_all")
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    clock.now = T0 + 4 * MINUTE + timedelta(seconds=10)  # 2, 3 and 4 came due meanwhile
    assert await store.claim_due(10) == []  # the running task is left alone
    ran = [run.scheduled_for]
    while run is not None:
        clock.now += timedelta(seconds=5)
        follow_up = await store.finish(run, RunResult(RunStatus.COMPLETED))
        if follow_up is not None:
            ran.append(follow_up.scheduled_for)
        run = follow_up
    assert ran == [T0 + k * MINUTE for k in (1, 2, 3, 4)]
    rows = await history(database, task.id)
    assert [r.status for r in rows] == ["completed"] * 4
    assert (await reload(database, task.id)).next_run_at == T0 + 5 * MINUTE


async def test_overlap_allow_all_starts_each_occurrence_beside_the_running_one(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_overlap="allow_all")
    clock.now = T0 + MINUTE
    [first] = await store.claim_due(10)
    clock.now = T0 + 2 * MINUTE
    [second] = await store.claim_due(10)  # the first still runs
    assert second.scheduled_for == T0 + 2 * MINUTE
    # A manual start overlaps too.
    manual = await store.start_now(task.id, RunTrigger.MANUAL)
    assert manual.run_id not in {first.run_id, second.run_id}
    # The first ends after the newer ones started: its outcome is recorded, and the task
    # keeps showing its newest run.
    assert await store.finish(first, RunResult(RunStatus.FAILED, None, "slow")) is None
    stored = await reload(database, task.id)
    assert stored.status == "in_progress" and stored.current_run_id == manual.run_id
    await store.finish(second, RunResult(RunStatus.COMPLETED))
    await store.finish(manual, RunResult(RunStatus.COMPLETED))
    async with database.transaction() as session:
        rows = list(await session.scalars(select(TaskRun).where(TaskRun.task_id == task.id)))
    assert Counter(r.status for r in rows) == {"failed": 1, "completed": 2}
    assert (await reload(database, task.id)).status == "completed"


async def test_overlap_allow_all_does_not_overlap_a_tree(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    root = await every_minute(repo, schedule_overlap="allow_all")
    await repo.create_task(name="child", parent_id=root.id, params={"executor_id": "echo_executor"})
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    clock.now = T0 + 2 * MINUTE
    assert await store.claim_due(10) == []
    rows = await history(database, root.id)
    assert [(r.status, r.reason) for r in rows][1] == (
        "skipped",
        "the previous run was still running (a tree's runs cannot overlap)",
    )
    del run


async def test_renewal_extends_the_lease(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    await every_minute(repo)
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    clock.now = T0 + MINUTE + timedelta(seconds=20)
    assert await store.renew([run.run_id]) == {run.run_id: False}
    clock.now = T0 + MINUTE + timedelta(seconds=45)
    assert await store.reclaim_expired() == []


async def test_ad_hoc_runs_and_the_busy_conflict(
    store: RunStore, repo: TaskRepository, database: Database
) -> None:
    task = await repo.create_task(name="adhoc")
    run = await store.start_now(task.id, RunTrigger.WEBHOOK)
    assert run.scheduled_for is None and run.trigger == "webhook"
    with pytest.raises(ConflictError):
        await store.start_now(task.id, RunTrigger.MANUAL)
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    again = await store.start_now(task.id, RunTrigger.MANUAL)
    assert again.run_id != run.run_id
    assert (await reload(database, task.id)).run_count == 2


async def test_manual_trigger_request_is_claimed_once(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await repo.create_task(name="adhoc")
    await store.request_trigger(task.id)
    [run] = await store.claim_due(10)
    assert (run.task_id, run.trigger, run.scheduled_for) == (task.id, "manual", None)
    assert await store.claim_due(10) == []
    assert (await reload(database, task.id)).trigger_requested_at is None


async def test_a_trigger_requested_as_the_occurrence_falls_due_waits_for_its_run(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    """One claim finds the task both due and asked to run: the occurrence starts; the manual
    trigger stays requested (a task's row holds one run's state) and starts after it."""
    task = await every_minute(repo)
    clock.now = T0 + MINUTE
    await store.request_trigger(task.id)
    [run] = await store.claim_due(10)
    assert (run.trigger, run.scheduled_for) == ("schedule", T0 + MINUTE)
    stored = await reload(database, task.id)
    assert (stored.current_run_id, stored.run_count) == (run.run_id, 1)
    assert stored.trigger_requested_at is not None
    assert len(await history(database, task.id)) == 1
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    [manual] = await store.claim_due(10)
    assert (manual.task_id, manual.trigger) == (task.id, "manual")
    assert (await reload(database, task.id)).trigger_requested_at is None


async def test_cancel_stops_ownership(
    store: RunStore, repo: TaskRepository, database: Database
) -> None:
    task = await repo.create_task(name="adhoc")
    run = await store.start_now(task.id, RunTrigger.API)
    assert await store.cancel(task.id) is True
    assert await store.renew([run.run_id]) == {}
    assert await store.cancel(task.id) is False
    stored = await reload(database, task.id)
    assert stored.status == "cancelled"


async def test_next_wake_at_is_the_earliest_due_time(
    store: RunStore, repo: TaskRepository, clock: Clock
) -> None:
    assert await store.next_wake_at() is None
    await every_minute(repo)
    assert await store.next_wake_at() == T0 + MINUTE


async def test_every_due_occurrence_ends_as_exactly_one_row(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    """Walk an hour in uneven steps with runs that overlap occurrences; then each occurrence on
    the grid up to the last settled one has exactly one history row."""
    task = await every_minute(repo, schedule_overlap="buffer_one")
    running = []
    for seconds in range(0, 3600, 97):
        clock.now = T0 + MINUTE + timedelta(seconds=seconds)
        for run in running:
            follow_up = await store.finish(run, RunResult(RunStatus.COMPLETED))
            running = [follow_up] if follow_up else []
        running += await store.claim_due(10)
    rows = await history(database, task.id)
    occurrences = [r.scheduled_for for r in rows]
    assert len(occurrences) == len(set(occurrences))
    assert occurrences == [T0 + k * MINUTE for k in range(1, len(occurrences) + 1)]
    assert len(occurrences) >= 55
    async with database.transaction(write=True) as session:
        await session.execute(update(Task).values(schedule_enabled=False))


async def test_a_task_inside_a_running_tree_cannot_start_alone(
    store: RunStore, repo: TaskRepository
) -> None:
    root, child = await repo.create_tasks([{"name": "root"}, {"name": "a", "parent_id": "root"}])
    run = await store.start_now(root.id, RunTrigger.MANUAL)
    with pytest.raises(ConflictError, match="tree that is running"):
        await store.start_now(child.id, RunTrigger.MANUAL)
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    child_run = await store.start_now(child.id, RunTrigger.MANUAL)
    with pytest.raises(ConflictError, match="tree that is running"):
        await store.start_now(root.id, RunTrigger.MANUAL)
    await store.finish(child_run, RunResult(RunStatus.COMPLETED))


async def test_idempotency_key_returns_the_first_run(
    store: RunStore, repo: TaskRepository, database: Database
) -> None:
    task = await repo.create_task(name="hook")
    first = await store.start_now(task.id, RunTrigger.WEBHOOK, idempotency_key="k-1")
    again = await store.start_now(task.id, RunTrigger.WEBHOOK, idempotency_key="k-1")
    assert (again.run_id, again.replayed, first.replayed) == (first.run_id, True, False)
    await store.finish(first, RunResult(RunStatus.COMPLETED))
    later = await store.start_now(task.id, RunTrigger.WEBHOOK, idempotency_key="k-1")
    assert later.run_id == first.run_id and later.replayed
    other = await store.start_now(task.id, RunTrigger.WEBHOOK, idempotency_key="k-2")
    assert other.run_id != first.run_id and not other.replayed
    assert len(await history(database, task.id)) == 2


async def test_claim_occurrence_fires_only_the_due_occurrence_once(
    store: RunStore, repo: TaskRepository, clock: Clock
) -> None:
    task = await every_minute(repo)
    assert await store.claim_occurrence(task.id, T0 + MINUTE) is None  # not due yet
    clock.now = T0 + MINUTE
    run = await store.claim_occurrence(task.id, T0 + MINUTE)
    assert run is not None and run.scheduled_for == T0 + MINUTE
    assert await store.claim_occurrence(task.id, T0 + MINUTE) is None  # already fired
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    assert await store.claim_occurrence(task.id, T0 + MINUTE) is None


# ---------------------------------------------------------------------- concurrent starts


async def started_runs(database: Database, task_ids: set[str]) -> list[TaskRun]:
    async with database.transaction() as session:
        runs = await session.scalars(select(TaskRun).where(TaskRun.task_id.in_(task_ids)))
        return list(runs)


async def test_concurrent_starts_share_transactions_and_each_starts_once(
    repo: TaskRepository, store: RunStore, database: Database
) -> None:
    tasks = [await repo.create_task(name=f"t{i}") for i in range(60)]
    claimed = await asyncio.gather(
        *(store.start_now(task.id, RunTrigger.WEBHOOK) for task in tasks)
    )
    assert sorted(c.task_id for c in claimed) == sorted(t.id for t in tasks)
    assert len({c.run_id for c in claimed}) == 60
    runs = await started_runs(database, {t.id for t in tasks})
    assert Counter(run.task_id for run in runs) == Counter({t.id: 1 for t in tasks})
    assert {run.id for run in runs} == {c.run_id for c in claimed}
    assert {run.status for run in runs} == {RunStatus.RUNNING.value}
    # fewer transactions than requests: the first went alone, the rest together
    assert len(store._starts.batch_sizes) < 60
    assert max(store._starts.batch_sizes) > 1


async def test_concurrent_starts_of_one_task_start_it_once(
    repo: TaskRepository, store: RunStore, database: Database
) -> None:
    task = await repo.create_task(name="popular")
    outcomes = await asyncio.gather(
        *(store.start_now(task.id, RunTrigger.WEBHOOK) for _ in range(20)),
        return_exceptions=True,
    )
    started = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(started) == 1
    assert len(refused) == 19 and all(isinstance(r, ConflictError) for r in refused)
    assert len(await started_runs(database, {task.id})) == 1


async def test_concurrent_starts_with_one_idempotency_key_return_one_run(
    repo: TaskRepository, store: RunStore, database: Database
) -> None:
    task = await repo.create_task(name="keyed")
    claimed = await asyncio.gather(
        *(store.start_now(task.id, RunTrigger.WEBHOOK, idempotency_key="k") for _ in range(20))
    )
    assert len({c.run_id for c in claimed}) == 1
    assert sum(not c.replayed for c in claimed) == 1
    assert len(await started_runs(database, {task.id})) == 1


async def test_a_tree_and_its_child_started_together_run_one_of_them(
    repo: TaskRepository, store: RunStore, database: Database
) -> None:
    root, child = await repo.create_tasks([{"name": "root"}, {"name": "kid", "parent_id": "root"}])
    outcomes = await asyncio.gather(
        store.start_now(root.id, RunTrigger.MANUAL),
        store.start_now(child.id, RunTrigger.MANUAL),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert len(await started_runs(database, {root.id, child.id})) == 1


async def test_a_refused_start_does_not_refuse_its_batch(
    repo: TaskRepository, store: RunStore, database: Database
) -> None:
    tasks = [await repo.create_task(name=f"t{i}") for i in range(10)]

    def only_even(task: object) -> None:
        if getattr(task, "id", "") in {t.id for t in tasks[1::2]}:
            raise ConflictError("not this one")

    outcomes = await asyncio.gather(
        *(store.start_now(t.id, RunTrigger.API, check=only_even) for t in tasks),
        store.start_now("no-such-task", RunTrigger.API),
        return_exceptions=True,
    )
    started = {o.task_id for o in outcomes if not isinstance(o, BaseException)}
    assert started == {t.id for t in tasks[::2]}
    assert isinstance(outcomes[-1], NotFoundError)
    runs = await started_runs(database, {t.id for t in tasks})
    assert {run.task_id for run in runs} == started


async def test_cancel_ends_every_running_run_of_an_allow_all_task(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await every_minute(repo, schedule_overlap="allow_all")
    clock.now = T0 + MINUTE
    [first] = await store.claim_due(10)
    clock.now = T0 + 2 * MINUTE
    [second] = await store.claim_due(10)
    assert await store.cancel(task.id) is True
    assert await store.owned([first.run_id, second.run_id]) == {}
    assert {r.status for r in await history(database, task.id)} == {"cancelled"}
    assert await store.cancel(task.id) is False  # nothing left running


async def test_reclaiming_leaves_another_users_buffered_occurrence_due(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    """A scheduler limited to alice reclaims bob's abandoned run, but does not start bob's
    buffered occurrence: a scheduler that runs bob's tasks claims it."""
    task = await every_minute(repo, user_id="bob", schedule_overlap="buffer_one")
    crashed = RunStore(database, settings, "crashed", clock=clock)
    alices = RunStore(database, settings, "alices", clock=clock)
    clock.now = T0 + MINUTE
    [run] = await crashed.claim_due(10)
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=5)
    started: list = []
    assert await alices.reclaim_expired(follow_ups=started, user_id="alice") == [run.run_id]
    assert started == []
    [claimed] = await RunStore(database, settings, "any", clock=clock).claim_due(10)
    assert (claimed.task_id, claimed.scheduled_for) == (task.id, T0 + 2 * MINUTE)


async def test_rows_of_a_paused_schedule_are_pruned_to_the_history_limit(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    import dataclasses

    from apflow_server.service import Service

    kept = dataclasses.replace(settings, run_history_keep=10)
    store = RunStore(database, kept, "a", clock=clock)
    task = await every_minute(repo)
    await Service(kept, database, repo).schedules.pause(None, task.id)
    for k in range(1, 121):
        clock.now = T0 + k * MINUTE
        assert await store.claim_due(10) == []
    rows = await history(database, task.id)
    assert len(rows) < 10 + 10  # pruned every 10 rows (keep=10), down to the 10 newest
    assert rows[-1].scheduled_for == T0 + 120 * MINUTE and rows[-1].reason == "paused"


async def test_finished_runs_are_pruned_in_small_steps_for_a_whole_batch(
    database: Database, settings: Settings, repo: TaskRepository, clock: Clock
) -> None:
    import dataclasses

    kept = dataclasses.replace(settings, run_history_keep=3)
    store = RunStore(database, kept, "a", clock=clock)
    tasks = [await every_minute(repo), await every_minute(repo)]
    largest = 0
    for k in range(1, 14):
        clock.now = T0 + k * MINUTE
        claimed = await store.claim_due(10)
        assert len(claimed) == 2
        if k < 13:
            await store.finish_many([(run, RunResult(RunStatus.COMPLETED)) for run in claimed])
        for task in tasks:
            largest = max(largest, len(await history(database, task.id)))
    # Pruned back to 3 every 3 runs: never more than 3 + 2 rows, and never the running one.
    assert largest == 5
    for task in tasks:
        rows = await history(database, task.id)
        assert [row.scheduled_for for row in rows][-1] == T0 + 13 * MINUTE
        assert rows[-1].status == "running"
        assert len(rows) <= 5


async def test_allow_all_runs_of_one_task_are_bounded(
    store: RunStore,
    repo: TaskRepository,
    database: Database,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apflow_server.storage import runs

    monkeypatch.setattr(runs, "MAX_OVERLAPPING_RUNS", 2)
    task = await every_minute(repo, schedule_overlap="allow_all")
    await store.start_now(task.id, RunTrigger.MANUAL)
    await store.start_now(task.id, RunTrigger.MANUAL)
    with pytest.raises(ConflictError):
        await store.start_now(task.id, RunTrigger.MANUAL, overlap="allow_all")
    clock.now = T0 + MINUTE
    assert await store.claim_due(10) == []  # the occurrence is skipped, saying why
    [skipped] = [r for r in await history(database, task.id) if r.status == "skipped"]
    assert skipped.scheduled_for == T0 + MINUTE
    assert skipped.reason == "2 runs of the task were still running (allow_all)"


BROKEN = {
    "zone": (
        {"schedule_timezone": "US/Pacific-New"},
        "schedule_timezone: unknown time zone 'US/Pacific-New'",
    ),
    "random cron": (
        {"schedule_type": "cron", "schedule_expression": "R * * * *"},
        "schedule_expression: cron 'R * * * *': random fields (R) are not supported",
    ),
}


@pytest.mark.parametrize("broken", list(BROKEN))
@pytest.mark.parametrize("mode", ["internal", "external"])
async def test_a_stored_schedule_that_cannot_be_computed_is_disabled_not_a_stop_for_all(
    store: RunStore,
    repo: TaskRepository,
    database: Database,
    clock: Clock,
    mode: str,
    broken: str,
) -> None:
    """A row whose schedule no longer parses (here a time zone that tzdata dropped, as it
    dropped US/Pacific-New in 2020b) made every claim fail, so one bad row stopped every
    schedule of every user. It is now set aside: its schedule disabled, its due occurrence
    recorded skipped with the reason; the others fire as usual, and later claims are clean."""
    good = await every_minute(repo, name="good")
    grace = {"trigger_grace_seconds": 1} if mode == "external" else {}
    bad = await every_minute(repo, name="bad", schedule_mode=mode, **grace)
    fields, error = BROKEN[broken]
    async with database.transaction(write=True) as session:
        await session.execute(update(Task).where(Task.id == bad.id).values(**fields))
    clock.now = T0 + MINUTE + timedelta(seconds=1)
    [run] = await store.claim_due(10)
    assert run.task_id == good.id
    stored = await reload(database, bad.id)
    assert (stored.schedule_enabled, stored.next_run_at, stored.due_at) == (False, None, None)
    [row] = await history(database, bad.id)
    assert (row.status, row.scheduled_for) == ("skipped", T0 + MINUTE)
    assert row.reason.startswith(f"the schedule cannot be computed ({error}")
    assert row.reason.endswith("; it was disabled")
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=1)
    [later] = await store.claim_due(10)
    assert later.task_id == good.id
    assert len(await history(database, bad.id)) == 1


async def test_a_run_whose_schedule_broke_meanwhile_is_still_recorded(
    store: RunStore, repo: TaskRepository, database: Database, clock: Clock
) -> None:
    """Recording an outcome moves the schedule past what came due during the run; a schedule
    that can no longer be computed must not stop the recording (nor the batch it is in)."""
    task = await every_minute(repo)
    other = await every_minute(repo, name="other")
    clock.now = T0 + MINUTE
    runs = await store.claim_due(10)
    async with database.transaction(write=True) as session:
        await session.execute(
            update(Task).where(Task.id == task.id).values(schedule_timezone="US/Pacific-New")
        )
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=5)  # the next occurrence came due meanwhile
    await store.finish_many([(run, RunResult(RunStatus.COMPLETED)) for run in runs])
    # the other task of the batch: recorded, and its own occurrence of the meanwhile skipped
    assert [row.status for row in await history(database, other.id)] == ["completed", "skipped"]
    rows = await history(database, task.id)
    assert [(row.status, row.scheduled_for) for row in rows] == [
        ("completed", T0 + MINUTE),
        ("skipped", T0 + 2 * MINUTE),
    ]
    assert rows[1].reason.startswith("the schedule cannot be computed (schedule_timezone")
    stored = await reload(database, task.id)
    assert (stored.status, stored.schedule_enabled, stored.due_at) == ("completed", False, None)
