"""A command task's `env` is checked when the task is written, on SQLite and PostgreSQL: names
outside APFLOW_COMMAND_ENV_ALLOWLIST are refused (field inputs.env) and nothing is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from apflow_server.config import Settings
from apflow_server.core.errors import ValidationError
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, task_to_dict
from apflow_server.storage.repository import TaskRepository

COMMAND = {"executor_id": "command_executor"}
BY_METHOD = {"method": "command_executor"}
SSH = {"GIT_SSH_COMMAND": "sh -c 'touch /tmp/escaped' #"}


@pytest.fixture
def repo(database: Database, tmp_path: Path) -> TaskRepository:
    settings = Settings(
        home=tmp_path, database_url=database.url, command_env_allowlist=("LANG", "TZ")
    )
    return TaskRepository(database, settings=settings)


async def count_tasks(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Task)) or 0)


def refusal(error: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    return error.value.field, error.value.reason


@pytest.mark.parametrize(
    "fields",
    [
        {"params": COMMAND, "inputs": {"command": ["git", "ls-remote"], "env": SSH}},
        {"schemas": BY_METHOD, "inputs": {"env": {"LD_PRELOAD": "/x.so"}}},
        {"params": COMMAND, "inputs": {"env": {"LANG": "C", "PATH": "/tmp"}}},
        {"params": {"executor_id": "echo_executor"}, "schemas": BY_METHOD, "inputs": {"env": SSH}},
    ],
    ids=["executor_id", "schemas.method", "one-unlisted", "either-names-it"],
)
async def test_create_refuses_unlisted_env_names(
    repo: TaskRepository, database: Database, fields: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError) as refused:
        await repo.create_task(name="cmd", **fields)
    field, reason = refusal(refused)
    assert field == "inputs.env"
    assert "may not be set: it is not in APFLOW_COMMAND_ENV_ALLOWLIST" in reason
    assert await count_tasks(database) == 0


async def test_a_tree_names_the_task_and_writes_nothing(
    repo: TaskRepository, database: Database
) -> None:
    with pytest.raises(ValidationError) as refused:
        await repo.create_tasks(
            [
                {"name": "root"},
                {"name": "ok", "parent_id": "root", "params": COMMAND, "inputs": {"env": {}}},
                {"name": "bad", "parent_id": "root", "params": COMMAND, "inputs": {"env": SSH}},
            ]
        )
    assert refused.value.field == "tasks[2].inputs.env"
    assert "'GIT_SSH_COMMAND'" in refused.value.reason
    assert await count_tasks(database) == 0


async def test_env_must_be_an_object(repo: TaskRepository, database: Database) -> None:
    with pytest.raises(ValidationError) as refused:
        await repo.create_task(name="cmd", params=COMMAND, inputs={"env": "PATH=/tmp"})
    assert refusal(refused) == ("inputs.env", "must be an object of variable names and values")
    assert await count_tasks(database) == 0


async def test_listed_names_and_other_executors_are_accepted(repo: TaskRepository) -> None:
    listed = await repo.create_task(
        name="cmd", params=COMMAND, inputs={"command": ["date"], "env": {"TZ": "UTC", "LANG": "C"}}
    )
    assert listed.inputs["env"] == {"TZ": "UTC", "LANG": "C"}
    # `env` means nothing to other executors: their inputs are theirs.
    echo = await repo.create_task(
        name="echo", params={"executor_id": "echo_executor"}, inputs={"env": SSH}
    )
    assert echo.inputs["env"] == SSH


async def test_update_refuses_unlisted_env_names(repo: TaskRepository) -> None:
    task = await repo.create_task(name="cmd", params=COMMAND, inputs={"command": ["true"]})
    before = task_to_dict(task)
    with pytest.raises(ValidationError) as refused:
        await repo.update_task(task.id, inputs={"command": ["true"], "env": SSH})
    assert refused.value.field == "inputs.env"
    assert "'GIT_SSH_COMMAND'" in refused.value.reason
    stored = await repo.get_task_by_id(task.id)
    assert stored is not None and task_to_dict(stored) == before


@pytest.mark.parametrize(
    "switch",
    [{"params": COMMAND}, {"schemas": BY_METHOD}],
    ids=["params.executor_id", "schemas.method"],
)
async def test_switching_a_task_to_commands_checks_its_stored_env(
    repo: TaskRepository, switch: dict[str, Any]
) -> None:
    task = await repo.create_task(
        name="echo", params={"executor_id": "echo_executor"}, inputs={"env": SSH}
    )
    before = task_to_dict(task)
    with pytest.raises(ValidationError) as refused:
        await repo.update_task(task.id, **switch)
    assert refused.value.field == "inputs.env"
    stored = await repo.get_task_by_id(task.id)
    assert stored is not None and task_to_dict(stored) == before


async def test_update_with_listed_names_or_without_env_succeeds(repo: TaskRepository) -> None:
    task = await repo.create_task(name="cmd", params=COMMAND, inputs={"command": ["true"]})
    updated = await repo.update_task(task.id, inputs={"command": ["date"], "env": {"TZ": "UTC"}})
    assert updated.inputs == {"command": ["date"], "env": {"TZ": "UTC"}}
    renamed = await repo.update_task(task.id, name="renamed")
    assert renamed.name == "renamed"
