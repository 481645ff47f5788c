"""Notifications end to end on SQLite and PostgreSQL: endpoints, events written with their
cause, delivery to a real receiver on loopback, Standard Webhooks signatures verified by the
reference library, retries with one webhook-id, endpoints disabled after failing too long."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
import support  # noqa: F401  (test executors)
from receiver import Receiver
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from apflow_server.config import Settings
from apflow_server.core.errors import NotFoundError, ValidationError
from apflow_server.core.types import RunStatus, RunTrigger
from apflow_server.notifications import signing
from apflow_server.notifications.dispatcher import Dispatcher
from apflow_server.scheduler import InternalScheduler, SchedulerConfig
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.models import NotificationDelivery, NotificationEndpoint
from apflow_server.storage.repository import TaskRepository

ALICE = Principal("alice", False, "jwt")
BOB = Principal("bob", False, "jwt")


@pytest.fixture
def settings(database: Database, tmp_path) -> Settings:
    return Settings(
        home=tmp_path,
        database_url=database.url,
        notify_allow_private_urls=True,
        notify_retry_seconds=(0, 0, 0, 0),
        notify_timeout_seconds=2,
    )


async def deliveries(database: Database) -> list[NotificationDelivery]:
    async with database.transaction() as session:
        query = select(NotificationDelivery).order_by(NotificationDelivery.created_at)
        return list(await session.scalars(query))


async def failing_task(service: Service, caller: Principal | None = ALICE) -> str:
    (task,) = await service.tasks.create(
        caller, [{"name": "nightly", "params": {"executor_id": "test_fail"}}], batch=False
    )
    return str(task.id)


def test_signatures_verify_with_the_reference_library() -> None:
    secret = signing.new_secret()
    body = '{"type":"ping","timestamp":"2026-12-05T00:00:00Z","data":{}}'
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers(secret, "msg_1", now, body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(Exception):  # noqa: B017  (the library's own error type)
        Webhook(signing.new_secret()).verify(body, headers)


async def test_a_failed_run_is_delivered_once_signed(
    database: Database, settings: Settings, service: Service
) -> None:
    """A run fails in a real scheduler: one run.failed event, delivered by the dispatcher
    beside its claim loop, signed so that the reference library accepts it, naming the task,
    the run and the reason."""
    with Receiver() as receiver:
        created = await service.notifications.create(
            ALICE, url=receiver.url, events=["run.failed", "run.succeeded"]
        )
        task_id = await failing_task(service)
        scheduler = InternalScheduler(
            SchedulerConfig(poll_interval=60, heartbeat_interval=5),
            database=database,
            settings=settings,
        )
        await scheduler.start()
        try:
            run_id, outcome = await scheduler.run_and_wait(task_id, RunTrigger.MANUAL)
            assert outcome.status is RunStatus.FAILED
            [request] = await receiver.arrival(1)
            await asyncio.sleep(0.3)  # nothing else follows
        finally:
            await scheduler.stop()
    assert len(receiver.requests) == 1
    payload = Webhook(created.secret).verify(request.body, request.headers)
    assert payload["type"] == "run.failed"
    data = payload["data"]
    assert (data["task_id"], data["run_id"], data["task_name"]) == (task_id, run_id, "nightly")
    assert (data["status"], data["reason"], data["trigger"]) == ("failed", "boom", "manual")
    [stored] = await deliveries(database)
    assert (stored.id, stored.status, stored.attempts) == (
        request.headers["webhook-id"],
        "delivered",
        1,
    )


async def test_retries_keep_one_webhook_id_until_delivered(
    database: Database, settings: Settings, service: Service
) -> None:
    """500 three times, then 200: four attempts, one webhook-id, each signature valid."""
    with Receiver(statuses=[500, 500, 500]) as receiver:
        created = await service.notifications.create(ALICE, url=receiver.url)
        await service.notifications.test(ALICE, created.endpoint.id)
        dispatcher = Dispatcher(database, settings)
        try:
            for _ in range(4):
                assert await dispatcher.deliver_due() == 1
            assert await dispatcher.deliver_due() == 0
        finally:
            await dispatcher.stop()
    assert len(receiver.requests) == 4
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    for request in receiver.requests:
        assert Webhook(created.secret).verify(request.body, request.headers)["type"] == "ping"
    [stored] = await deliveries(database)
    assert (stored.status, stored.attempts, stored.last_status_code) == ("delivered", 4, 200)


async def test_retries_wait_their_back_off_and_then_give_up(
    database: Database, settings: Settings, service: Service
) -> None:
    settings = dataclasses.replace(settings, notify_retry_seconds=(0, 3600))
    with Receiver(statuses=[503] * 5) as receiver:
        created = await service.notifications.create(ALICE, url=receiver.url)
        await service.notifications.test(ALICE, created.endpoint.id)
        now = datetime.now(UTC)
        clock = [now]
        dispatcher = Dispatcher(database, settings, clock=lambda: clock[0])
        try:
            assert await dispatcher.deliver_due() == 1  # 1st fails: again at once
            assert await dispatcher.deliver_due() == 1  # 2nd fails: again in an hour
            assert await dispatcher.deliver_due() == 0
            clock[0] = now + timedelta(minutes=59)
            assert await dispatcher.deliver_due() == 0
            clock[0] = now + timedelta(minutes=61)
            assert await dispatcher.deliver_due() == 1  # 3rd fails: out of retries
            clock[0] = now + timedelta(days=2)
            assert await dispatcher.deliver_due() == 0
        finally:
            await dispatcher.stop()
    [stored] = await deliveries(database)
    assert (stored.status, stored.attempts) == ("failed", 3)
    assert stored.last_error == "the receiver answered 503"


async def test_an_endpoint_failing_too_long_is_disabled_with_a_reason(
    database: Database, settings: Settings, service: Service
) -> None:
    with Receiver() as receiver:
        url = receiver.url  # then nothing listens there
    settings = dataclasses.replace(settings, notify_disable_after=60)
    created = await service.notifications.create(ALICE, url=url)
    await service.notifications.test(ALICE, created.endpoint.id)
    await service.notifications.test(ALICE, created.endpoint.id)
    now = datetime.now(UTC)
    clock = [now]
    dispatcher = Dispatcher(database, settings, clock=lambda: clock[0])
    try:
        assert await dispatcher.deliver_due() == 2  # failing since now
        clock[0] = now + timedelta(seconds=61)
        assert await dispatcher.deliver_due() == 2  # still failing a minute later: disabled
        assert await dispatcher.deliver_due() == 0
    finally:
        await dispatcher.stop()
    [endpoint] = await service.notifications.listing(ALICE)
    assert endpoint.enabled is False
    assert endpoint.disabled_reason is not None
    assert endpoint.disabled_reason.startswith("every delivery failed for 61 s (last: cannot")
    assert {d.status for d in await deliveries(database)} == {"cancelled"}
    # Enabled again by its owner: the reason is cleared and a new ping is queued.
    await service.notifications.update(ALICE, endpoint.id, {"enabled": True})
    [endpoint] = await service.notifications.listing(ALICE)
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since) == (
        True,
        None,
        None,
    )


async def test_events_go_only_to_their_owners_endpoints_that_asked(
    database: Database, settings: Settings, service: Service
) -> None:
    with Receiver() as receiver:
        wants_failures = await service.notifications.create(
            ALICE, url=receiver.url, events=["run.failed"]
        )
        await service.notifications.create(ALICE, url=receiver.url, events=["run.succeeded"])
        await service.notifications.create(BOB, url=receiver.url, events=["run.failed"])
        task_id = await failing_task(service)
        scheduler = InternalScheduler(
            SchedulerConfig(poll_interval=60), database=database, settings=settings
        )
        await scheduler.start()
        try:
            await scheduler.run_and_wait(task_id, RunTrigger.MANUAL)
            [request] = await receiver.arrival(1)
            await asyncio.sleep(0.3)
        finally:
            await scheduler.stop()
    assert len(receiver.requests) == 1
    assert Webhook(wants_failures.secret).verify(request.body, request.headers)


async def test_a_user_cannot_see_or_touch_another_users_endpoint(
    database: Database, service: Service
) -> None:
    created = await service.notifications.create(ALICE, url="http://127.0.0.1:9/a")
    endpoint_id = created.endpoint.id
    for attempt in (
        service.notifications.get(BOB, endpoint_id),
        service.notifications.update(BOB, endpoint_id, {"enabled": False}),
        service.notifications.delete(BOB, endpoint_id),
        service.notifications.test(BOB, endpoint_id),
        service.notifications.deliveries(BOB, endpoint_id=endpoint_id),
    ):
        with pytest.raises(NotFoundError):
            await attempt
    assert await service.notifications.listing(BOB) == []
    await service.notifications.test(ALICE, endpoint_id)
    assert (await service.notifications.deliveries(BOB)).total == 0
    assert (await service.notifications.deliveries(ALICE)).total == 1
    with pytest.raises(Exception, match="your own"):
        await service.notifications.listing(BOB, "alice")
    with pytest.raises(Exception, match="another user"):
        await service.notifications.create(BOB, url="http://127.0.0.1:9/b", user_id="alice")
    [still] = await service.notifications.listing(ALICE)
    assert still.enabled is True


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": "ftp://example.com/x"}, "url", "must be an http or https URL with a host"),
        ({"url": "not a url"}, "url", "must be an http or https URL with a host"),
        ({"url": 5}, "url", "must be an http or https URL"),
        ({"url": "http://127.0.0.1/x"}, "url", "127.0.0.1 is a loopback address"),
        ({"url": "http://10.1.2.3/x"}, "url", "10.1.2.3 is a private address"),
        ({"url": "http://[::1]/x"}, "url", "::1 is a loopback address"),
        ({"url": "https://1.1.1.1/x", "events": ["run.exploded"]}, "events", "unknown event"),
        ({"url": "https://1.1.1.1/x", "events": []}, "events", "non-empty list"),
        ({"url": "https://1.1.1.1/x", "events": "run.failed"}, "events", "non-empty list"),
        ({"url": "https://1.1.1.1/x", "description": "x" * 501}, "description", "at most"),
    ],
)
async def test_bad_endpoints_are_refused_naming_the_field(
    database: Database, settings: Settings, fields: dict, field: str, message: str
) -> None:
    strict = dataclasses.replace(settings, notify_allow_private_urls=False)
    service = Service(strict, database, TaskRepository(database, settings=strict))
    with pytest.raises(ValidationError) as refused:
        await service.notifications.create(ALICE, **fields)
    assert refused.value.data == {"field": field}
    assert message in refused.value.message
    async with database.transaction() as session:
        assert list(await session.scalars(select(NotificationEndpoint))) == []


async def test_the_secret_is_stored_encrypted_and_never_listed(
    database: Database, service: Service, settings: Settings
) -> None:
    created = await service.notifications.create(ALICE, url="http://127.0.0.1:9/a")
    async with database.transaction() as session:
        [stored] = list(await session.scalars(select(NotificationEndpoint)))
    assert created.secret.startswith("whsec_")
    assert created.secret not in stored.secret_encrypted
    assert service.notifications.box.open(stored.secret_encrypted) == created.secret
    assert (settings.home / "secret.key").stat().st_mode & 0o777 == 0o600
