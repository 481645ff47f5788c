"""The child process a scheduler delivers from by default (APFLOW_NOTIFY_IN_SCHEDULER=process):
started only once something is due, delivering signed events and reporting each outcome to its
parent; a child killed mid-delivery is replaced and the event delivered with its webhook-id;
a parent killed with SIGKILL leaves no child behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from processes import spawn, stop
from receiver import Receiver
from standardwebhooks.webhooks import Webhook

from apflow_server.config import Settings
from apflow_server.core.events import PING, Event
from apflow_server.notifications.worker import DispatcherProcess
from apflow_server.service import Principal, Service
from apflow_server.storage import notifications
from apflow_server.storage.database import Database

ALICE = Principal("alice", False, "jwt")

pytestmark = pytest.mark.slow


def running(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


async def until(condition, seconds: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_the_child_starts_when_something_is_due_and_reports_outcomes(
    database: Database, settings: Settings, service: Service
) -> None:
    outcomes: list[str] = []
    with Receiver() as receiver:
        created = await service.notifications.create(ALICE, url=receiver.url)
        child = DispatcherProcess(database, settings, on_outcome=outcomes.append)
        child.start()
        try:
            await asyncio.sleep(1.5)  # more than one look at the empty outbox
            assert child.pid is None  # nothing to deliver: no process
            await service.notifications.test(ALICE, created.endpoint.id)
            child.wake()
            [request] = await receiver.arrival(1)
            assert child.pid is not None and child.pid != os.getpid()
            await until(lambda: outcomes == ["delivered"])
            pid = child.pid
        finally:
            await child.stop()
    assert not running(pid)  # stopped in order with its parent
    assert Webhook(created.secret).verify(request.body, request.headers)["type"] == "ping"


async def test_a_child_killed_mid_delivery_is_replaced_and_the_event_delivered(
    database: Database, settings: Settings, service: Service
) -> None:
    outcomes: list[str] = []
    with Receiver(delay=6.0, delayed=1) as receiver:  # the first attempt hangs
        created = await service.notifications.create(ALICE, url=receiver.url)
        await service.notifications.test(ALICE, created.endpoint.id)
        child = DispatcherProcess(database, settings, on_outcome=outcomes.append)
        child.start()
        try:
            await receiver.arrival(1)  # the child is in the middle of its attempt
            first = child.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            # Another child, once the 4 s hold of the cut attempt has passed.
            requests = await receiver.arrival(2, seconds=20)
            assert child.pid not in {None, first}
            await until(lambda: outcomes == ["delivered"])
        finally:
            await child.stop()
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    assert Webhook(created.secret).verify(requests[1].body, requests[1].headers)["type"] == "ping"


async def test_a_scheduler_killed_with_sigkill_leaves_no_child_behind(
    database: Database, settings: Settings, service: Service, tmp_path: Path
) -> None:
    with Receiver() as receiver:
        created = await service.notifications.create(ALICE, url=receiver.url)
        async with database.transaction(write=True) as session:
            event = Event(PING, "alice", {}, endpoint_id=created.endpoint.id)
            await notifications.enqueue(session, [event], datetime.now(UTC))
        scheduler = spawn(database.url, tmp_path / "journal", "--poll", "60")
        try:
            await asyncio.to_thread(receiver.wait_for, 1, 20)
            [child] = children(scheduler.pid)
            scheduler.send_signal(signal.SIGKILL)
            scheduler.wait(10)
            await until(lambda: not running(child), seconds=10)
        finally:
            stop(scheduler)
