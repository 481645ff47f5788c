"""The service's checks for feed keys, runs and schedulers: a user reaches only their own, on
both databases; the local operator (None) and admins reach everything."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.core.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthenticatedError,
)
from apflow_server.core.types import RunTrigger
from apflow_server.service import Principal, Service
from apflow_server.storage import instances
from apflow_server.storage.database import Database
from apflow_server.storage.models import RUNS, run_row
from apflow_server.storage.repository import TaskRepository

ALICE = Principal("alice", is_admin=False, source="jwt")
BOB = Principal("bob", is_admin=False, source="jwt")
ADMIN = Principal("root", is_admin=True, source="jwt")


@pytest.fixture
def service(database: Database, tmp_path: Path) -> Service:
    settings = Settings(home=tmp_path, database_url=database.url)
    return Service(settings, database, TaskRepository(database, settings=settings))


async def test_a_user_issues_lists_and_revokes_only_their_own_feed_keys(service: Service) -> None:
    with pytest.raises(ForbiddenError):
        await service.feeds.issue(ALICE, "bob")
    alices = await service.feeds.issue(ALICE, "alice", "phone")
    bobs = await service.feeds.issue(ADMIN, "bob")

    assert [key.id for key in await service.feeds.listing(ALICE)] == [alices.record.id]
    with pytest.raises(ForbiddenError):
        await service.feeds.listing(ALICE, "bob")
    assert {key.id for key in await service.feeds.listing(None)} == {
        alices.record.id,
        bobs.record.id,
    }

    # Another user's key is 'not found', exactly as an unknown id, and stays valid.
    with pytest.raises(NotFoundError):
        await service.feeds.revoke(ALICE, bobs.record.id)
    with pytest.raises(NotFoundError):
        await service.feeds.revoke(ALICE, "no-such-key")
    assert await service.feeds.user_of(bobs.key) == "bob"

    await service.feeds.revoke(ALICE, alices.record.id)
    with pytest.raises(UnauthenticatedError):
        await service.feeds.user_of(alices.key)


async def test_a_run_is_visible_only_to_its_tasks_owner(service: Service) -> None:
    (task,) = await service.tasks.create(ALICE, [{"name": "nightly"}], batch=False)
    now = utcnow()
    row = run_row(
        task.id, task.user_id, RunTrigger.MANUAL.value, None, "completed", now, started_at=now
    )
    async with service.database.transaction(write=True) as session:
        await session.execute(RUNS.insert().values(**row))

    assert (await service.runs.get_run(ALICE, row["id"])).task_id == task.id
    assert (await service.runs.get_run(ADMIN, row["id"])).task_id == task.id
    with pytest.raises(NotFoundError):
        await service.runs.get_run(BOB, row["id"])
    with pytest.raises(NotFoundError):
        await service.runs.get_run(None, "no-such-run")


async def test_only_an_admin_lists_schedulers_and_a_trigger_needs_one_that_takes_it(
    service: Service,
) -> None:
    (task,) = await service.tasks.create(ALICE, [{"name": "report"}], batch=False)
    with pytest.raises(ForbiddenError):
        await service.runs.live_schedulers(ALICE)
    with pytest.raises(ConflictError, match="no scheduler is running"):
        await service.runs.request_trigger(None, task.id)

    now = utcnow()
    base = {
        "host": "elsewhere",
        "pid": 4242,
        "mode": "internal",
        "state": "running",
        "started_at": now,
        "heartbeat_at": now,
        "stats": {"heartbeat_interval": 5},
    }
    await instances.beat(service.database, {**base, "id": "bobs", "user_filter": "bob"})
    await instances.beat(
        service.database,
        {**base, "id": "gone", "user_filter": None, "heartbeat_at": now - timedelta(hours=1)},
    )
    assert [row.id for row in await service.runs.live_schedulers(ADMIN)] == ["bobs"]
    with pytest.raises(ConflictError, match="only run other users' tasks"):
        await service.runs.request_trigger(ALICE, task.id)

    await instances.beat(service.database, {**base, "id": "all", "user_filter": None})
    with pytest.raises(ForbiddenError):
        await service.runs.request_trigger(BOB, task.id)
    requested, takers = await service.runs.request_trigger(ALICE, task.id)
    assert requested.id == task.id and [row.id for row in takers] == ["all"]
    assert (await service.tasks.get(None, task.id)).trigger_requested_at is not None
