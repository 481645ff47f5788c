"""Writing schedule fields onto a task, and re-initialising its next run: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from apflow_server.core.errors import ValidationError
from apflow_server.schedules.plan import apply_schedule, next_run_from, schedule_of

NOW = datetime(2026, 3, 28, 12, 0, 30, 500_000, tzinfo=UTC)


def row(**fields: Any) -> Any:
    values: dict[str, Any] = {
        "id": "t1",
        "parent_id": None,
        "schedule_type": None,
        "schedule_expression": None,
        "schedule_timezone": "Europe/Berlin",
        "schedule_enabled": False,
        "schedule_start_at": None,
        "schedule_end_at": None,
        "schedule_anchor_at": None,
        "schedule_jitter_seconds": 0,
        "max_runs": None,
        "run_count": 0,
        "next_run_at": None,
        "due_at": None,
    }
    values.update(fields)
    return SimpleNamespace(**values)


def test_enabling_an_interval_anchors_its_grid_at_the_whole_second() -> None:
    task = row()
    values = {"schedule_type": "interval", "schedule_expression": "90s", "schedule_enabled": True}
    apply_schedule(task, values, NOW, was_enabled=False)
    assert task.schedule_anchor_at == datetime(2026, 3, 28, 12, 2, 0, tzinfo=UTC)
    assert task.next_run_at == task.due_at == task.schedule_anchor_at
    # Another field keeps the grid; the expression moves it.
    apply_schedule(task, {"max_runs": 5}, NOW + timedelta(hours=1), was_enabled=True)
    assert task.schedule_anchor_at == datetime(2026, 3, 28, 12, 2, 0, tzinfo=UTC)
    apply_schedule(task, {"schedule_expression": "60s"}, NOW, was_enabled=True)
    assert task.schedule_anchor_at == datetime(2026, 3, 28, 12, 1, 30, tzinfo=UTC)


def test_naive_bounds_are_wall_clock_times_in_the_zone_and_disabling_clears() -> None:
    task = row()
    values = {
        "schedule_type": "daily",
        "schedule_expression": "02:30",
        "schedule_start_at": datetime(2026, 3, 29, 0, 0),
        "schedule_enabled": True,
    }
    apply_schedule(task, values, NOW, was_enabled=False)
    assert task.schedule_start_at == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    # 02:30 does not exist on 2026-03-29 in Berlin (clocks jump to 03:00): RFC 5545 moves it.
    assert task.next_run_at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    apply_schedule(task, {"schedule_enabled": False}, NOW, was_enabled=True)
    assert task.next_run_at is None and task.due_at is None


@pytest.mark.parametrize(
    ("fields", "values", "field"),
    [
        ({"parent_id": "root"}, {"schedule_type": "daily"}, "schedule_type"),
        ({}, {"schedule_enabled": True}, "schedule_type"),
        ({}, {"schedule_type": "cron", "schedule_enabled": True}, "schedule_expression"),
        (
            {"run_count": 3, "max_runs": 3},
            {"schedule_type": "daily", "schedule_expression": "09:00", "schedule_enabled": True},
            "max_runs",
        ),
        (
            {},
            {
                "schedule_type": "daily",
                "schedule_expression": "09:00",
                "schedule_end_at": NOW - timedelta(days=1),
                "schedule_enabled": True,
            },
            "schedule_end_at",
        ),
    ],
)
def test_a_schedule_that_cannot_be_stored_names_the_field(
    fields: dict[str, Any], values: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        apply_schedule(row(**fields), values, NOW, was_enabled=False)
    assert refused.value.field == field


def test_next_run_from_a_given_instant_or_from_now() -> None:
    task = row(schedule_type="daily", schedule_expression="09:00", schedule_timezone="UTC")
    schedule = schedule_of(task)
    assert next_run_from(schedule, task, NOW, None) == datetime(2026, 3, 29, 9, tzinfo=UTC)
    after = datetime(2026, 4, 1, 10, tzinfo=UTC)
    assert next_run_from(schedule, task, NOW, after) == datetime(2026, 4, 2, 9, tzinfo=UTC)
    spent = row(**{**vars(task), "max_runs": 1, "run_count": 1})
    assert next_run_from(schedule, spent, NOW, after) is None
    once = row(schedule_type="once", schedule_expression="2026-04-01T09:00:00Z")
    assert next_run_from(schedule_of(once), once, NOW, after) is None  # before `after`
