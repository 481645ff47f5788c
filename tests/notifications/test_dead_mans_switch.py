"""External schedules (a dead man's switch), on both databases: the scheduler never fires
them; a missing webhook trigger becomes a `missed` row and trigger.overdue after the grace; a
trigger that arrives is matched to its occurrence (and is run.late if late)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fixed_clock import Clock
from receiver import Receiver
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from apflow_server.config import Settings
from apflow_server.core.events import EVENT_TYPES
from apflow_server.core.types import RunStatus, RunTrigger
from apflow_server.scheduler import InternalScheduler, SchedulerConfig
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import NotificationDelivery, TaskRun
from apflow_server.storage.repository import TaskRepository
from apflow_server.storage.runs import RunResult, RunStore

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ALICE = Principal("alice", False, "jwt")


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def settings(database: Database, tmp_path) -> Settings:
    return Settings(home=tmp_path, database_url=database.url, notify_allow_private_urls=True)


@pytest.fixture
def service(database: Database, settings: Settings, clock: Clock) -> Service:
    return Service(settings, database, TaskRepository(database, settings=settings, clock=clock))


@pytest.fixture
def store(database: Database, settings: Settings, clock: Clock) -> RunStore:
    return RunStore(database, settings, "instance-a", clock=clock)


async def external(service: Service, **fields) -> str:
    spec = {
        "name": "cron-backup",
        "params": {"executor_id": "echo_executor"},
        "schedule_type": "cron",
        "schedule_expression": "* * * * *",
        "schedule_mode": "external",
        "trigger_grace_seconds": 30,
        "schedule_enabled": True,
        **fields,
    }
    (task,) = await service.tasks.create(ALICE, [spec], batch=False)
    return str(task.id)


async def history(database: Database, task_id: str) -> list[TaskRun]:
    async with database.transaction() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.created_at)
        return list(await session.scalars(query))


async def events(database: Database) -> list[tuple[str, dict]]:
    async with database.transaction() as session:
        query = select(NotificationDelivery).order_by(NotificationDelivery.created_at)
        return [(d.event_type, json.loads(d.body)["data"]) for d in await session.scalars(query)]


async def test_the_scheduler_watches_and_records_a_missing_trigger(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    await service.notifications.create(ALICE, url="http://127.0.0.1:9/x", events=list(EVENT_TYPES))
    task_id = await external(service)
    stored = await service.tasks.get(ALICE, task_id)
    assert stored.next_run_at == T0 + MINUTE
    clock.now = T0 + MINUTE + timedelta(seconds=29)  # due, but the trigger has 30 s
    assert await store.claim_due(10) == []
    assert await history(database, task_id) == []
    assert await store.next_wake_at() == T0 + MINUTE + timedelta(seconds=30)
    clock.now = T0 + MINUTE + timedelta(seconds=31)
    assert await store.claim_due(10) == []  # never fired here
    [row] = await history(database, task_id)
    assert (row.status, row.trigger, row.scheduled_for) == ("missed", "webhook", T0 + MINUTE)
    assert row.reason == "no trigger arrived within 30 s of the occurrence (external schedule)"
    [(kind, data)] = await events(database)
    assert (kind, data["task_id"], data["scheduled_for"]) == (
        "trigger.overdue",
        task_id,
        "2025-06-02T12:01:00Z",
    )
    assert (await service.tasks.get(ALICE, task_id)).next_run_at == T0 + 2 * MINUTE
    assert await service.schedules.due(ALICE, before=T0 + MINUTE * 10) == []


async def test_a_trigger_is_matched_to_its_occurrence_and_late_is_announced(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    await service.notifications.create(ALICE, url="http://127.0.0.1:9/x", events=list(EVENT_TYPES))
    task_id = await external(service, alert_late_after_seconds=5)
    clock.now = T0 + MINUTE - timedelta(seconds=3)  # a little early: clock skew
    on_time = await store.start_now(task_id, RunTrigger.WEBHOOK)
    assert on_time.scheduled_for == T0 + MINUTE
    await store.finish(on_time, _completed())
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=20)  # late, within the grace
    late = await store.start_now(task_id, RunTrigger.WEBHOOK)
    assert late.scheduled_for == T0 + 2 * MINUTE
    await store.finish(late, _completed())
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=40)  # neither 12:02 (taken) nor 12:03
    extra = await store.start_now(task_id, RunTrigger.WEBHOOK)
    assert extra.scheduled_for is None
    await store.finish(extra, _completed())
    clock.now = T0 + 3 * MINUTE  # a manual run is not the external scheduler's call
    manual = await store.start_now(task_id, RunTrigger.MANUAL)
    assert manual.scheduled_for is None
    await store.finish(manual, _completed())
    clock.now = T0 + 3 * MINUTE + timedelta(seconds=31)
    await store.claim_due(10)  # 12:03 had no call: missed
    rows = [(r.trigger, r.scheduled_for, r.status) for r in await history(database, task_id)]
    assert rows == [
        ("webhook", T0 + MINUTE, "completed"),
        ("webhook", T0 + 2 * MINUTE, "completed"),
        ("webhook", None, "completed"),
        ("manual", None, "completed"),
        ("webhook", T0 + 3 * MINUTE, "missed"),
    ]
    kinds = [
        (kind, data.get("scheduled_for"))
        for kind, data in await events(database)
        if kind != "run.succeeded"
    ]
    assert kinds == [
        ("run.late", "2025-06-02T12:02:00Z"),
        ("trigger.overdue", "2025-06-02T12:03:00Z"),
    ]


async def test_a_real_scheduler_announces_an_external_schedule_that_was_not_called(
    database: Database, settings: Settings
) -> None:
    """A scheduler process's loop, a real receiver: every 2 s with 1 s of grace, nobody calls;
    trigger.overdue arrives within the grace and a poll, verified by the reference library."""
    service = Service(settings, database, TaskRepository(database, settings=settings))
    with Receiver() as receiver:
        created = await service.notifications.create(
            ALICE, url=receiver.url, events=["trigger.overdue"]
        )
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        (task,) = await service.tasks.create(
            ALICE,
            [
                {
                    "name": "cron-backup",
                    "params": {"executor_id": "echo_executor"},
                    "schedule_type": "interval",
                    "schedule_expression": "2s",
                    "schedule_start_at": start.isoformat(),
                    "schedule_mode": "external",
                    "trigger_grace_seconds": 1,
                    "schedule_enabled": True,
                }
            ],
            batch=False,
        )
        scheduler = InternalScheduler(
            SchedulerConfig(poll_interval=60), database=database, settings=settings
        )
        await scheduler.start()
        try:
            [request] = await receiver.arrival(1, seconds=8)
            arrived = datetime.now(UTC)
        finally:
            await scheduler.stop()
    payload = Webhook(created.secret).verify(request.body, request.headers)
    assert payload["type"] == "trigger.overdue"
    assert payload["data"]["task_id"] == task.id
    occurrence = datetime.fromisoformat(payload["data"]["scheduled_for"])
    assert occurrence == start
    assert timedelta(seconds=1) <= arrived - occurrence < timedelta(seconds=3)
    rows = await history(database, task.id)
    assert rows[0].status == "missed" and rows[0].trigger == "webhook"
    assert all(row.status == "missed" for row in rows)  # never fired here


def _completed() -> RunResult:
    return RunResult(RunStatus.COMPLETED, {"ok": True})
