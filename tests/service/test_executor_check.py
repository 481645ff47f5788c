"""tasks.create and tasks.update refuse an executor nobody provides (the task would fail at
every run), naming the field, with nothing written; on both databases."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from apflow_server.config import Settings
from apflow_server.core.errors import ValidationError
from apflow_server.service import Service
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository


def service_for(database: Database, settings: Settings) -> Service:
    return Service(settings, database, TaskRepository(database, settings=settings))


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=database.url)


async def total(service: Service) -> int:
    return (await service.tasks.list_tasks(None)).total


async def test_create_refuses_an_unknown_executor_naming_the_field(
    database: Database, settings: Settings
) -> None:
    service = service_for(database, settings)
    cases = [
        ([{"name": "a", "params": {"executor_id": "nope_executor"}}], False, "params.executor_id"),
        ([{"name": "a", "schemas": {"method": "nope_executor"}}], False, "schemas.method"),
        (
            [
                {"id": "root", "name": "root", "params": {"executor_id": "echo_executor"}},
                {"name": "child", "parent_id": "root", "params": {"executor_id": "nope"}},
            ],
            True,
            "tasks[1].params.executor_id",
        ),
    ]
    for specs, batch, field in cases:
        with pytest.raises(ValidationError) as refused:
            await service.tasks.create(None, specs, batch=batch)
        assert refused.value.data == {"field": field}
        assert "nope" in refused.value.message
    assert await total(service) == 0

    (task,) = await service.tasks.create(
        None, [{"name": "ok", "params": {"executor_id": "echo_executor"}}], batch=False
    )
    with pytest.raises(ValidationError) as refused:
        await service.tasks.update(None, task.id, {"params": {"executor_id": "nope_executor"}})
    assert refused.value.data == {"field": "params.executor_id"}
    assert (await service.tasks.get(None, task.id)).params == {"executor_id": "echo_executor"}
    # A task without an executor is still fine (a parent aggregates its children).
    await service.tasks.update(None, task.id, {"params": {}})


async def test_unknown_executors_are_accepted_when_allowed(
    database: Database, settings: Settings
) -> None:
    service = service_for(database, dataclasses.replace(settings, allow_unknown_executors=True))
    (task,) = await service.tasks.create(
        None, [{"name": "a", "params": {"executor_id": "worker_only"}}], batch=False
    )
    assert task.params == {"executor_id": "worker_only"}
