"""The misfire and overlap decisions, on plain values (no database)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from apflow_server.core.errors import ValidationError
from apflow_server.core.types import OverlapPolicy, RunStatus
from apflow_server.schedules import Schedule
from apflow_server.schedules.plan import draft_schedule
from apflow_server.schedules.policy import (
    OCCURRENCE_CHUNK,
    DueDecision,
    decide_after_run,
    decide_due,
    decide_external_run,
    end_may_start_another,
)

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
GRACE = timedelta(seconds=60)
EVERY_MINUTE = Schedule.parse("interval", "60", "UTC", start_at=T0)


@dataclass
class Row:
    next_run_at: datetime | None
    schedule_misfire: str = "run_once"
    schedule_overlap: str = "skip"
    id: str = "task"
    schedule_type: str | None = "interval"
    schedule_expression: str | None = "60"
    schedule_timezone: str = "UTC"
    schedule_start_at: datetime | None = T0
    schedule_end_at: datetime | None = None
    schedule_anchor_at: datetime | None = None
    schedule_jitter_seconds: int = 0
    max_runs: int | None = None
    run_count: int = 0
    schedule_enabled: bool = True
    due_at: datetime | None = None

    def __post_init__(self) -> None:
        self.due_at = self.next_run_at  # no jitter


def minutes(*numbers: int) -> list[datetime]:
    return [T0 + n * MINUTE for n in numbers]


def due(row: Row, now: datetime, max_catchup_runs: int = 100) -> DueDecision:
    return decide_due(
        EVERY_MINUTE, row, now, misfire_grace=GRACE, max_catchup_runs=max_catchup_runs
    )


def test_an_occurrence_within_the_grace_fires_with_nothing_missed() -> None:
    decision = due(Row(next_run_at=T0 + MINUTE), now=T0 + MINUTE + GRACE)
    assert (decision.fire, decision.missed) == (T0 + MINUTE, [])


@pytest.mark.parametrize(
    ("policy", "fire", "missed"),
    [
        ("skip", None, minutes(1, 2, 3, 4)),
        ("run_once", T0 + 4 * MINUTE, minutes(1, 2, 3)),
        ("run_all", T0 + 3 * MINUTE, minutes(1, 2)),  # the last two, oldest first
    ],
)
def test_a_misfire_follows_the_task_policy(
    policy: str, fire: datetime | None, missed: list[datetime]
) -> None:
    # Down from 12:01 to 12:05:30: 12:01-12:04 are later than the grace, 12:05 is not.
    now = T0 + 5 * MINUTE + timedelta(seconds=30)
    decision = due(Row(T0 + MINUTE, schedule_misfire=policy), now, max_catchup_runs=2)
    assert (decision.fire, decision.missed) == (fire, missed)
    if fire is None:
        assert decision.following == T0 + 5 * MINUTE


def test_a_backlog_longer_than_a_chunk_is_recorded_a_chunk_at_a_time() -> None:
    now = T0 + (OCCURRENCE_CHUNK + 10) * MINUTE
    decision = due(Row(T0 + MINUTE), now)
    assert decision.fire is None
    assert decision.missed == minutes(*range(1, OCCURRENCE_CHUNK + 1))
    assert decision.following == T0 + (OCCURRENCE_CHUNK + 1) * MINUTE


def test_after_a_run_nothing_is_decided_when_nothing_came_due() -> None:
    started, now = T0 + MINUTE, T0 + MINUTE + timedelta(seconds=30)
    assert decide_after_run(EVERY_MINUTE, Row(T0 + 2 * MINUTE), started, now) is None


def test_after_a_run_an_older_backlog_is_left_to_the_claim() -> None:
    # run_all catch-up: 12:02 was due before this run started at 12:05.
    started, now = T0 + 5 * MINUTE, T0 + 5 * MINUTE + timedelta(seconds=5)
    assert decide_after_run(EVERY_MINUTE, Row(T0 + 2 * MINUTE), started, now) is None


@pytest.mark.parametrize(
    ("policy", "fire", "skipped", "following"),
    [
        ("skip", None, minutes(2, 3), T0 + 4 * MINUTE),
        ("buffer_one", T0 + 2 * MINUTE, minutes(3), T0 + 4 * MINUTE),
        ("cancel_other", T0 + 3 * MINUTE, minutes(2), None),  # None: the one after the fired
    ],
)
def test_occurrences_that_came_due_during_a_run_follow_the_overlap_policy(
    policy: str, fire: datetime | None, skipped: list[datetime], following: datetime | None
) -> None:
    started, now = T0 + MINUTE, T0 + 3 * MINUTE + timedelta(seconds=10)
    row = Row(T0 + 2 * MINUTE, schedule_overlap=policy)
    decision = decide_after_run(EVERY_MINUTE, row, started, now)
    assert decision is not None
    assert (decision.fire, decision.skipped, decision.following) == (fire, skipped, following)


def test_a_disabled_schedule_decides_nothing_after_a_run() -> None:
    row = Row(T0 + 2 * MINUTE, schedule_enabled=False)
    assert decide_after_run(EVERY_MINUTE, row, T0 + MINUTE, T0 + 5 * MINUTE) is None


# ---------------------------------------------------------------------- external runs


def test_an_external_run_serves_the_due_occurrence_and_moves_past_now() -> None:
    row = Row(next_run_at=T0, due_at=T0)
    now = T0 + timedelta(seconds=30)
    decided = decide_external_run(
        EVERY_MINUTE, row, now, success=False, error="boom", calculate_next_run=True
    )
    assert decided.occurrence == T0
    assert (decided.status, decided.error) == (RunStatus.FAILED, "boom")
    assert (decided.move, decided.following) == (True, T0 + MINUTE)


def test_an_external_run_before_the_occurrence_serves_none() -> None:
    row = Row(next_run_at=T0 + MINUTE, due_at=T0 + MINUTE)
    decided = decide_external_run(
        EVERY_MINUTE, row, T0, success=True, error="ignored", calculate_next_run=True
    )
    assert decided.occurrence is None
    assert (decided.status, decided.error) == (RunStatus.COMPLETED, None)
    assert decided.following == T0 + MINUTE


def test_the_run_that_uses_up_max_runs_ends_the_schedule() -> None:
    row = Row(next_run_at=T0, due_at=T0, max_runs=2, run_count=1)
    decided = decide_external_run(
        EVERY_MINUTE, row, T0, success=True, error=None, calculate_next_run=True
    )
    assert (decided.move, decided.following) == (True, None)


def test_an_external_run_leaves_the_schedule_when_asked_or_when_there_is_none() -> None:
    row = Row(next_run_at=T0, due_at=T0)
    kept = decide_external_run(
        EVERY_MINUTE, row, T0, success=False, error=None, calculate_next_run=False
    )
    assert (kept.move, kept.following, kept.error) == (False, None, "failed")
    unscheduled = decide_external_run(
        None, Row(next_run_at=None), T0, success=True, error=None, calculate_next_run=True
    )
    assert (unscheduled.occurrence, unscheduled.move) == (None, False)


# ---------------------------------------------------------------------- draft schedules


def test_a_draft_interval_without_a_start_counts_from_now() -> None:
    schedule, remaining = draft_schedule(
        {"schedule_type": "interval", "schedule_expression": "1h", "max_runs": 2},
        default_timezone="UTC",
        now=T0 + timedelta(microseconds=5),
    )
    assert schedule.next_after(T0) == T0 + timedelta(hours=1)
    assert remaining == 2


def test_a_draft_reads_wall_clock_bounds_in_its_zone() -> None:
    schedule, remaining = draft_schedule(
        {
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "schedule_start_at": "2025-03-10T00:00:00",
        },
        default_timezone="America/New_York",
        now=T0,
    )
    assert schedule.start_at == datetime(2025, 3, 10, 4, 0, tzinfo=UTC)  # EDT midnight
    assert remaining is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"schedule_expression": "09:00"}, "schedule_type"),
        ({"schedule_type": "daily"}, "schedule_expression"),
        ({"schedule_type": "daily", "schedule_expression": "09:00", "name": "x"}, "name"),
        ({"schedule_type": "monthly", "schedule_expression": "BD1 09:00"}, "schedule_expression"),
        (
            {"schedule_type": "daily", "schedule_expression": "09:00", "schedule_calendar": "x"},
            "schedule_calendar",
        ),
    ],
)
def test_a_draft_names_the_field_it_cannot_use(fields: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        draft_schedule(fields, default_timezone="UTC", now=T0)
    assert caught.value.field == field


def test_which_overlap_policies_may_start_a_waiting_occurrence_when_a_run_ends() -> None:
    may = {policy.value: end_may_start_another(policy.value) for policy in OverlapPolicy}
    assert may == {
        "skip": False,
        "allow_all": False,
        "buffer_one": True,
        "buffer_all": True,
        "cancel_other": True,
        "terminate_other": True,
    }
