"""The misfire and overlap rules, as decisions over a task's schedule position.

Pure: storage calls these inside the transaction that holds the task's row, and applies what
they decide (records the missed or skipped occurrences, starts the run, moves the schedule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from apflow_server.core.types import CalendarRule, MisfirePolicy, OverlapPolicy, RunStatus
from apflow_server.schedules.plan import (
    ScheduledRow,
    Timetable,
    fire_after,
    occurrences_due,
)

# Occurrences examined per decision. A backlog longer than this (a schedule down for years)
# is walked a chunk per claim, recording each chunk as missed, so one claim stays bounded.
OCCURRENCE_CHUNK = 1000


class PolicyRow(ScheduledRow, Protocol):
    schedule_misfire: str
    schedule_overlap: str


class HoldRow(Protocol):
    """What an operator set on a schedule: a pause (with its end) and skips."""

    schedule_paused: bool
    schedule_paused_until: datetime | None
    schedule_skip_count: int
    schedule_skip_by: str | None


PAUSED = "paused"


def paused_at(task: HoldRow, occurrence: datetime) -> bool:
    """Whether the occurrence falls due while the schedule is paused (a pause with an end
    covers the occurrences before it)."""
    return task.schedule_paused and (
        task.schedule_paused_until is None or occurrence < task.schedule_paused_until
    )


def closed_reason(schedule: Timetable | None, occurrence: datetime) -> str | None:
    """Why its business calendar skips an occurrence (the closed day's name), or None: only
    under the `skip` rule; the other rules moved the occurrence to a business day already."""
    rule = getattr(schedule, "rule", None)
    if schedule is None or rule != CalendarRule.SKIP:
        return None
    reason: str | None = schedule.closed_reason(occurrence)  # type: ignore[union-attr]
    return reason


def held_reason(
    task: HoldRow, occurrence: datetime, schedule: Timetable | None = None
) -> str | None:
    """Why an occurrence that would run is recorded skipped instead, or None: paused, else
    a day its business calendar closes, else one of the skips an operator asked for (a
    closed day does not use one up)."""
    if paused_at(task, occurrence):
        return PAUSED
    closed = closed_reason(schedule, occurrence)
    if closed is not None:
        return closed
    if task.schedule_skip_count > 0:
        return f"skipped by {task.schedule_skip_by or 'an operator'}"
    return None


def holds_ahead(
    task: HoldRow, fires: Sequence[datetime], schedule: Timetable | None = None
) -> list[str | None]:
    """For upcoming fire times in order, why each will be recorded skipped (None: it runs),
    as the claim will decide: paused ones, closed days, then the skips left, one per
    occurrence."""
    skips = task.schedule_skip_count
    reasons: list[str | None] = []
    for fire in fires:
        closed = closed_reason(schedule, fire)
        if paused_at(task, fire):
            reasons.append(PAUSED)
        elif closed is not None:
            reasons.append(closed)
        elif skips > 0:
            skips -= 1
            reasons.append(f"skipped by {task.schedule_skip_by or 'an operator'}")
        else:
            reasons.append(None)
    return reasons


def after_failure(failures: int, pause_after: int | None) -> str | None:
    """The pause note when `failures` failed runs in a row reach `pause_after`, else None."""
    if pause_after is not None and failures >= pause_after:
        return f"paused after {failures} consecutive failed runs"
    return None


@dataclass(frozen=True)
class DueDecision:
    """What to do with a task whose occurrence is due."""

    fire: datetime | None  # the occurrence to run now, if any
    missed: list[datetime] = field(default_factory=list)  # recorded as missed, not run
    following: datetime | None = None  # where the schedule moves when nothing fires


def decide_due(
    schedule: Timetable,
    task: PolicyRow,
    now: datetime,
    *,
    misfire_grace: timedelta,
    max_catchup_runs: int,
) -> DueDecision:
    """An occurrence due within `misfire_grace` fires. Later than that it is a misfire, and the
    task's misfire policy chooses among the late occurrences: `skip` fires none, `run_once`
    the most recent, `run_all` the oldest of the most recent `max_catchup_runs` (the others
    follow one claim at a time). Every late occurrence before the one fired is missed."""
    assert task.next_run_at is not None and task.due_at is not None
    late_cutoff = now - misfire_grace
    if task.due_at > late_cutoff:  # on time
        return DueDecision(fire=task.next_run_at)
    late, following = occurrences_due(
        schedule, task, task.next_run_at, late_cutoff, OCCURRENCE_CHUNK
    )
    policy = MisfirePolicy(task.schedule_misfire)
    backlog_continues = len(late) == OCCURRENCE_CHUNK and following is not None
    fire: datetime | None
    if backlog_continues or policy is MisfirePolicy.SKIP:
        fire = None
    elif policy is MisfirePolicy.RUN_ONCE:
        fire = late[-1]
    else:  # RUN_ALL
        fire = late[-max_catchup_runs:][0]
    missed = [occurrence for occurrence in late if fire is None or occurrence < fire]
    return DueDecision(fire=fire, missed=missed, following=following)


@dataclass(frozen=True)
class AfterRunDecision:
    """What the overlap policy does with the occurrences that came due during a run."""

    skipped: list[datetime]
    fire: datetime | None  # the buffered occurrence to run now (buffer_one)
    # Where the schedule moves; with `fire` and None here, to the occurrence after `fire`.
    following: datetime | None


def end_may_start_another(overlap: str) -> bool:
    """Whether the end of a run can start an occurrence that waited for it (see
    decide_after_run): buffer_one, buffer_all, cancel_other and terminate_other can; skip
    and allow_all never do."""
    return overlap not in (OverlapPolicy.SKIP.value, OverlapPolicy.ALLOW_ALL.value)


def decide_after_run(
    schedule: Timetable, task: PolicyRow, started: datetime, now: datetime
) -> AfterRunDecision | None:
    """None when nothing came due during the run (started at `started`, ending `now`).
    Occurrences older than the run (a run_all catch-up backlog) are left to the claim.

    `buffer_one` kept the first that came due and runs it now; the buffer was full for the
    rest. `buffer_all` kept them all: the oldest runs now, the next when it ends. `cancel_other`
    runs the newest now: its claim would have cancelled this run had the run not ended first.
    `allow_all` claimed them beside the run. `skip` skips them all."""
    if not task.schedule_enabled or task.next_run_at is None or task.due_at is None:
        return None
    policy = OverlapPolicy(task.schedule_overlap)
    if policy is OverlapPolicy.ALLOW_ALL:
        return None  # what came due was claimed beside the run
    # buffer_all drains its whole buffer, one run after another, however old
    if task.due_at > now or (task.next_run_at < started and policy is not OverlapPolicy.BUFFER_ALL):
        return None
    during, following = occurrences_due(schedule, task, task.next_run_at, now, OCCURRENCE_CHUNK)
    if policy is OverlapPolicy.BUFFER_ALL:
        # The oldest waiting runs now; the schedule stays at the next, which runs when this
        # one ends (at most OCCURRENCE_CHUNK are looked at per step).
        return AfterRunDecision(skipped=[], fire=during[0], following=None)
    if policy is OverlapPolicy.BUFFER_ONE:
        return AfterRunDecision(
            skipped=during[1:],
            fire=during[0],
            following=following if len(during) > 1 else None,
        )
    if policy in (OverlapPolicy.CANCEL_OTHER, OverlapPolicy.TERMINATE_OTHER):
        return AfterRunDecision(skipped=during[:-1], fire=during[-1], following=None)
    return AfterRunDecision(skipped=during, fire=None, following=following)


@dataclass(frozen=True)
class ExternalRunDecision:
    """What a run reported by an external scheduler records (`tasks.scheduled.complete`)."""

    occurrence: datetime | None  # the occurrence it served: the schedule's next, once due
    status: RunStatus
    error: str | None
    move: bool  # whether the schedule moves on, to `following`
    following: datetime | None


def decide_external_run(
    schedule: Timetable | None,
    task: ScheduledRow,
    now: datetime,
    *,
    success: bool,
    error: str | None,
    calculate_next_run: bool,
) -> ExternalRunDecision:
    """The run served the schedule's next occurrence when that is due (so reporting the same
    occurrence twice meets the history's unique key), else none; the schedule then moves to
    the first occurrence after now (none once this run uses up max_runs), unless the caller
    keeps it where it is."""
    occurrence = task.next_run_at if task.next_run_at and task.next_run_at <= now else None
    move = calculate_next_run and task.schedule_enabled and schedule is not None
    following = None
    if move and schedule is not None:
        runs_left = task.max_runs is None or task.run_count + 1 < task.max_runs
        following = fire_after(schedule, task, now) if runs_left else None
    return ExternalRunDecision(
        occurrence=occurrence,
        status=RunStatus.COMPLETED if success else RunStatus.FAILED,
        error=None if success else (error or "failed"),
        move=move,
        following=following,
    )
