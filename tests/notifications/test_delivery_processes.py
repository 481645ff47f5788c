"""Delivery by real scheduler processes (SQLite and PostgreSQL): a process killed with SIGKILL
in the middle of a delivery loses nothing (another delivers it, same webhook-id), and two
processes share the outbox so each event is delivered once (a repeat only as the at-least-once
contract allows, with its webhook-id)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from processes import spawn, stop
from receiver import Receiver
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from apflow_server.core.events import PING, Event
from apflow_server.service import Principal, Service
from apflow_server.storage import notifications
from apflow_server.storage.database import Database
from apflow_server.storage.models import NotificationDelivery

ALICE = Principal("alice", False, "jwt")

pytestmark = pytest.mark.slow


async def stored(database: Database) -> list[NotificationDelivery]:
    async with database.transaction() as session:
        return list(await session.scalars(select(NotificationDelivery)))


async def test_a_delivery_cut_by_sigkill_is_delivered_by_another_process(
    database: Database, service: Service, tmp_path: Path
) -> None:
    with Receiver(delay=6.0, delayed=1) as receiver:  # the first attempt hangs
        created = await service.notifications.create(ALICE, url=receiver.url)
        await service.notifications.test(ALICE, created.endpoint.id)
        first = spawn(database.url, tmp_path / "journal", "--poll", "60")
        try:
            receiver.wait_for(1)  # first is in the middle of its attempt
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            stop(first)
        second = spawn(database.url, tmp_path / "journal", "--poll", "60")
        try:
            requests = receiver.wait_for(2, seconds=15)  # once the 4 s hold has passed
        finally:
            stop(second)
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    assert Webhook(created.secret).verify(requests[1].body, requests[1].headers)["type"] == "ping"
    [delivery] = await stored(database)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)


async def test_two_processes_deliver_each_event_once(
    database: Database, service: Service, tmp_path: Path
) -> None:
    with Receiver() as receiver:
        created = await service.notifications.create(ALICE, url=receiver.url)
        processes = [spawn(database.url, tmp_path / "journal", "--poll", "60") for _ in range(2)]
        try:
            async with database.transaction(write=True) as session:
                events = [
                    Event(PING, "alice", {"n": n}, endpoint_id=created.endpoint.id)
                    for n in range(300)
                ]
                assert await notifications.enqueue(session, events, datetime.now(UTC)) == 300
            requests = receiver.wait_for(300, seconds=30)
            await asyncio.sleep(0.5)  # anything sent twice would have arrived by now
        finally:
            for process in processes:
                stop(process)
    ids = Counter(request.headers["webhook-id"] for request in receiver.requests)
    assert len(ids) == 300 and set(ids.values()) == {1}
    numbers = sorted(
        Webhook(created.secret).verify(r.body, r.headers)["data"]["n"] for r in requests
    )
    assert numbers == list(range(300))
    assert {d.status for d in await stored(database)} == {"delivered"}
