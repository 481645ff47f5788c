"""Each event is written once per cause, in the transaction of its cause, with a payload that
names the task, the run, the occurrence and the reason (fixed clock; SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fixed_clock import Clock
from sqlalchemy import event, select

from apflow_server.config import Settings
from apflow_server.core.errors import ValidationError
from apflow_server.core.events import EVENT_TYPES
from apflow_server.core.types import RunStatus
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import NotificationDelivery
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
    return Settings(
        home=tmp_path,
        database_url=database.url,
        misfire_grace_seconds=60,
        notify_allow_private_urls=True,
    )


@pytest.fixture
def service(database: Database, settings: Settings, clock: Clock) -> Service:
    return Service(settings, database, TaskRepository(database, settings=settings, clock=clock))


@pytest.fixture
def store(database: Database, settings: Settings, clock: Clock) -> RunStore:
    return RunStore(database, settings, "instance-a", clock=clock)


async def events(database: Database) -> list[tuple[str, dict]]:
    async with database.transaction() as session:
        query = select(NotificationDelivery).order_by(NotificationDelivery.created_at)
        rows = list(await session.scalars(query))
    return [(row.event_type, json.loads(row.body)["data"]) for row in rows]


async def minutely(service: Service, owner: Principal | None = ALICE, **fields) -> str:
    spec = {
        "name": "job",
        "params": {"executor_id": "echo_executor"},
        "schedule_type": "interval",
        "schedule_expression": "60",
        "schedule_start_at": (T0 + MINUTE).isoformat(),
        "schedule_enabled": True,
        **fields,
    }
    (task,) = await service.tasks.create(owner, [spec], batch=False)
    return str(task.id)


@pytest.fixture
async def everything(service: Service) -> None:
    """An endpoint of alice's that asked for every event."""
    await service.notifications.create(ALICE, url="http://127.0.0.1:9/x", events=list(EVENT_TYPES))


@pytest.mark.usefixtures("everything")
async def test_missed_occurrences_are_announced_once_each(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    task_id = await minutely(service, schedule_misfire="skip")
    clock.now = T0 + 3 * MINUTE + timedelta(seconds=61)  # 1, 2 and 3 are beyond the grace
    assert await store.claim_due(10) == []
    await store.claim_due(10)  # nothing new: nothing announced again
    found = await events(database)
    assert [kind for kind, _ in found] == ["run.missed"] * 3
    assert [data["scheduled_for"] for _, data in found] == [
        "2025-06-02T12:01:00Z",
        "2025-06-02T12:02:00Z",
        "2025-06-02T12:03:00Z",
    ]
    data = found[0][1]
    assert (data["task_id"], data["task_name"], data["status"]) == (task_id, "job", "missed")
    assert data["reason"] == "late beyond the misfire grace (misfire skip)"
    assert data["run_id"]


@pytest.mark.usefixtures("everything")
async def test_pause_skip_and_resume_are_announced(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    task_id = await minutely(service)
    await service.schedules.pause(ALICE, task_id, note="maintenance")
    clock.now = T0 + MINUTE
    assert await store.claim_due(10) == []
    await service.schedules.resume(ALICE, task_id)
    found = await events(database)
    assert [kind for kind, _ in found] == ["schedule.paused", "run.skipped", "schedule.resumed"]
    assert found[0][1] == {"task_id": task_id, "task_name": "job", "note": "maintenance"}
    assert (found[1][1]["reason"], found[1][1]["status"]) == ("paused", "skipped")
    assert found[2][1]["note"] == "resumed by alice"


@pytest.mark.usefixtures("everything")
async def test_failures_auto_pause_and_recovery_are_announced(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    task_id = await minutely(service, pause_after_failures=2)
    outcomes = [RunStatus.FAILED, RunStatus.FAILED]
    for minute, status in enumerate(outcomes, start=1):
        clock.now = T0 + minute * MINUTE
        [run] = await store.claim_due(10)
        await store.finish(run, RunResult(status, None, "exit 1"))
    kinds = [kind for kind, _ in await events(database)]
    assert kinds == ["run.failed", "run.failed", "schedule.paused"]
    paused = (await events(database))[-1][1]
    assert paused["note"] == "paused after 2 consecutive failed runs"
    await service.schedules.resume(ALICE, task_id)
    clock.now = T0 + 3 * MINUTE
    [run] = await store.claim_due(10)
    await store.finish(run, RunResult(RunStatus.COMPLETED, {"ok": True}))
    kinds = [kind for kind, _ in await events(database)]
    # resume clears the failure count, so the success is a success, not a recovery
    assert kinds[3:] == ["schedule.resumed", "run.succeeded"]


@pytest.mark.usefixtures("everything")
async def test_a_success_after_failures_is_a_recovery(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    await minutely(service)
    for minute, status in enumerate([RunStatus.FAILED, RunStatus.COMPLETED], start=1):
        clock.now = T0 + minute * MINUTE
        [run] = await store.claim_due(10)
        await store.finish(run, RunResult(status, None, None))
    found = await events(database)
    assert [kind for kind, _ in found] == ["run.failed", "run.succeeded", "schedule.recovered"]
    assert found[2][1]["note"] == "completed after 1 failed run(s)"


@pytest.mark.usefixtures("everything")
async def test_a_run_that_starts_late_is_announced(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    await minutely(service, alert_late_after_seconds=10)
    clock.now = T0 + MINUTE + timedelta(seconds=5)  # late, but within its 10 s
    [run] = await store.claim_due(10)
    await store.finish(run, RunResult(RunStatus.COMPLETED))
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=30)
    [run] = await store.claim_due(10)
    found = [(kind, data) for kind, data in await events(database) if kind == "run.late"]
    assert len(found) == 1
    data = found[0][1]
    assert (data["run_id"], data["scheduled_for"]) == (run.run_id, "2025-06-02T12:02:00Z")
    assert data["lateness_seconds"] == 30.0
    assert data["reason"] == "started 30.0 s after its occurrence (alert after 10 s)"


async def test_no_endpoint_no_outbox_rows(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    await minutely(service, schedule_misfire="skip")
    clock.now = T0 + 3 * MINUTE + timedelta(seconds=61)
    await store.claim_due(10)
    assert await events(database) == []


@pytest.mark.usefixtures("everything")
async def test_a_run_that_runs_too_long_is_announced_once(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    await minutely(service, alert_max_duration_seconds=60)
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    clock.now = T0 + 2 * MINUTE - timedelta(seconds=1)
    assert await store.announce_too_long() == 0
    clock.now = T0 + 2 * MINUTE + timedelta(seconds=1)
    assert await store.announce_too_long() == 1
    assert await store.announce_too_long() == 0  # once per run
    [data] = [d for k, d in await events(database) if k == "run.too_long"]
    assert (data["run_id"], data["status"]) == (run.run_id, "running")
    assert data["reason"] == "still running 61 s after its start (alert after 60 s)"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("alert_late_after_seconds", 0),
        ("alert_late_after_seconds", 7 * 86400 + 1),
        ("alert_max_duration_seconds", -5),
        ("alert_max_duration_seconds", "60"),
        ("trigger_grace_seconds", 0),
        ("schedule_mode", "sometimes"),
    ],
)
async def test_thresholds_out_of_range_are_refused_naming_the_field(
    service: Service, database: Database, field: str, value: object
) -> None:
    with pytest.raises(ValidationError) as refused:
        await minutely(service, **{field: value})
    assert refused.value.data == {"field": field}
    assert (await service.tasks.list_tasks(None)).total == 0


@pytest.mark.usefixtures("everything")
async def test_one_batch_of_outcomes_announces_only_to_owners_with_an_enabled_endpoint(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    """Finishing reads, with each task, whether its owner has an enabled endpoint: alice has
    one, bob's is disabled, carol has none; one transaction records all three."""
    bob, carol = Principal("bob", False, "jwt"), Principal("carol", False, "jwt")
    endpoint = await service.notifications.create(
        bob, url="http://127.0.0.1:9/b", events=["run.succeeded"]
    )
    await service.notifications.update(bob, endpoint.endpoint.id, {"enabled": False})
    owners = {}
    for who in (ALICE, bob, carol):
        owners[await minutely(service, who)] = who.subject
    clock.now = T0 + MINUTE
    runs = await store.claim_due(10)
    assert len(runs) == 3
    await store.finish_many([(run, RunResult(RunStatus.COMPLETED)) for run in runs])
    found = await events(database)
    assert [(kind, owners[data["task_id"]]) for kind, data in found] == [("run.succeeded", "alice")]


@pytest.mark.usefixtures("everything")
async def test_outcomes_of_an_owner_without_endpoints_cost_no_outbox_query(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    await minutely(service, Principal("carol", False, "jwt"))
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    try:
        await store.finish_many([(run, RunResult(RunStatus.FAILED, None, "exit 1"))])
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
    # Only the flag read with the task (an EXISTS inside the task's own select).
    outbox_reads = [s for s in statements if "notification_endpoints" in s]
    assert len(outbox_reads) == 1 and "FROM tasks" in outbox_reads[0].replace("\n", " ")
    assert await events(database) == []


async def test_outcomes_of_tasks_without_an_owner_go_to_the_operators_endpoints(
    service: Service, store: RunStore, database: Database, clock: Clock
) -> None:
    """Authentication off: tasks and endpoints have no user. Finishing's endpoint flag matches
    a missing owner with the operator's endpoints."""
    await service.notifications.create(None, url="http://127.0.0.1:9/op", events=["run.failed"])
    task_id = await minutely(service, None)
    clock.now = T0 + MINUTE
    [run] = await store.claim_due(10)
    await store.finish_many([(run, RunResult(RunStatus.FAILED, None, "exit 1"))])
    found = await events(database)
    assert [(kind, data["task_id"]) for kind, data in found] == [("run.failed", task_id)]
