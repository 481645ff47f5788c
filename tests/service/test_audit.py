"""The audit log on both databases: who changed what, with the names of the fields changed,
seen by the owner of the object (and admins), filtered by object, actor and time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apflow_server.config import Settings
from apflow_server.core.errors import ForbiddenError, ValidationError
from apflow_server.service import Principal, Service
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository

ALICE = Principal("alice", False, "jwt")
BOB = Principal("bob", False, "jwt")
ADMIN = Principal("root", True, "jwt")
HOOK = Principal(None, False, "hmac")


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=database.url, notify_allow_private_urls=True)


@pytest.fixture
def service(database: Database, settings: Settings) -> Service:
    repository = TaskRepository(database, settings=settings)
    return Service(settings, database, repository, local_actor="cli:tester")


async def create(service: Service, caller: Principal | None, name: str) -> str:
    spec = {"name": name, "params": {"executor_id": "echo_executor"}}
    (task,) = await service.tasks.create(caller, [spec], batch=False)
    return str(task.id)


def summary(page) -> list[tuple[str, str, str, list[str]]]:  # type: ignore[no-untyped-def]
    return [(e.actor, e.action, e.target_id, list(e.fields)) for e in reversed(page.items)]


async def test_changes_are_recorded_with_actor_action_target_and_field_names(
    service: Service,
) -> None:
    task_id = await create(service, ALICE, "report")
    await service.tasks.update(ALICE, task_id, {"name": "weekly report", "priority": 1})
    await service.tasks.update(
        ALICE,
        task_id,
        {"schedule_type": "daily", "schedule_expression": "09:00", "schedule_enabled": True},
    )
    await service.schedules.pause(ALICE, task_id, note="holiday")
    await service.schedules.resume(ALICE, task_id)
    await service.feeds.issue(ALICE, "alice", label="phone")
    await service.tasks.delete(ALICE, task_id)
    entries = summary(await service.audit.listing(ALICE))
    assert entries[:6] == [
        ("alice", "task.create", task_id, ["name", "params", "user_id"]),
        ("alice", "task.update", task_id, ["name", "priority"]),
        (
            "alice",
            "task.update",
            task_id,
            ["schedule_enabled", "schedule_expression", "schedule_type"],
        ),
        ("alice", "schedule.pause", task_id, ["note", "schedule_paused", "until"]),
        ("alice", "schedule.resume", task_id, ["schedule_paused"]),
        ("alice", "feed_key.issue", entries[5][2], ["label"]),
    ]
    assert entries[6] == ("alice", "task.delete", task_id, [])


async def test_each_user_sees_their_own_objects_entries_and_admins_all(
    service: Service,
) -> None:
    alices = await create(service, ALICE, "a")
    bobs = await create(service, BOB, "b")
    await service.tasks.update(ADMIN, alices, {"priority": 0})  # an admin on alice's task
    await create(service, None, "local")  # the CLI
    alice_sees = summary(await service.audit.listing(ALICE))
    assert [(actor, action, target) for actor, action, target, _ in alice_sees] == [
        ("alice", "task.create", alices),
        ("root", "task.update", alices),
    ]
    assert [e[2] for e in summary(await service.audit.listing(BOB))] == [bobs]
    everyone = summary(await service.audit.listing(ADMIN))
    assert [e[0] for e in everyone] == ["alice", "bob", "root", "cli:tester"]
    assert [e[0] for e in summary(await service.audit.listing(None, actor="bob"))] == ["bob"]
    assert [e[2] for e in summary(await service.audit.listing(ADMIN, task_id=bobs))] == [bobs]
    with pytest.raises(ForbiddenError):
        await service.audit.listing(BOB, user_id="alice")


async def test_time_window_and_bad_filters(service: Service) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    await create(service, ALICE, "a")
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert (await service.audit.listing(ALICE, since=before.isoformat())).total == 1
    assert (await service.audit.listing(ALICE, since=after.isoformat())).total == 0
    assert (await service.audit.listing(ALICE, until=before.isoformat())).total == 0
    with pytest.raises(ValidationError) as refused:
        await service.audit.listing(ALICE, since="yesterday")
    assert refused.value.data == {"field": "since"}
    with pytest.raises(ValidationError) as refused:
        await service.audit.listing(ALICE, actor=5)
    assert refused.value.data == {"field": "actor"}


async def test_concurrent_changes_are_each_recorded_once(service: Service) -> None:
    """Records made at once share transactions; none is lost or doubled."""
    ids = await asyncio.gather(*(create(service, ALICE, f"t{i}") for i in range(40)))
    page = await service.audit.listing(ALICE, limit=1000)
    assert sorted(e.target_id for e in page.items) == sorted(ids)


async def test_a_webhook_verifier_is_named_as_the_actor(service: Service) -> None:
    assert service.audit.actor(HOOK) == "hmac"
    assert service.audit.actor(None) == "cli:tester"
    assert service.audit.actor(ALICE) == "alice"
