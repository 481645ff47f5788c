"""Runs: claiming due occurrences, starting ad-hoc runs, leases, reclaiming, finishing.

This module holds the SQL that exactly-once rests on. The guarantees and why they hold:

* One occurrence, one run. Claiming reads due tasks and, in the same transaction, inserts the
  occurrence's history row under the unique key (task_id, scheduled_for) and moves the task's
  next_run_at past it. On PostgreSQL the read is `FOR UPDATE SKIP LOCKED`: two schedulers never
  hold the same task row, and a scheduler that reads after the first commits sees the advanced
  next_run_at. On SQLite the transaction is BEGIN IMMEDIATE, which serialises writers outright.
  The unique key is the backstop for anything else (a re-enabled `once`, an operator's edit):
  the insert is ON CONFLICT DO NOTHING and an occurrence already recorded is never run again.
  The history rows and the tasks' new state go in one statement at the claim's end (an INSERT
  and an UPDATE in CTEs, the UPDATE only if every row went in); when one collided, the claim
  is rolled back and made again with the insert first, which says which occurrences to skip.
* A run belongs to one process. The run row carries instance_id and lease_expires_at; the task
  row carries current_run_id. Only the owner renews the lease, and finishing a run records it
  only where it is still `running` and still its own (an UPDATE whose WHERE says so, checked
  by PostgreSQL on the row's latest version under its lock): a run that was ended by
  `terminate_other` or reclaimed after its lease expired writes nothing. `cancel_other`
  does not end the run itself: it marks it `cancel_requested_at`, its owner stops it and
  records it cancelled, and the occurrence that asked (kept due, but not claimable while it
  waits) starts when that run ends, as a buffered one does.
* No task stays in_progress forever. A run whose lease expired is marked `abandoned` by whichever
  live scheduler sees it first (SKIP LOCKED again, so only one does), and its task is released.
* Every due occurrence ends as exactly one history row: fired (`running`, later its outcome),
  `missed` (misfire policy), or `skipped` (overlap policy).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from apflow_server.config import Settings
from apflow_server.core import events as ev
from apflow_server.core.clock import iso_utc, utcnow
from apflow_server.core.errors import (
    ApflowError,
    ConflictError,
    TaskNotFoundError,
    ValidationError,
)
from apflow_server.core.types import (
    CLAIMED_WHILE_RUNNING,
    REPLACES_RUNNING,
    OverlapPolicy,
    RunStatus,
    RunTrigger,
    TaskStatus,
)
from apflow_server.schedules.plan import (
    Timetable,
    fire_after,
    is_external,
    occurrences_due,
    schedule_of,
    set_next_run,
    trigger_grace,
)
from apflow_server.schedules.policy import (
    OCCURRENCE_CHUNK,
    PAUSED,
    DueDecision,
    after_failure,
    closed_reason,
    decide_after_run,
    decide_due,
    end_may_start_another,
    held_reason,
    paused_at,
)
from apflow_server.storage import notifications as outbox
from apflow_server.storage.backfills import ACTIVE, DONE
from apflow_server.storage.batches import (
    among,
    insert_all_then_update,
    insert_rows,
    update_rows,
    update_rows_where,
)
from apflow_server.storage.calendars import attach_calendars
from apflow_server.storage.database import Database
from apflow_server.storage.group_commit import GroupCommit
from apflow_server.storage.models import BACKFILLS, RUNS, TASKS, Task, TaskRun, run_row
from apflow_server.storage.repository import (
    ancestor_ids,
    due_filter,
    prune_runs,
    prune_step,
    subtree_ids,
)
from apflow_server.storage.signals import notify_in_transaction, schedule_write, wake_local

logger = logging.getLogger(__name__)

# Backfills looked at per claim (oldest first); the others wait for the next claim.
BACKFILLS_PER_CLAIM = 20
MAX_PRUNE_COUNTERS = 100_000
IN_PROGRESS = TaskStatus.IN_PROGRESS.value
RUNNING = RunStatus.RUNNING.value


@dataclass(slots=True)
class TaskState:
    """A task row as the run lifecycle sees it, the one type from claim to finish: the columns
    it reads and writes (read under the row's lock and written back with `write_back` before
    the transaction commits) and, when the task is to be run, its definition.

    Plain rows rather than ORM objects: claiming and finishing handle hundreds of tasks per
    transaction, and the ORM's identity map and unit of work cost more than the SQL did.
    """

    id: str
    user_id: str | None
    parent_id: str | None
    status: str
    result: Any
    error: str | None
    progress: float
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    current_run_id: str | None
    run_count: int
    max_runs: int | None
    last_run_at: datetime | None
    schedule_type: str | None
    schedule_expression: str | None
    schedule_timezone: str
    schedule_enabled: bool
    schedule_start_at: datetime | None
    schedule_end_at: datetime | None
    schedule_anchor_at: datetime | None
    schedule_jitter_seconds: int
    schedule_misfire: str
    schedule_overlap: str
    next_run_at: datetime | None
    due_at: datetime | None
    trigger_requested_at: datetime | None
    schedule_paused: bool
    schedule_pause_note: str | None
    schedule_paused_until: datetime | None
    pause_after_failures: int | None
    consecutive_failures: int
    schedule_skip_count: int
    schedule_skip_by: str | None
    name: str
    alert_late_after_seconds: int | None
    alert_max_duration_seconds: int | None
    schedule_mode: str
    trigger_grace_seconds: int | None
    schedule_calendar: str | None
    schedule_calendar_rule: str | None
    # The definition (name is above), read with `definition=True` for a task about to run.
    priority: int = 0
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    schemas: dict[str, Any] = dataclasses.field(default_factory=dict)
    dependencies: list[Any] = dataclasses.field(default_factory=list)
    # Whether it has children; None when the definition was not read.
    has_children: bool | None = None
    # The closed days of the calendar it names (read with it: `load_states`).
    loaded_calendar: Any = None
    # Whether its owner has an enabled notification endpoint; None when not read. Finishing
    # reads it with the task, so outcomes nobody is notified of cost no outbox query.
    notified: bool | None = None

    @property
    def standalone(self) -> bool:
        """Read with its definition and without children: its run needs no further read (a
        tree is loaded, and its descendants reset, when its run starts)."""
        return self.has_children is False


DEFINITION_COLUMNS = ("priority", "inputs", "params", "schemas", "dependencies")
STATE_COLUMNS = tuple(
    f.name
    for f in fields(TaskState)
    if f.name not in {*DEFINITION_COLUMNS, "has_children", "loaded_calendar", "notified"}
)
# What the run lifecycle changes on a task; everything else is the user's to edit.
WRITTEN_COLUMNS = (
    "status",
    "result",
    "error",
    "progress",
    "started_at",
    "completed_at",
    "updated_at",
    "current_run_id",
    "run_count",
    "last_run_at",
    "schedule_enabled",
    "next_run_at",
    "due_at",
    "trigger_requested_at",
    "schedule_paused",
    "schedule_pause_note",
    "schedule_paused_until",
    "consecutive_failures",
    "schedule_skip_count",
    "schedule_skip_by",
)
# The history's unique key: one row per occurrence of a task (uq_task_runs_occurrence).
OCCURRENCE = ("task_id", "scheduled_for")
# What finishing records on a run.
# What finishing records on a run; started_at too, since a run claimed ahead of its instant
# starts when its process launches it, which the claim could only plan.
FINISHED_RUN_COLUMNS = (
    "status",
    "started_at",
    "finished_at",
    "result",
    "error",
    "attempt",
    "lease_expires_at",
)


def _states_select(definition: bool) -> Select[Any]:
    columns: list[ColumnElement[Any]] = [TASKS.c[name] for name in STATE_COLUMNS]
    if definition:
        child = TASKS.alias("child")
        has_children = select(child.c.id).where(child.c.parent_id == TASKS.c.id).exists()
        columns += [TASKS.c[name] for name in DEFINITION_COLUMNS] + [has_children]
    return select(*columns)


# Built once: a select of 30 columns and an aliased subquery cost more to construct than the
# claim's SQL takes to run (statements are immutable; `.where()` returns a new one).
_STATES = {definition: _states_select(definition) for definition in (False, True)}


def states_query(*, definition: bool = False) -> Select[Any]:
    """Select task states (with their definitions when they are to be run); add the filter
    and the lock."""
    return _STATES[definition]


# Finishing's task states, each with whether its owner has an enabled endpoint (`notified`).
_OWNERS = _STATES[False].add_columns(outbox.owner_has_endpoint(TASKS.c.user_id))


async def load_states(
    session: AsyncSession,
    query: Select[Any],
    parameters: dict[str, Any] | None = None,
    *,
    definition: bool = False,
    notified: bool = False,
) -> list[TaskState]:
    """Task states as selected by `states_query`, with their definitions if it selected them
    and, with `notified`, the owner's endpoint flag its last column holds."""
    width = len(STATE_COLUMNS)
    states = []
    for row in await session.execute(query, parameters):
        state = TaskState(*row[:width])
        if definition:
            priority, inputs, params, schemas, dependencies, has_children = row[width : width + 6]
            state.priority = priority
            state.inputs = dict(inputs or {})
            state.params = dict(params or {})
            state.schemas = dict(schemas or {})
            state.dependencies = list(dependencies or [])
            state.has_children = bool(has_children)
        if notified:
            state.notified = bool(row[-1])
        states.append(state)
    await attach_calendars(session, states)
    return states


def written_rows(states: Sequence[TaskState]) -> list[dict[str, Any]]:
    """What the run lifecycle changed on these tasks, as rows for a batch update."""
    return [{name: getattr(state, name) for name in ("id", *WRITTEN_COLUMNS)} for state in states]


async def write_back(session: AsyncSession, states: Sequence[TaskState]) -> None:
    await update_rows(session, TASKS, "id", WRITTEN_COLUMNS, written_rows(states))


class _AlreadyRecorded(Exception):
    """A claim that expected its occurrences to be new found one recorded: it is rolled back
    and made again (`RunStore.claim_due`)."""


@dataclass(frozen=True)
class ClaimedRun:
    """A run this process owns and must execute."""

    run_id: str
    task_id: str
    user_id: str | None
    trigger: str
    scheduled_for: datetime | None
    started_at: datetime
    attempt: int = 1
    # True when an Idempotency-Key matched an earlier run: nothing new was started.
    replayed: bool = False
    # The task itself when it has no children: the runner needs no further read.
    leaf: TaskState | None = None
    # Whether recording its outcome may start another run (a buffered occurrence) in its
    # place, which then needs the slot this run held.
    may_hand_over: bool = True

    @property
    def lateness(self) -> float | None:
        """Seconds from its occurrence to its start, for a run the schedule fired (a
        backfilled occurrence is late by design, a manual run has none)."""
        if self.scheduled_for is None or self.trigger != RunTrigger.SCHEDULE.value:
            return None
        return (self.started_at - self.scheduled_for).total_seconds()


@dataclass(frozen=True)
class _Decision:
    task: TaskState
    schedule: Timetable
    due: DueDecision


@dataclass(frozen=True)
class RunResult:
    status: RunStatus
    result: Any = None
    error: str | None = None
    attempt: int = 1


def actionable() -> ColumnElement[bool]:
    """Whether a due task is for a scheduler to act on now. A running task is left alone
    (what came due meanwhile is settled when its run ends) unless its policy acts on the
    running run: terminate_other and allow_all at once, cancel_other until it has asked the
    running run to end (then its occurrence waits for that end)."""
    cancel_asked = exists().where(
        RUNS.c.id == TASKS.c.current_run_id, RUNS.c.cancel_requested_at.is_not(None)
    )
    return or_(
        TASKS.c.status != IN_PROGRESS,
        TASKS.c.schedule_overlap.in_(CLAIMED_WHILE_RUNNING - {OverlapPolicy.CANCEL_OTHER.value}),
        and_(TASKS.c.schedule_overlap == OverlapPolicy.CANCEL_OTHER.value, ~cancel_asked),
    )


def claim_query(
    now: datetime, user_id: str | None, limit: int
) -> tuple[Select[Any], dict[str, Any]]:
    """The due schedules a scheduler may act on now, oldest first, locked: the rows another
    scheduler holds are skipped, not waited for. The statement and its parameters."""
    parameters: dict[str, Any] = {"claim_cutoff": now}
    if user_id is not None:
        parameters["claim_user"] = user_id
    return _claim_statement(user_id is not None, limit), parameters


@functools.lru_cache(maxsize=1024)
def _claim_statement(by_user: bool, limit: int) -> Select[Any]:
    """Built once per shape: building this select and its cache key took 0.3 ms, a fifth of
    the claim query's round trip, on every poll. The limit stays a literal: PostgreSQL plans
    a LIMIT it cannot see as if it returned a tenth of the rows."""
    cutoff = bindparam("claim_cutoff", type_=TASKS.c.due_at.type)
    user = bindparam("claim_user", type_=TASKS.c.user_id.type) if by_user else None
    claimable = due_filter(states_query(definition=True), cutoff, user).where(actionable())
    return claimable.order_by(TASKS.c.due_at).limit(limit).with_for_update(skip_locked=True)


class RunStore:
    """The run lifecycle in the database, for one scheduler (or server) instance."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        instance_id: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.database = database
        self.settings = settings
        self.instance_id = instance_id
        self.clock = clock
        # Runs of this store's own instance that terminate_other ended or cancel_other asked
        # to end: its scheduler checks them at once (other instances learn it from NOTIFY or
        # the SQLite file watcher).
        self.interrupted: set[str] = set()
        # Rows written per task, by occurrences that did not run, since its last pruning.
        self._unpruned: dict[str, int] = {}
        # SQLite runs one writer at a time anyway; PostgreSQL overlaps a few transactions.
        self._starts: GroupCommit[StartRequest, ClaimedRun] = GroupCommit(
            self._start_batch, writers=1 if database.is_sqlite else 4
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    # ------------------------------------------------------------------ claiming

    async def claim_due(
        self, limit: int, user_id: str | None = None, *, ahead: timedelta = timedelta(0)
    ) -> list[ClaimedRun]:
        """Claim up to `limit` runs: due occurrences first, then waiting manual triggers.

        With `ahead`, occurrences due within that much of now are claimed too: their runs
        start (`started_at`) at their due instant, and the caller launches them then. Claiming
        takes a transaction (milliseconds); claiming a little early lets a run start on time
        instead of that much late. Exactly once is unchanged: the claim is the same.

        The claim expects none of the occurrences it fires to be recorded already, and writes
        their history rows and the tasks in one statement at its end (one round trip fewer).
        When one was recorded meanwhile (an external trigger, a run whose schedule did not
        move), that statement writes nothing to the tasks, the transaction is rolled back
        and the claim is made again with a history insert of its own, which tells it which
        occurrences were recorded."""
        if limit <= 0:
            return []
        try:
            return await self._claim_due(limit, user_id, ahead, expect_new=True)
        except _AlreadyRecorded:
            # What the rolled-back attempt left in memory is harmless: a pruning count or
            # two too many (it only decides when to tidy, by at most a step) and interrupted
            # ids the redo did not interrupt (one ownership read).
            return await self._claim_due(limit, user_id, ahead, expect_new=False)

    async def _claim_due(
        self, limit: int, user_id: str | None, ahead: timedelta, *, expect_new: bool
    ) -> list[ClaimedRun]:
        now = self.clock()
        fired: list[dict[str, Any]] | None = [] if expect_new else None
        async with self.database.transaction(write=True) as session:
            query, parameters = claim_query(now + ahead, user_id, limit)
            loaded = await load_states(session, query, parameters, definition=True)
            claimed = await self._settle(session, loaded, now, fired=fired)
            room = limit - len(claimed)
            if room > 0:
                # Not the tasks this claim just settled: their rows are ours already (SKIP
                # LOCKED skips only others' locks) and may hold a run this claim started,
                # which the request waits for like any running run.
                settled = [task.id for task in loaded]
                requested = states_query(definition=True).where(
                    TASKS.c.trigger_requested_at <= now,
                    TASKS.c.status != IN_PROGRESS,
                    ~among(TASKS.c.id, settled, self.database.dialect),
                )
                if user_id is not None:
                    requested = requested.where(TASKS.c.user_id == user_id)
                requested = requested.order_by(TASKS.c.trigger_requested_at).limit(room)
                waiting = requested.with_for_update(skip_locked=True)
                manual = await load_states(session, waiting, definition=True)
                for task in manual:
                    task.trigger_requested_at = None
                    claimed.append(await self._start(session, task, RunTrigger.MANUAL, None, now))
                loaded += manual
            if fired is None:  # the step-by-step claim inserted its history rows already
                await write_back(session, loaded)
            elif not await insert_all_then_update(
                session,
                RUNS,
                fired,
                unique=OCCURRENCE,
                then=TASKS,
                key="id",
                columns=WRITTEN_COLUMNS,
                updates=written_rows(loaded),
            ):
                raise _AlreadyRecorded
        return claimed

    async def claim_backfill(self, limit: int, user_id: str | None = None) -> list[ClaimedRun]:
        """Claim up to `limit` queued backfill occurrences, each backfill's in its order and
        within its max_concurrent.

        Exactly once: a queued row becomes `running` and ours in the transaction that selects
        it (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so two schedulers never take one row; on
        SQLite the write transaction serialises them). A backfill's row is locked while its
        rows are taken, so two schedulers never both fill its max_concurrent. A backfill with
        nothing queued or running is done."""
        if limit <= 0:
            return []
        now = self.clock()
        # A plain read, as on every poll: one autocommit statement on PostgreSQL.
        async with self.database.read() as session:
            active = await session.scalar(
                select(BACKFILLS.c.id).where(BACKFILLS.c.status == ACTIVE).limit(1)
            )
        if active is None:
            return []
        claimed: list[ClaimedRun] = []
        async with self.database.transaction(write=True) as session:
            backfills = select(BACKFILLS).where(BACKFILLS.c.status == ACTIVE)
            if user_id is not None:
                backfills = backfills.where(BACKFILLS.c.user_id == user_id)
            chosen = backfills.order_by(BACKFILLS.c.created_at).limit(BACKFILLS_PER_CLAIM)
            for backfill in list(await session.execute(chosen.with_for_update(skip_locked=True))):
                room = limit - len(claimed)
                if room <= 0:
                    break
                claimed += await self._take_backfill(session, backfill, room, now)
        return claimed

    async def _take_backfill(
        self, session: AsyncSession, backfill: Any, room: int, now: datetime
    ) -> list[ClaimedRun]:
        of_backfill = RUNS.c.backfill_id == backfill.id
        running = int(
            await session.scalar(select(func.count()).where(of_backfill, RUNS.c.status == RUNNING))
            or 0
        )
        room = min(room, backfill.max_concurrent - running)
        if room <= 0:
            return []
        order = RUNS.c.scheduled_for.asc()
        if backfill.order_by == "newest_first":
            order = RUNS.c.scheduled_for.desc()
        queued = (
            select(RUNS.c.id, RUNS.c.scheduled_for)
            .where(of_backfill, RUNS.c.status == RunStatus.QUEUED.value)
            .order_by(order)
            .limit(room)
            .with_for_update(skip_locked=True)
        )
        picked = list(await session.execute(queued))
        if not picked:
            if running == 0:
                await session.execute(
                    update(BACKFILLS)
                    .where(BACKFILLS.c.id == backfill.id)
                    .values(status=DONE, finished_at=now)
                )
            return []
        ids = [run_id for run_id, _ in picked]
        await session.execute(
            update(RUNS)
            .where(among(RUNS.c.id, ids, self.database.dialect))
            .values(
                status=RUNNING,
                instance_id=self.instance_id,
                lease_expires_at=now + self.lease,
                started_at=now,
                finished_at=None,
                attempt=1,
            )
        )
        if len(picked) == room:  # more may be queued: other schedulers may take some too
            await notify_in_transaction(session)
        definition = states_query(definition=True).where(TASKS.c.id == backfill.task_id)
        states = await load_states(session, definition, definition=True)
        # Its definition, not its last outcome (held for as long as the runs last).
        leaf = states[0] if states and states[0].standalone else None
        if leaf is not None:
            leaf.result = leaf.error = None
        return [
            ClaimedRun(
                run_id,
                backfill.task_id,
                backfill.user_id,
                RunTrigger.BACKFILL.value,
                _aware(scheduled_for),
                now,
                leaf=leaf,
                may_hand_over=False,  # a backfilled occurrence's end starts nothing else
            )
            for run_id, scheduled_for in picked
        ]

    def _decide(self, task: TaskState, schedule: Timetable, now: datetime) -> _Decision:
        decision = decide_due(
            schedule,
            task,
            now,
            misfire_grace=timedelta(seconds=self.settings.misfire_grace_seconds),
            max_catchup_runs=self.settings.max_catchup_runs,
        )
        return _Decision(task, schedule, decision)

    async def _settle(
        self,
        session: AsyncSession,
        tasks: Sequence[TaskState],
        now: datetime,
        *,
        fired: list[dict[str, Any]] | None = None,
    ) -> list[ClaimedRun]:
        """Apply the misfire and overlap rules to due tasks and start the runs they call for,
        with one insert for all the fired occurrences (and one for the missed ones). Given
        `fired`, their history rows are appended to it for the caller to insert, expecting
        every one to be new (a run id is known before its row is written)."""
        await self._watch([task for task in tasks if is_external(task)], session, now)
        tasks = [task for task in tasks if not is_external(task)]
        decisions: list[_Decision] = []
        uncomputable: list[tuple[TaskState, datetime, str]] = []
        for task in tasks:
            schedule = _schedule_or_set_aside(task, uncomputable)
            if schedule is not None:
                decisions.append(self._decide(task, schedule, now))
        # Late occurrences are missed, unless they fell due while paused: skipped, as every
        # occurrence of a paused schedule is (read before a pause that ends here is lifted).
        late = [(d.task, o) for d in decisions for o in d.due.missed]
        schedules = {d.task.id: d.schedule for d in decisions}
        # ... and those on a day its calendar closes were never going to run: skipped too.
        why_late = {
            (task.id, o): PAUSED if paused_at(task, o) else closed_reason(schedules[task.id], o)
            for task, o in late
        }
        skipped: list[tuple[TaskState, datetime, str]] = uncomputable
        for task, o in late:
            why = why_late[task.id, o]
            if why is not None:
                skipped.append((task, o, why))
        missed = [(task, o, _missed_reason(task)) for task, o in late if not why_late[task.id, o]]
        held: dict[str, str] = {}
        waiting: set[str] = set()  # cancel_other: fired when the cancelled run has ended
        alerts: list[ev.Event] = []
        for decision in decisions:
            task, occurrence = decision.task, decision.due.fire
            paused = task.schedule_paused
            schedule = decision.schedule
            reason = self._hold(task, occurrence, schedule) if occurrence is not None else None
            if paused and not task.schedule_paused:  # its pause ran out
                alerts.append(schedule_event(ev.SCHEDULE_RESUMED, task, "the pause ended"))
            if reason is not None and occurrence is not None:
                held[task.id] = reason
                skipped.append((task, occurrence, reason))
            elif occurrence is not None and task.status == IN_PROGRESS:
                if task.schedule_overlap == OverlapPolicy.ALLOW_ALL.value:
                    full = None
                    if not _overlaps(task):  # a tree: its rows hold one run's state
                        full = TREE_NO_OVERLAP
                    elif await _running_count(session, task.id) >= MAX_OVERLAPPING_RUNS:
                        full = f"{MAX_OVERLAPPING_RUNS} runs of the task were still running"
                        full += " (allow_all)"
                    if full is not None:
                        held[task.id] = full
                        skipped.append((task, occurrence, full))
                    continue  # allow_all: the new run starts beside the running one
                if task.schedule_overlap == OverlapPolicy.CANCEL_OTHER.value:
                    await self._request_cancel(session, task, now)
                    waiting.add(task.id)
                    continue
                # terminate_other: the newer occurrence wins at once
                await self._replace_current(session, task, now, "occurrence")
        await self._record_many(session, missed, RunStatus.MISSED, now)
        await self._record_many(session, skipped, RunStatus.SKIPPED, now)
        # An occurrence claimed ahead of its due instant starts at that instant.
        starts = {d.task.id: max(now, d.task.due_at or now) for d in decisions}
        firing = [
            d
            for d in decisions
            if d.due.fire is not None and d.task.id not in held and d.task.id not in waiting
        ]
        inserted = await self._insert_runs(
            session,
            [(d.task, d.due.fire, starts[d.task.id]) for d in firing if d.due.fire is not None],
            now,
            defer_to=fired,
        )
        claimed: list[ClaimedRun] = []
        for decision in decisions:
            task, occurrence = decision.task, decision.due.fire
            if occurrence is None:
                set_next_run(task, decision.due.following)
                continue
            if task.id in held:
                set_next_run(task, fire_after(decision.schedule, task, occurrence))
                continue
            if task.id in waiting:  # stays due; settled when the running run ends
                set_next_run(task, occurrence)
                continue
            run_id = inserted.get(task.id)
            if run_id is None:
                logger.info("occurrence %s of task %s was already recorded", occurrence, task.id)
            else:
                start = starts[task.id]
                claimed.append(self._take(task, run_id, RunTrigger.SCHEDULE, occurrence, start))
                late_alert = _late_event(task, run_id, occurrence, start, RunTrigger.SCHEDULE.value)
                if late_alert is not None:
                    alerts.append(late_alert)
            # After _take: run_count includes this run, so max_runs ends the schedule in time.
            set_next_run(task, fire_after(decision.schedule, task, occurrence))
        await outbox.enqueue(session, alerts, now)
        return claimed

    async def _watch(
        self, tasks: Sequence[TaskState], session: AsyncSession, now: datetime
    ) -> None:
        """External schedules (a dead man's switch): an outside scheduler fires them through
        the webhook, which matches its trigger to the occurrence (`_decide_start`). One that
        is claimed here is overdue: its trigger did not arrive within the grace, so each
        occurrence past it is recorded missed (trigger webhook) and announced as
        trigger.overdue, or skipped if it fell due while the schedule was paused."""
        missed: list[tuple[TaskState, datetime, str]] = []
        skipped: list[tuple[TaskState, datetime, str]] = []
        for task in tasks:
            assert task.next_run_at is not None
            schedule = _schedule_or_set_aside(task, skipped)
            if schedule is None:
                continue
            overdue, following = occurrences_due(
                schedule, task, task.next_run_at, now, OCCURRENCE_CHUNK
            )
            grace = trigger_grace(task)
            reason = f"no trigger arrived within {grace} s of the occurrence (external schedule)"
            for occurrence in overdue:
                if paused_at(task, occurrence):
                    skipped.append((task, occurrence, PAUSED))
                else:
                    missed.append((task, occurrence, reason))
            set_next_run(task, following)
        webhook = RunTrigger.WEBHOOK
        await self._record_many(session, missed, RunStatus.MISSED, now, webhook, ev.TRIGGER_OVERDUE)
        await self._record_many(session, skipped, RunStatus.SKIPPED, now, webhook)

    async def _fire(
        self,
        session: AsyncSession,
        task: TaskState,
        schedule: Timetable,
        occurrence: datetime,
        now: datetime,
        *,
        then: datetime | None = None,
    ) -> ClaimedRun | None:
        """Start the run of one occurrence and move the schedule past it (to `then` if given)."""
        run_id = (await self._insert_runs(session, [(task, occurrence, now)], now)).get(task.id)
        claimed = None
        if run_id is None:
            logger.info("occurrence %s of task %s was already recorded", occurrence, task.id)
        else:
            claimed = self._take(task, run_id, RunTrigger.SCHEDULE, occurrence, now)
        following = fire_after(schedule, task, occurrence)
        if then is not None and following is not None:
            following = then  # past occurrences already recorded (run_count counts this run)
        set_next_run(task, following)
        return claimed

    async def _insert_runs(
        self,
        session: AsyncSession,
        fires: Sequence[tuple[TaskState, datetime, datetime]],
        now: datetime,
        *,
        defer_to: list[dict[str, Any]] | None = None,
    ) -> dict[str, str]:
        """Insert the running rows of fired occurrences (task, occurrence, start) in one
        statement; task id -> run id for those inserted (an occurrence already recorded is
        skipped by the unique key). With `defer_to`, the rows are appended to it instead,
        and every run id is returned as if inserted."""
        if not fires:
            return {}
        rows = [
            self._run_row(
                task, RunTrigger.SCHEDULE, occurrence, RunStatus.RUNNING, now, started=start
            )
            for task, occurrence, start in fires
        ]
        if defer_to is not None:
            defer_to.extend(rows)
            return {row["task_id"]: row["id"] for row in rows}
        inserted = await insert_rows(
            session, RUNS, rows, unique=OCCURRENCE, returning=("task_id", "id")
        )
        return {str(row[0]): str(row[1]) for row in inserted}

    async def _start(
        self,
        session: AsyncSession,
        task: TaskState,
        trigger: RunTrigger,
        occurrence: datetime | None,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> ClaimedRun:
        run_id = await self._insert_run(
            session, task, trigger, occurrence, RunStatus.RUNNING, now, idempotency_key
        )
        assert run_id is not None  # ad-hoc runs have no occurrence, hence no conflict
        claimed = self._take(task, run_id, trigger, occurrence, now)
        if task.max_runs is not None and task.run_count >= task.max_runs:
            set_next_run(task, None)
        return claimed

    def _take(
        self,
        task: TaskState,
        run_id: str,
        trigger: RunTrigger,
        occurrence: datetime | None,
        now: datetime,
    ) -> ClaimedRun:
        """The task now belongs to the run `run_id`."""
        task.status = IN_PROGRESS
        task.current_run_id = run_id
        task.started_at = now
        task.completed_at = None
        task.result = None
        task.error = None
        task.progress = 0.0
        task.run_count += 1
        task.last_run_at = now
        task.updated_at = now
        return ClaimedRun(
            run_id,
            task.id,
            task.user_id,
            trigger.value,
            occurrence,
            now,
            leaf=task if task.standalone else None,
            may_hand_over=end_may_start_another(task.schedule_overlap),
        )

    def _run_row(
        self,
        task: TaskState,
        trigger: RunTrigger,
        occurrence: datetime | None,
        status: RunStatus,
        now: datetime,
        idempotency_key: str | None = None,
        *,
        started: datetime | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        running = status is RunStatus.RUNNING
        return run_row(
            task.id,
            task.user_id,
            trigger.value,
            occurrence,
            status.value,
            now,
            started_at=(started or now) if running else None,
            finished_at=None if running else now,
            attempt=1 if running else 0,
            instance_id=self.instance_id if running else None,
            lease_expires_at=now + self.lease if running else None,
            idempotency_key=idempotency_key,
            reason=reason,
        )

    async def _insert_run(
        self,
        session: AsyncSession,
        task: TaskState,
        trigger: RunTrigger,
        occurrence: datetime | None,
        status: RunStatus,
        now: datetime,
        idempotency_key: str | None = None,
    ) -> str | None:
        """Insert one history row; None when its occurrence is already recorded."""
        row = self._run_row(task, trigger, occurrence, status, now, idempotency_key)
        inserted = await insert_rows(session, RUNS, [row], unique=OCCURRENCE, returning=("id",))
        return str(inserted[0][0]) if inserted else None

    async def _record(
        self,
        session: AsyncSession,
        task: TaskState,
        occurrences: Sequence[datetime],
        status: RunStatus,
        now: datetime,
        reason: str,
    ) -> None:
        """History rows for occurrences of one task that will not run (missed or skipped)."""
        await self._record_many(session, [(task, o, reason) for o in occurrences], status, now)

    async def _record_many(
        self,
        session: AsyncSession,
        occurrences: Sequence[tuple[TaskState, datetime, str]],
        status: RunStatus,
        now: datetime,
        trigger: RunTrigger = RunTrigger.SCHEDULE,
        event: str | None = None,
    ) -> None:
        """History rows, each with why it did not run, for occurrences that will not run;
        each announced (run.missed, run.skipped, or `event`)."""
        if not occurrences:
            return
        rows = [
            self._run_row(task, trigger, occurrence, status, now, reason=reason)
            for task, occurrence, reason in occurrences
        ]
        inserted = await insert_rows(session, RUNS, rows, unique=OCCURRENCE, returning=("id",))
        recorded = {str(row[0]) for row in inserted}
        kind = event or (ev.RUN_MISSED if status is RunStatus.MISSED else ev.RUN_SKIPPED)
        await outbox.enqueue(
            session,
            [
                run_event(kind, task, row["id"], occurrence, trigger.value, status, reason)
                for row, (task, occurrence, reason) in zip(rows, occurrences, strict=True)
                if row["id"] in recorded
            ],
            now,
        )
        # Rows that no run follows (a paused schedule writes one per occurrence) are pruned
        # here, every prune_step of them per task; runs are pruned as they finish. A count
        # in memory is enough: it only decides when to tidy, never what is kept.
        keep = self.settings.run_history_keep
        tidy = []
        for task, _, _ in occurrences:
            self._unpruned[task.id] = self._unpruned.get(task.id, 0) + 1
            if self._unpruned[task.id] >= prune_step(keep):
                del self._unpruned[task.id]
                tidy.append(task.id)
        await prune_runs(session, tidy, keep)
        if len(self._unpruned) > MAX_PRUNE_COUNTERS:
            self._unpruned.clear()

    def _hold(
        self, task: TaskState, occurrence: datetime, schedule: Timetable | None = None
    ) -> str | None:
        """Why `occurrence`, about to run, is recorded skipped instead (paused, a day its
        business calendar closes, or a skip an operator asked for, which it uses up); None
        when it runs. A pause that ends at or before the occurrence ends here: the schedule
        resumes by itself."""
        until = task.schedule_paused_until
        if task.schedule_paused and until is not None and occurrence >= until:
            task.schedule_paused = False
            task.schedule_pause_note = None
            task.schedule_paused_until = None
        reason = held_reason(task, occurrence, schedule)
        if reason is not None and reason != PAUSED and closed_reason(schedule, occurrence) is None:
            task.schedule_skip_count -= 1
            if task.schedule_skip_count <= 0:
                task.schedule_skip_count = 0
                task.schedule_skip_by = None
        return reason

    async def _replace_current(
        self,
        session: AsyncSession,
        task: TaskState,
        now: datetime,
        newer: str,
        policy: str | None = None,
    ) -> None:
        """End the running run for a newer one started now: terminate_other's occurrences,
        and runs started by hand under cancel_other or terminate_other (which cannot wait).
        Its owner is told at once (NOTIFY, and `interrupted` for this process's own
        scheduler) and stops it within its next ownership check."""
        if task.current_run_id is not None:
            self.interrupted.add(task.current_run_id)
        if (policy or task.schedule_overlap) == OverlapPolicy.TERMINATE_OTHER.value:
            reason, status = f"terminated by a newer {newer}", RunStatus.TERMINATED
        else:
            reason, status = f"cancelled by a newer {newer}", RunStatus.CANCELLED
        await self._cancel_current(session, task, now, reason, status)
        await notify_in_transaction(session)

    async def _request_cancel(self, session: AsyncSession, task: TaskState, now: datetime) -> None:
        """cancel_other for an occurrence: ask the running run to end. Its owner sees the
        request at its next ownership check (told at once: NOTIFY, and `interrupted` for this
        process's own scheduler), stops it and records it cancelled; the occurrence, still
        due, then runs as the newest of what came due during the run."""
        if task.current_run_id is None:
            return
        asked = await session.scalars(
            update(RUNS)
            .where(
                RUNS.c.id == task.current_run_id,
                RUNS.c.status == RUNNING,
                RUNS.c.cancel_requested_at.is_(None),
            )
            .values(cancel_requested_at=now)
            .returning(RUNS.c.id)
        )
        if asked.first() is not None:
            self.interrupted.add(task.current_run_id)
            await notify_in_transaction(session)

    async def _cancel_current(
        self,
        session: AsyncSession,
        task: TaskState,
        now: datetime,
        reason: str,
        status: RunStatus = RunStatus.CANCELLED,
    ) -> None:
        """End the task's current run as cancelled; its process learns it at its next renewal."""
        if task.current_run_id is not None:
            await session.execute(
                update(RUNS)
                .where(RUNS.c.id == task.current_run_id, RUNS.c.status == RUNNING)
                .values(
                    status=status.value,
                    finished_at=now,
                    error=reason,
                    lease_expires_at=None,
                )
            )
        task.status = TaskStatus.CANCELLED.value
        task.current_run_id = None
        task.error = reason
        task.completed_at = now

    # ------------------------------------------------------------------ ad-hoc runs

    async def start_now(
        self,
        task_id: str,
        trigger: RunTrigger,
        *,
        idempotency_key: str | None = None,
        check: Callable[[TaskState], None] | None = None,
        overlap: str | None = None,
    ) -> ClaimedRun:
        """Start a run of a task outside its schedule (manual, webhook, API).

        While the task runs, its overlap policy (or `overlap`, given for this start) decides:
        `cancel_other` and `terminate_other` replace the current run, `allow_all` runs beside
        it; otherwise the request is refused as a conflict (HTTP 409). `check` is called with
        the task under its row lock before anything is written, and raises to refuse (the
        caller's permission). Concurrent starts share one transaction (see group_commit.py).
        """
        return await self._starts.submit(
            StartRequest(task_id, trigger, idempotency_key, check, overlap)
        )

    async def _start_batch(
        self, requests: Sequence[StartRequest]
    ) -> list[ClaimedRun | BaseException]:
        """Start the runs of `requests` in one transaction; one outcome per request.

        The tasks are locked in id order (FOR UPDATE; every other writer that locks several
        task rows locks them in that order too, so batches cannot deadlock with each other or
        with finishing). A request is decided as if the ones before it had committed: a
        second trigger of one task finds it running. A task that is part of a tree is decided
        against the database's state, so the batch's writes so far are flushed first.
        """
        now = self.clock()
        dialect = self.database.dialect
        outcomes: list[ClaimedRun | BaseException] = []
        async with self.database.transaction(write=True) as session:
            ids = sorted({request.task_id for request in requests})
            query = (
                states_query(definition=True)
                .where(among(TASKS.c.id, ids, dialect))
                .order_by(TASKS.c.id)
                .with_for_update()
            )
            tasks = {task.id: task for task in await load_states(session, query, definition=True)}
            replays = await _runs_by_key(session, requests, dialect)
            pending = _PendingStarts(self, session)
            for request in requests:
                try:
                    outcomes.append(await self._decide_start(request, tasks, replays, pending, now))
                except ApflowError as refused:
                    outcomes.append(refused)
            await pending.flush()
        return outcomes

    async def _decide_start(
        self,
        request: StartRequest,
        tasks: dict[str, TaskState],
        replays: dict[tuple[str, str], ClaimedRun],
        pending: _PendingStarts,
        now: datetime,
    ) -> ClaimedRun:
        task = tasks.get(request.task_id)
        if task is None:
            raise TaskNotFoundError(request.task_id)
        if request.check is not None:
            request.check(task)
        key = (task.id, request.idempotency_key) if request.idempotency_key else None
        if key is not None and key in replays:
            return replays[key]
        policy = request.overlap or task.schedule_overlap
        replacing = task.status == IN_PROGRESS and not _overlaps(task, policy)
        if task.status == IN_PROGRESS and not replacing:  # allow_all: beside the running ones
            await pending.flush()  # runs this batch started count too
            if await _running_count(pending.session, task.id) >= MAX_OVERLAPPING_RUNS:
                raise ConflictError(
                    f"task {task.id!r} already has {MAX_OVERLAPPING_RUNS} runs running",
                    data={"task_id": task.id},
                )
        if replacing and policy not in REPLACES_RUNNING:
            # Buffering applies to occurrences; a run asked for now runs now or not at all.
            raise ConflictError(
                f"task {task.id!r} is already running (overlap {policy})",
                data={"task_id": task.id},
            )
        if task.parent_id is not None or not task.standalone:  # part of a tree
            await pending.flush()
            # Checked before anything is written. The running descendants of a task being
            # replaced are its own run's: they end with it (released below).
            busy = await _busy_relative(pending.session, task, descendants=not replacing)
            if busy is not None:
                busy_id, busy_name = busy
                raise ConflictError(
                    f"task {task.id!r} is part of a tree that is running ({busy_name!r}, "
                    f"{busy_id}); a task runs either alone or with its tree, not both",
                    data={"task_id": busy_id},
                )
        if replacing:
            await pending.flush()  # the run it replaces may be one this batch started
            await self._replace_current(pending.session, task, now, "trigger", policy)
            await self._release_tree(pending.session, task.id, task.error or "replaced", now)
        occurrence = _expected_occurrence(task, request.trigger, now)
        row = self._run_row(
            task, request.trigger, occurrence, RunStatus.RUNNING, now, request.idempotency_key
        )
        claimed = self._take(task, row["id"], request.trigger, occurrence, now)
        if occurrence is not None:  # the external scheduler's call for its occurrence
            set_next_run(task, fire_after(schedule_of(task), task, occurrence))
            late = _late_event(task, row["id"], occurrence, now, request.trigger.value)
            if late is not None:
                await outbox.enqueue(pending.session, [late], now)
        elif task.max_runs is not None and task.run_count >= task.max_runs:
            set_next_run(task, None)
        pending.add(row, task)
        if key is not None:
            replays[key] = dataclasses.replace(claimed, replayed=True)
        return claimed

    async def claim_occurrence(
        self,
        task_id: str,
        scheduled_for: datetime,
        *,
        check: Callable[[TaskState], None] | None = None,
    ) -> ClaimedRun | None:
        """Fire one named occurrence of a task's schedule, if it is the one due now.

        This is how a scheduler in API mode fires through a server: the server claims, with
        the same rules and the same unique key as its own scheduler, so exactly once holds.
        None when the occurrence is not (or no longer) due: already fired, missed or skipped.
        """
        now = self.clock()
        async with schedule_write(self.database) as session:
            task = await self._locked_task(session, task_id)
            if check is not None:
                check(task)
            due = (
                task.schedule_enabled
                and task.next_run_at == scheduled_for
                and task.due_at is not None
                and task.due_at <= now
                and (task.status != IN_PROGRESS or task.schedule_overlap in CLAIMED_WHILE_RUNNING)
            )
            if not due:
                return None
            settled = await self._settle(session, [task], now)
            await write_back(session, [task])
            return next(iter(settled), None)

    async def _locked_task(self, session: AsyncSession, task_id: str) -> TaskState:
        query = states_query(definition=True).where(TASKS.c.id == task_id).with_for_update()
        found = await load_states(session, query, definition=True)
        if not found:
            raise TaskNotFoundError(task_id)
        return found[0]

    async def request_trigger(self, task_id: str) -> None:
        """Ask whichever scheduler is running to start the task now (`scheduler trigger`)."""
        now = self.clock()
        async with schedule_write(self.database) as session:
            task = await session.get(Task, task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            task.trigger_requested_at = now

    async def cancel(self, task_id: str) -> bool:
        """Cancel the task's running runs (several under allow_all); their owners stop them
        when the change signal reaches them, at the latest at their next lease renewal."""
        now = self.clock()
        reason = "cancelled on request"
        async with schedule_write(self.database) as session:
            query = states_query().where(TASKS.c.id == task_id).with_for_update()
            found = await load_states(session, query)
            if not found:
                raise TaskNotFoundError(task_id)
            task = found[0]
            others = await session.scalars(
                update(RUNS)
                .where(
                    RUNS.c.task_id == task_id,
                    RUNS.c.status == RUNNING,
                    RUNS.c.id != (task.current_run_id or ""),
                )
                .values(
                    status=RunStatus.CANCELLED.value,
                    finished_at=now,
                    error=reason,
                    lease_expires_at=None,
                )
                .returning(RUNS.c.id)
            )
            if task.status != IN_PROGRESS:
                return bool(list(others))
            await self._cancel_current(session, task, now, reason)
            await self._release_tree(session, task.id, reason, now)
            await write_back(session, [task])
        return True

    # ------------------------------------------------------------------ leases

    async def owned(self, run_ids: Sequence[str]) -> dict[str, bool]:
        """Of `run_ids`, the runs still running as ours, each with whether cancel_other asked
        it to end: a read, no lease written (an ownership check after a change signal;
        writing would signal again on SQLite, whose watchers see every commit)."""
        if not run_ids:
            return {}
        async with self.database.transaction() as session:
            rows = await session.execute(
                select(RUNS.c.id, RUNS.c.cancel_requested_at).where(
                    among(RUNS.c.id, run_ids, self.database.dialect),
                    RUNS.c.status == RUNNING,
                    RUNS.c.instance_id == self.instance_id,
                )
            )
            return {str(run_id): asked is not None for run_id, asked in rows}

    async def renew(self, run_ids: Sequence[str]) -> dict[str, bool]:
        """Extend the leases of our running runs (one asked to end keeps its lease until it
        has ended); returns the ids we still own, as `owned` does."""
        if not run_ids:
            return {}
        now = self.clock()
        async with self.database.transaction(write=True) as session:
            rows = await session.execute(
                update(RUNS)
                .where(
                    among(RUNS.c.id, run_ids, self.database.dialect),
                    RUNS.c.status == RUNNING,
                    RUNS.c.instance_id == self.instance_id,
                )
                .values(lease_expires_at=now + self.lease)
                .returning(RUNS.c.id, RUNS.c.cancel_requested_at)
            )
            return {str(run_id): asked is not None for run_id, asked in rows}

    async def reclaim_expired(
        self,
        limit: int = 100,
        follow_ups: list[ClaimedRun] | None = None,
        user_id: str | None = None,
    ) -> list[str]:
        """Record runs whose owner stopped renewing as abandoned and release their tasks.

        The overlap policy then settles what came due during the abandoned run, as when a
        run ends: a buffered occurrence it starts is ours to run, and is added to
        `follow_ups` (without the list, nothing is started and the occurrence stays due)."""
        now = self.clock()
        abandoned: list[str] = []
        # A plain read first: the locking transaction (on SQLite, the write lock) only when
        # some lease has actually expired, which is rare, while this runs on most polls. One
        # statement: in autocommit on PostgreSQL (no BEGIN and COMMIT round trips).
        async with self.database.read() as session:
            any_expired = await session.scalar(
                select(TaskRun.id)
                .where(TaskRun.status == RUNNING, TaskRun.lease_expires_at < now)
                .limit(1)
            )
        if any_expired is None:
            return abandoned
        async with self.database.transaction(write=True) as session:
            expired = (
                select(TaskRun)
                .where(TaskRun.status == RUNNING, TaskRun.lease_expires_at < now)
                .order_by(TaskRun.lease_expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            for run in await session.scalars(expired):
                reason = f"abandoned: instance {run.instance_id} stopped renewing its lease"
                run.status = RunStatus.ABANDONED.value
                run.finished_at = now
                run.error = reason
                run.lease_expires_at = None
                owner = states_query().where(TASKS.c.id == run.task_id).with_for_update()
                for task in await load_states(session, owner):
                    abandoned_event = run_event(
                        ev.RUN_FAILED,
                        task,
                        run.id,
                        run.scheduled_for,
                        run.trigger,
                        RunStatus.ABANDONED,
                        reason,
                    )
                    await outbox.enqueue(session, [abandoned_event], now)
                    if task.current_run_id == run.id:
                        self._release(task, TaskStatus.FAILED, None, reason, now)
                        await self._release_tree(session, task.id, reason, now)
                        if follow_ups is not None and user_id in (None, task.user_id):
                            started = await self._settle_after_run(
                                session, task, run.started_at or now, now
                            )
                            if started is not None:
                                follow_ups.append(started)
                        await write_back(session, [task])
                abandoned.append(run.id)
            if abandoned:
                await notify_in_transaction(session)
        if abandoned:
            wake_local()
        return abandoned

    # ------------------------------------------------------------------ finishing

    async def set_attempt(self, run_id: str, attempt: int) -> None:
        async with self.database.transaction(write=True) as session:
            await session.execute(
                update(TaskRun)
                .where(TaskRun.id == run_id, TaskRun.instance_id == self.instance_id)
                .values(attempt=attempt)
            )

    async def finish(self, claimed: ClaimedRun, outcome: RunResult) -> ClaimedRun | None:
        """Record a run's outcome if we still own it; returns a buffered run to start next."""
        return (await self.finish_many([(claimed, outcome)]))[0]

    async def finish_many(
        self, items: Sequence[tuple[ClaimedRun, RunResult]]
    ) -> list[ClaimedRun | None]:
        """Record the outcomes of runs in one transaction (a group commit under load).

        Each run is recorded only if it is still `running` and ours, under row locks; its
        task only if the run still owns it. Returns, per item, a buffered run to start next.
        """
        now = self.clock()
        dialect = self.database.dialect
        follow_ups: list[ClaimedRun | None] = [None] * len(items)
        finished = [
            {
                "id": claimed.run_id,
                "status": outcome.status.value,
                "started_at": claimed.started_at,
                "finished_at": now,
                "result": outcome.result,
                "error": outcome.error,
                "attempt": outcome.attempt,
                "lease_expires_at": None,
            }
            for claimed, outcome in items
        ]
        finished.sort(key=lambda row: row["id"])  # locked in id order, as renew() locks them
        async with self.database.transaction(write=True) as session:
            owned = await update_rows_where(
                session,
                RUNS,
                "id",
                FINISHED_RUN_COLUMNS,
                finished,
                where={"status": RUNNING, "instance_id": self.instance_id},
            )
            mine = [(i, c, o) for i, (c, o) in enumerate(items) if c.run_id in owned]
            for claimed, _ in items:
                if claimed.run_id not in owned:
                    logger.info("run %s ended elsewhere; not recording it", claimed.run_id)
            if not mine:
                return follow_ups
            owners = (
                _OWNERS.where(
                    among(TASKS.c.id, {claimed.task_id for _, claimed, _ in mine}, dialect)
                )
                .order_by(TASKS.c.id)  # the lock order of every multi-row writer
                .with_for_update(of=TASKS)
            )
            loaded = await load_states(session, owners, notified=True)
            tasks = {task.id: task for task in loaded}
            released: list[TaskState] = []
            tidy: list[str] = []  # tasks whose history is due for pruning
            events: list[ev.Event] = []
            wake = False
            for index, claimed, outcome in mine:
                task = tasks.get(claimed.task_id)
                if task is not None:
                    events.extend(_outcome_events(task, claimed, outcome))
                if task is None or task.current_run_id != claimed.run_id:
                    continue
                released.append(task)
                status = {
                    RunStatus.COMPLETED: TaskStatus.COMPLETED,
                    RunStatus.CANCELLED: TaskStatus.CANCELLED,
                }.get(outcome.status, TaskStatus.FAILED)
                self._release(task, status, outcome.result, outcome.error, now)
                failures, paused = task.consecutive_failures, task.schedule_paused
                self._count_failures(task, outcome.status)
                if failures and outcome.status is RunStatus.COMPLETED:
                    note = f"completed after {failures} failed run(s)"
                    events.append(schedule_event(ev.SCHEDULE_RECOVERED, task, note))
                if task.schedule_paused and not paused:
                    events.append(
                        schedule_event(ev.SCHEDULE_PAUSED, task, task.schedule_pause_note)
                    )
                if status is not TaskStatus.COMPLETED:
                    reason = outcome.error or f"run ended {outcome.status.value}"
                    await self._release_tree(session, task.id, reason, now)
                follow_ups[index] = await self._settle_after_run(
                    session, task, claimed.started_at, now
                )
                wake = wake or task.schedule_enabled
                if task.run_count % prune_step(self.settings.run_history_keep) == 0:
                    tidy.append(task.id)
            await prune_runs(session, tidy, self.settings.run_history_keep)
            await write_back(session, released)
            notified = {task.user_id for task in loaded if task.notified}
            events = [event for event in events if event.user_id in notified]
            await outbox.enqueue(session, events, now)
            if wake:  # the task is claimable again: peers may be asleep past its next time
                await notify_in_transaction(session)
        if wake:
            wake_local()
        return follow_ups

    def _release(
        self, task: TaskState, status: TaskStatus, result: Any, error: str | None, now: datetime
    ) -> None:
        task.status = status.value
        task.result = result
        task.error = error
        task.progress = 1.0 if status is TaskStatus.COMPLETED else task.progress
        task.completed_at = now
        task.current_run_id = None
        task.updated_at = now

    def _count_failures(self, task: TaskState, status: RunStatus) -> None:
        """Failed runs in a row; at the task's pause_after_failures the schedule pauses, with a
        note saying so. A completed run starts the count again; a cancelled one is neither."""
        if status is RunStatus.COMPLETED:
            task.consecutive_failures = 0
            return
        if status is RunStatus.CANCELLED:
            return
        task.consecutive_failures += 1
        note = after_failure(task.consecutive_failures, task.pause_after_failures)
        if note is not None and task.schedule_enabled and not task.schedule_paused:
            task.schedule_paused = True
            task.schedule_pause_note = note
            task.schedule_paused_until = None
            logger.warning("task %s: %s", task.id, note)

    async def _release_tree(
        self, session: AsyncSession, root_id: str, reason: str, now: datetime
    ) -> None:
        """Descendants a run left unfinished (pending or in_progress) fail with its reason, so no
        task stays pending after the run that should have run it."""
        await session.execute(
            update(Task)
            .where(
                Task.id.in_(subtree_ids(root_id, with_root=False)),
                Task.status.in_([IN_PROGRESS, TaskStatus.PENDING.value]),
            )
            .values(status=TaskStatus.FAILED.value, error=reason, completed_at=now, updated_at=now)
        )

    async def _settle_after_run(
        self, session: AsyncSession, task: TaskState, started: datetime, now: datetime
    ) -> ClaimedRun | None:
        """Occurrences that came due while the run was running meet the overlap policy now."""
        if not task.schedule_enabled or task.next_run_at is None:
            return None
        aside: list[tuple[TaskState, datetime, str]] = []
        schedule = _schedule_or_set_aside(task, aside)
        if schedule is None:  # the run is recorded; its schedule cannot go on
            for _, occurrence, why in aside:
                if occurrence <= now:  # one not yet due is not recorded ahead of its time
                    await self._record(session, task, [occurrence], RunStatus.SKIPPED, now, why)
            return None
        decision = decide_after_run(schedule, task, started, now)
        if decision is None:
            return None
        overlap = f"the previous run was still running (overlap {task.schedule_overlap})"
        await self._record(session, task, decision.skipped, RunStatus.SKIPPED, now, overlap)
        if decision.fire is None:
            set_next_run(task, decision.following)
            return None
        paused = task.schedule_paused
        reason = self._hold(task, decision.fire)
        if paused and not task.schedule_paused:  # its pause ran out
            resumed = schedule_event(ev.SCHEDULE_RESUMED, task, "the pause ended")
            await outbox.enqueue(session, [resumed], now)
        if reason is not None:
            await self._record(session, task, [decision.fire], RunStatus.SKIPPED, now, reason)
            # As _fire moves it: past the held occurrence, or to `following` when the policy
            # already recorded the ones between.
            following = fire_after(schedule, task, decision.fire)
            if following is not None and decision.following is not None:
                following = decision.following
            set_next_run(task, following)
            return None
        return await self._fire(
            session, task, schedule, decision.fire, now, then=decision.following
        )

    async def announce_too_long(self, limit: int = 500) -> int:
        """run.too_long, once per run, for running runs of tasks with alert_max_duration_seconds
        that have run longer than that. Any instance may do it: the rows are locked (SKIP
        LOCKED) and marked in the transaction that writes the event. Returns how many."""
        now = self.clock()
        candidates = (
            select(
                RUNS.c.id,
                RUNS.c.started_at,
                RUNS.c.scheduled_for,
                RUNS.c.trigger,
                TASKS.c.alert_max_duration_seconds,
            )
            .join(TASKS, TASKS.c.id == RUNS.c.task_id)
            .where(
                RUNS.c.status == RUNNING,
                RUNS.c.too_long_announced_at.is_(None),
                TASKS.c.alert_max_duration_seconds.is_not(None),
            )
            .limit(limit)
        )
        async with self.database.transaction() as session:  # a plain read first: usually none
            rows = list(await session.execute(candidates))
        over = [
            row.id
            for row in rows
            if row.started_at is not None
            and now - _aware(row.started_at) > timedelta(seconds=row.alert_max_duration_seconds)
        ]
        if not over:
            return 0
        async with self.database.transaction(write=True) as session:
            locked = (
                select(TaskRun)
                .where(
                    among(RUNS.c.id, over, self.database.dialect),
                    TaskRun.status == RUNNING,
                    TaskRun.too_long_announced_at.is_(None),
                )
                .with_for_update(skip_locked=True)
            )
            events = []
            for run in await session.scalars(locked):
                run.too_long_announced_at = now
                owner = states_query().where(TASKS.c.id == run.task_id)
                for task in await load_states(session, owner):
                    started = _aware(run.started_at or now)
                    threshold = task.alert_max_duration_seconds or 0
                    events.append(
                        run_event(
                            ev.RUN_TOO_LONG,
                            task,
                            run.id,
                            run.scheduled_for,
                            run.trigger,
                            RunStatus.RUNNING,
                            f"still running {(now - started).total_seconds():.0f} s after its "
                            f"start (alert after {threshold} s)",
                            started_at=iso_utc(started),
                        )
                    )
            await outbox.enqueue(session, events, now)
        return len(events)

    # ------------------------------------------------------------------ sleeping

    async def next_wake_at(self, user_id: str | None = None) -> datetime | None:
        """The earliest moment something may need this scheduler: a due time, a requested
        trigger, or a lease that will expire."""
        parameters = {} if user_id is None else {"wake_user": user_id}
        async with self.database.read() as session:  # one statement: autocommit
            result = await session.execute(_wake_statement(user_id is not None), parameters)
            candidates = result.one()
        found = [_aware(c) for c in candidates if c is not None]
        return min(found) if found else None


@functools.lru_cache(maxsize=2)
def _wake_statement(
    by_user: bool,
) -> Select[datetime | None, datetime | None, datetime | None]:
    """The earliest due time, requested trigger and lease expiry, in one statement (each is
    an index's first entry), built once: a scheduler asks before every sleep."""
    due_query = select(func.min(Task.due_at)).where(Task.schedule_enabled, actionable())
    requested = select(func.min(Task.trigger_requested_at)).where(
        Task.trigger_requested_at.is_not(None)
    )
    if by_user:
        user = bindparam("wake_user", type_=TASKS.c.user_id.type)
        due_query = due_query.where(Task.user_id == user)
        requested = requested.where(Task.user_id == user)
    lease = select(func.min(TaskRun.lease_expires_at)).where(TaskRun.status == RUNNING)
    return select(due_query.scalar_subquery(), requested.scalar_subquery(), lease.scalar_subquery())


TREE_NO_OVERLAP = "the previous run was still running (a tree's runs cannot overlap)"
# allow_all: at most this many runs of one task at once (each holds a slot of the process
# running it; without a bound one task, or one user's requests, could start any number).
MAX_OVERLAPPING_RUNS = 100


async def _running_count(session: AsyncSession, task_id: str) -> int:
    query = select(func.count()).where(RUNS.c.task_id == task_id, RUNS.c.status == RUNNING)
    return int(await session.scalar(query) or 0)


def _overlaps(task: TaskState, policy: str | None = None) -> bool:
    """Whether a new run of the task may start beside its running one: allow_all, for a task
    without children (a tree's task rows hold the state of one run at a time)."""
    chosen = policy or task.schedule_overlap
    return chosen == OverlapPolicy.ALLOW_ALL.value and task.standalone


def _schedule_or_set_aside(
    task: TaskState, skipped: list[tuple[TaskState, datetime, str]]
) -> Timetable | None:
    """The task's schedule; None for a stored one that can no longer be computed (a time zone
    a tzdata update removed, an expression this version refuses, a row written by hand). That
    one is disabled and its due occurrence appended to `skipped` with the reason, rather than
    failing the claim or the batch, which would stop every other schedule too. Enabling it
    again goes through the usual validation."""
    try:
        return schedule_of(task)
    except ValidationError as error:
        reason = f"the schedule cannot be computed ({error}); it was disabled"
        logger.warning("task %s: %s", task.id, reason)
        if task.next_run_at is not None:
            skipped.append((task, task.next_run_at, reason))
        set_next_run(task, None)
        return None


def _missed_reason(task: TaskState) -> str:
    return f"late beyond the misfire grace (misfire {task.schedule_misfire})"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _replayed(run: TaskRun) -> ClaimedRun:
    return ClaimedRun(
        run.id,
        run.task_id,
        run.user_id,
        run.trigger,
        run.scheduled_for,
        run.started_at or run.created_at,
        run.attempt,
        replayed=True,
    )


async def _busy_relative(
    session: AsyncSession, task: TaskState, *, descendants: bool = True
) -> tuple[str, str] | None:
    """The id and name of an ancestor (nearest first) or, with `descendants`, a descendant of
    `task` that is running, if any."""
    if task.parent_id is not None:
        chain = ancestor_ids(task.parent_id).subquery()
        query = (
            select(TASKS.c.id, TASKS.c.name)
            .join(chain, TASKS.c.id == chain.c.id)
            .where(TASKS.c.status == IN_PROGRESS)
            .order_by(chain.c.depth)
        )
        if (found := (await session.execute(query.limit(1))).first()) is not None:
            return found.id, found.name
    if not descendants or task.has_children is False:
        return None
    below = subtree_ids(task.id, with_root=False)
    query = select(TASKS.c.id, TASKS.c.name).where(
        TASKS.c.id.in_(below), TASKS.c.status == IN_PROGRESS
    )
    found = (await session.execute(query.limit(1))).first()
    return None if found is None else (found.id, found.name)


async def tree_states(session: AsyncSession, root_id: str) -> list[TaskState]:
    """The tasks of the tree under `root_id` (the root included) with their definitions, for
    its run."""
    query = states_query(definition=True).where(TASKS.c.id.in_(subtree_ids(root_id)))
    return await load_states(session, query, definition=True)


@dataclass(frozen=True)
class StartRequest:
    """One ad-hoc start: what `RunStore.start_now` was asked."""

    task_id: str
    trigger: RunTrigger
    idempotency_key: str | None = None
    check: Callable[[TaskState], None] | None = None
    # The overlap policy for this start, instead of the task's own (tasks.execute's overlap).
    overlap: str | None = None


class _PendingStarts:
    """The run rows and task states a batch of starts has decided, written together."""

    def __init__(self, store: RunStore, session: AsyncSession) -> None:
        self.store = store
        self.session = session
        self.rows: list[dict[str, Any]] = []
        self.tasks: dict[str, TaskState] = {}

    def add(self, row: dict[str, Any], task: TaskState) -> None:
        self.rows.append(row)
        self.tasks[task.id] = task

    async def flush(self) -> None:
        """Write what was decided so far, so the next queries see it."""
        if self.rows:
            await insert_rows(self.session, RUNS, self.rows, unique=OCCURRENCE)
            self.rows = []
        if self.tasks:
            await write_back(self.session, list(self.tasks.values()))
            self.tasks = {}
            self.session.expire_all()  # ORM reads of these rows must see the writes


async def _runs_by_key(
    session: AsyncSession, requests: Sequence[StartRequest], dialect: str
) -> dict[tuple[str, str], ClaimedRun]:
    """Earlier runs of the requested tasks under the requested idempotency keys."""
    keyed = {(r.task_id, r.idempotency_key) for r in requests if r.idempotency_key is not None}
    if not keyed:
        return {}
    rows = await session.scalars(
        select(TaskRun).where(
            among(RUNS.c.task_id, {task_id for task_id, _ in keyed}, dialect),
            among(RUNS.c.idempotency_key, {key for _, key in keyed}, dialect),
        )
    )
    found: dict[tuple[str, str], ClaimedRun] = {}
    for run in rows:
        if run.idempotency_key is not None and (run.task_id, run.idempotency_key) in keyed:
            found[(run.task_id, run.idempotency_key)] = _replayed(run)
    return found


def run_event(
    kind: str,
    task: TaskState,
    run_id: str,
    scheduled_for: datetime | None,
    trigger: str,
    status: RunStatus | str,
    reason: str | None,
    **extra: Any,
) -> ev.Event:
    """A run's event: which task, which run, which occurrence, and why."""
    return ev.Event(
        kind,
        task.user_id,
        {
            "task_id": task.id,
            "task_name": task.name,
            "run_id": run_id,
            "scheduled_for": iso_utc(scheduled_for),
            "trigger": trigger,
            "status": str(status),
            "reason": reason,
            **extra,
        },
    )


def _outcome_events(task: TaskState, claimed: ClaimedRun, outcome: RunResult) -> list[ev.Event]:
    """run.failed for a failed or timed-out run, run.succeeded for a completed one (sent only
    where asked for); a cancelled or terminated run was ended on purpose: no event."""
    if outcome.status is RunStatus.COMPLETED:
        kind = ev.RUN_SUCCEEDED
    elif outcome.status in (RunStatus.FAILED, RunStatus.TIMEOUT):
        kind = ev.RUN_FAILED
    else:
        return []
    return [
        run_event(
            kind,
            task,
            claimed.run_id,
            claimed.scheduled_for,
            claimed.trigger,
            outcome.status,
            outcome.error,
            attempt=outcome.attempt,
        )
    ]


# An external scheduler's call may arrive this much before its occurrence (clock skew).
EARLY_TRIGGER = timedelta(seconds=10)


def _expected_occurrence(task: TaskState, trigger: RunTrigger, now: datetime) -> datetime | None:
    """The occurrence of an external schedule that a webhook trigger arriving now answers:
    the expected one, if the call comes at most EARLY_TRIGGER before it or within its grace
    after it. Any other start is an ad-hoc run."""
    expected = task.next_run_at
    if trigger is not RunTrigger.WEBHOOK or not is_external(task) or expected is None:
        return None
    if not task.schedule_enabled:
        return None
    grace = timedelta(seconds=trigger_grace(task))
    return expected if expected - EARLY_TRIGGER <= now <= expected + grace else None


def _late_event(
    task: TaskState, run_id: str, occurrence: datetime, start: datetime, trigger: str
) -> ev.Event | None:
    """run.late when the run starts later after its occurrence than the task allows."""
    threshold = task.alert_late_after_seconds
    lateness = (start - occurrence).total_seconds()
    if threshold is None or lateness <= threshold:
        return None
    return run_event(
        ev.RUN_LATE,
        task,
        run_id,
        occurrence,
        trigger,
        RunStatus.RUNNING,
        f"started {lateness:.1f} s after its occurrence (alert after {threshold} s)",
        lateness_seconds=round(lateness, 3),
    )


def schedule_event(kind: str, task: TaskState, note: str | None) -> ev.Event:
    return ev.Event(
        kind,
        task.user_id,
        {"task_id": task.id, "task_name": task.name, "note": note},
    )
