"""Previewing a schedule through the service: a stored task's (its max_runs counted) and
unsaved fields (nothing written), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fixed_clock import Clock

from apflow_server.config import Settings
from apflow_server.core.errors import ValidationError
from apflow_server.service import Service
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository

NOW = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)  # a Wednesday


@pytest.fixture
def repo(database: Database, tmp_path: Path) -> TaskRepository:
    settings = Settings(home=tmp_path, database_url=database.url)
    return TaskRepository(database, settings=settings, clock=Clock(NOW))


async def test_preview_of_a_stored_task_and_of_unsaved_fields(repo: TaskRepository) -> None:
    preview = Service(repo.settings, await repo.db(), repo).schedules.preview
    task = await repo.create_task(
        name="x", schedule_type="weekly", schedule_expression="1,3 09:00", max_runs=3
    )
    fires = await preview(None, task_id=task.id, count=10)
    assert fires == [
        datetime(2025, 3, 10, 9, 0, tzinfo=UTC),
        datetime(2025, 3, 12, 9, 0, tzinfo=UTC),
        datetime(2025, 3, 17, 9, 0, tzinfo=UTC),
    ]  # max_runs=3 caps the preview
    fires = await preview(None, schedule_type="interval", schedule_expression="1h", count=2)
    assert fires == [NOW + timedelta(hours=1), NOW + timedelta(hours=2)]
    fires = await preview(
        None,
        schedule_type="daily",
        schedule_expression="02:30",
        schedule_timezone="Europe/Berlin",
        after="2025-03-29T12:00:00Z",
        count=2,
    )
    # 02:30 does not exist on 30 March 2025 in Berlin: it fires at 03:30 CEST.
    assert fires == [
        datetime(2025, 3, 30, 1, 30, tzinfo=UTC),
        datetime(2025, 3, 31, 0, 30, tzinfo=UTC),
    ]
    once = {"schedule_type": "once", "schedule_expression": "2030-01-01T00:00:00Z"}
    assert await preview(None, **once) == [datetime(2030, 1, 1, tzinfo=UTC)]
    assert await preview(None, after="2031-01-01T00:00:00Z", **once) == []
    for bad, field in [
        ({"schedule_type": "daily", "schedule_expression": "9am"}, "schedule_expression"),
        ({"schedule_expression": "09:00"}, "schedule_type"),
        ({"schedule_type": "daily", "schedule_expression": "09:00", "name": "x"}, "name"),
        ({"schedule_type": "daily", "schedule_expression": "09:00", "count": 0}, "count"),
    ]:
        with pytest.raises(ValidationError) as caught:
            await preview(None, **bad)
        assert caught.value.field == field


async def test_a_task_without_a_schedule_has_nothing_to_preview(repo: TaskRepository) -> None:
    preview = Service(repo.settings, await repo.db(), repo).schedules.preview
    task = await repo.create_task(name="adhoc")
    with pytest.raises(ValidationError) as caught:
        await preview(None, task_id=task.id)
    assert caught.value.field == "schedule_type"
    with pytest.raises(ValidationError) as caught:
        await preview(None, task_id=task.id, schedule_type="daily")
    assert caught.value.field == "schedule_type"  # a task_id or a schedule, not both
