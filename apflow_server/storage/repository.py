"""TaskRepository: every read and write of tasks and their run history.

Each public method is one transaction. Writes validate everything first and write nothing when
anything is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from apflow_server.config import Settings
from apflow_server.core.clock import Clock, utcnow
from apflow_server.core.commands import check_command_env, names_command_executor
from apflow_server.core.errors import (
    ConflictError,
    TaskNotFoundError,
    ValidationError,
)
from apflow_server.core.events import Event
from apflow_server.core.task_fields import (
    SCHEDULE_FIELDS,
    parse_utc_instant,
    validate_task_fields,
)
from apflow_server.core.trees import (
    MAX_TREE_DEPTH,
    MAX_TREE_TASKS,
    NodeRef,
    batch_label,
    depth_of_batch,
    plan_batch,
    resolve_dependencies,
)
from apflow_server.core.types import (
    RunStatus,
    RunTrigger,
    TaskStatus,
    parse_schedule_type,
)
from apflow_server.schedules.plan import (
    apply_schedule,
    next_run_from,
    schedule_of,
    set_next_run,
)
from apflow_server.schedules.policy import decide_external_run
from apflow_server.storage import notifications as outbox
from apflow_server.storage.batches import among
from apflow_server.storage.calendars import attach_calendars, load_calendar
from apflow_server.storage.database import Database
from apflow_server.storage.models import RUNS, TASKS, Task, TaskRun, run_row
from apflow_server.storage.pages import Page as Page
from apflow_server.storage.signals import schedule_write

MAX_PAGE = 1000
MAX_OFFSET = 1_000_000_000


# Alert thresholds: stored as given (checked by core/task_fields.py).
ALERT_FIELDS = ("alert_late_after_seconds", "alert_max_duration_seconds")


@dataclass
class TaskNode:
    task: Task
    children: list[TaskNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from apflow_server.storage.models import task_to_dict

        return {**task_to_dict(self.task), "children": [c.to_dict() for c in self.children]}


def check_page(limit: Any, offset: Any) -> tuple[int, int]:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError("limit", f"must be a whole number in 1..{MAX_PAGE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise ValidationError("offset", f"must be a whole number in 0..{MAX_OFFSET}")
    return limit, offset


class TaskRepository:
    """Tasks, trees and schedules in the database.

    `TaskRepository()` uses the database of the environment (APFLOW_DATABASE_URL, else the
    SQLite file under APFLOW_HOME) and migrates a fresh SQLite file on first use.
    """

    def __init__(
        self,
        database: Database | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._database = database
        self._schema_checked = database is not None
        self.clock = clock

    async def db(self) -> Database:
        if self._database is None:
            self._database = Database.from_settings(self.settings)
        if not self._schema_checked:
            await self._database.ensure_schema()
            self._schema_checked = True
        return self._database

    # ------------------------------------------------------------------ create

    async def create_task(self, **fields: Any) -> Task:
        """Create one task (its fields as keywords)."""
        return (await self.create_tasks([fields]))[0]

    async def create_tasks(
        self,
        specs: Sequence[Mapping[str, Any]],
        *,
        check_parent: Callable[[Task], None] | None = None,
    ) -> list[Task]:
        """Create a tree in one transaction: dependencies and parents may name tasks by name.

        `check_parent` is called with the existing task the new tree hangs under (if any),
        inside the transaction and before anything of that tree (its tasks, their ids) is
        read or resolved; it raises to refuse, e.g. when the caller may not touch it."""
        if not isinstance(specs, Sequence) or isinstance(specs, str | bytes) or not specs:
            raise ValidationError("tasks", "must be a non-empty list of tasks")
        if len(specs) > MAX_TREE_TASKS:
            raise ValidationError("tasks", f"a tree holds at most {MAX_TREE_TASKS} tasks")
        label = batch_label(len(specs))
        cleaned = [
            _with_prefix(label(i), validate_task_fields, spec, creating=True)
            for i, spec in enumerate(specs)
        ]
        for index, spec in enumerate(cleaned):
            _with_prefix(label(index), self._check_command_env, spec)
        now = self.clock()
        database = await self.db()
        async with schedule_write(database) as session:
            given = [spec["id"] for spec in cleaned if spec.get("id")]
            existing = await session.scalars(select(Task.id).where(Task.id.in_(given)))
            nodes = plan_batch(cleaned, existing)
            if depth_of_batch(nodes) > MAX_TREE_DEPTH:
                raise ValidationError("tasks", f"a tree is at most {MAX_TREE_DEPTH} levels deep")
            root_index = next(
                i for i, n in enumerate(nodes) if n.parent_id not in {m.id for m in nodes}
            )
            root = nodes[root_index]
            parent: Task | None = None
            siblings: list[NodeRef] = []
            if root.parent_id is not None:
                parent = await session.get(Task, root.parent_id)
                if parent is None:
                    raise ValidationError(
                        f"{label(root_index)}parent_id", f"no task {root.parent_id!r}"
                    )
                if check_parent is not None:
                    check_parent(parent)
                ancestry = await _ancestry(session, parent)
                if len(ancestry) + depth_of_batch(nodes) > MAX_TREE_DEPTH:
                    raise ValidationError(
                        f"{label(root_index)}parent_id",
                        f"a tree is at most {MAX_TREE_DEPTH} levels deep",
                    )
                if await tree_size(session, ancestry[-1].id) + len(nodes) > MAX_TREE_TASKS:
                    raise ValidationError(
                        f"{label(root_index)}parent_id",
                        f"a tree holds at most {MAX_TREE_TASKS} tasks",
                    )
                rows = await session.scalars(select(Task).where(Task.parent_id == parent.id))
                siblings = [_node_of(row) for row in rows]
            resolve_dependencies(
                [*nodes, *siblings],
                field_of=lambda node: (
                    f"{label(nodes.index(node))}dependencies" if node in nodes else "dependencies"
                ),
            )
            owner = cleaned[root_index].get("user_id", parent.user_id if parent else None)
            if parent is not None and parent.user_id != owner:
                raise ValidationError(
                    f"{label(root_index)}user_id", "must match the owner of the parent task"
                )
            tasks = []
            for index, (node, spec) in enumerate(zip(nodes, cleaned, strict=True)):
                if spec.get("user_id", owner) != owner:
                    raise ValidationError(
                        f"{label(index)}user_id", "every task of a tree has the root's owner"
                    )
                task = Task(
                    id=node.id,
                    parent_id=node.parent_id,
                    user_id=owner,
                    name=spec["name"],
                    status=TaskStatus.PENDING.value,
                    priority=spec.get("priority", 2),
                    inputs=spec.get("inputs", {}),
                    params=spec.get("params", {}),
                    schemas=spec.get("schemas", {}),
                    dependencies=node.dependencies,
                    progress=0.0,
                    created_at=now,
                    updated_at=now,
                    schedule_timezone=self.settings.default_timezone,
                    schedule_enabled=False,
                    run_count=0,
                    schedule_misfire="run_once",
                    schedule_overlap="skip",
                    schedule_jitter_seconds=0,
                    schedule_mode="internal",
                    alert_late_after_seconds=spec.get("alert_late_after_seconds"),
                    alert_max_duration_seconds=spec.get("alert_max_duration_seconds"),
                )
                schedule_values = {k: v for k, v in spec.items() if k in SCHEDULE_FIELDS}
                task.loaded_calendar = await _with_prefix_async(
                    label(index),
                    load_calendar(session, owner, spec.get("schedule_calendar")),
                )
                _with_prefix(
                    label(index),
                    apply_schedule,
                    task,
                    schedule_values,
                    now,
                    was_enabled=False,
                )
                tasks.append(task)
            session.add_all(tasks)
        return tasks

    # ------------------------------------------------------------------ read

    async def get_task_by_id(self, task_id: str) -> Task | None:
        database = await self.db()
        async with database.read() as session:
            return await session.get(Task, task_id)

    async def require_task(self, task_id: str) -> Task:
        task = await self.get_task_by_id(task_id)
        if task is None:
            raise TaskNotFoundError(task_id)
        return task

    async def list_tasks(
        self,
        *,
        user_id: str | None = None,
        status: str | None = None,
        parent_id: str | None = None,
        roots_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        limit, offset = check_page(limit, offset)
        query = select(Task)
        if user_id is not None:
            query = query.where(Task.user_id == user_id)
        if status is not None:
            query = query.where(Task.status == _status(status))
        if parent_id is not None:
            query = query.where(Task.parent_id == parent_id)
        if roots_only:
            query = query.where(Task.parent_id.is_(None))
        return await self._page(query.order_by(Task.created_at, Task.id), limit, offset)

    async def get_tree(self, task_id: str) -> TaskNode:
        """The whole tree the task belongs to, from its root; children by priority."""
        database = await self.db()
        async with database.transaction() as session:
            task = await session.get(Task, task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            root = (await _ancestry(session, task))[-1]
            rows = await subtree_of(session, root.id)
        return build_tree(rows, root.id)

    # ------------------------------------------------------------------ update

    async def update_task(
        self, task_id: str, *, check_task: Callable[[Task], None] | None = None, **fields: Any
    ) -> Task:
        """Change a task's definition or schedule; an enabled schedule gets its next_run_at.

        `check_task` is called with the stored task inside the transaction, before anything
        is changed; it raises to refuse (a permission that depends on the stored fields)."""
        cleaned = validate_task_fields(fields, creating=False)
        now = self.clock()
        database = await self.db()
        async with schedule_write(database) as session:
            task = await session.get(Task, task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            if check_task is not None:
                check_task(task)
            definition = ("params", "schemas", "inputs")
            self._check_command_env({k: cleaned.get(k, getattr(task, k)) for k in definition})
            if "dependencies" in cleaned:
                siblings: list[NodeRef] = []
                if task.parent_id is not None:
                    rows = await session.scalars(
                        select(Task).where(Task.parent_id == task.parent_id, Task.id != task.id)
                    )
                    siblings = [_node_of(row) for row in rows]
                node = NodeRef(task.id, cleaned.get("name", task.name), task.parent_id)
                node.dependencies = cleaned["dependencies"]
                resolve_dependencies([node, *siblings])
                task.dependencies = node.dependencies
            if "user_id" in cleaned and cleaned["user_id"] != task.user_id:
                if task.parent_id is not None:
                    raise ValidationError("user_id", "only a root task's owner can be changed")
                for row in await subtree_of(session, task.id):
                    row.user_id = cleaned["user_id"]
            plain = ("name", "priority", "inputs", "params", "schemas", *ALERT_FIELDS)
            for name in plain:
                if name in cleaned:
                    setattr(task, name, cleaned[name])
            schedule_values = {k: v for k, v in cleaned.items() if k in SCHEDULE_FIELDS}
            calendar = cleaned.get("schedule_calendar", task.schedule_calendar)
            if schedule_values or ("user_id" in cleaned and calendar is not None):
                # The calendar of the task's (new) owner, by the name it will have.
                task.loaded_calendar = await load_calendar(session, task.user_id, calendar)
            if schedule_values:
                apply_schedule(task, schedule_values, now, was_enabled=task.schedule_enabled)
            task.updated_at = now
        return task

    async def set_hold(
        self,
        task_id: str,
        check: Callable[[Task], dict[str, Any]],
        announce: Callable[[Task], Event | None] | None = None,
    ) -> Task:
        """Write what `check` returns (pause, resume or skip columns) on the task, under its
        row lock: `check` sees the stored task in the writing transaction and raises to refuse,
        so a schedule disabled meanwhile is not paused. The grid is untouched. `announce`
        names the event the change causes, written to the outbox in the same transaction."""
        database = await self.db()
        async with schedule_write(database) as session:
            task = await session.get(Task, task_id, with_for_update=True)
            if task is None:
                raise TaskNotFoundError(task_id)
            for name, value in check(task).items():
                setattr(task, name, value)
            task.updated_at = self.clock()
            event = announce(task) if announce is not None else None
            if event is not None:
                await outbox.enqueue(session, [event], task.updated_at)
        return task

    def _check_command_env(self, task: Mapping[str, Any]) -> None:
        """A task that runs commands may set only the environment variables the operator
        listed (the executor checks again at run time)."""
        if names_command_executor(task.get("params"), task.get("schemas")):
            check_command_env(
                (task.get("inputs") or {}).get("env"), self.settings.command_env_allowlist
            )

    # ------------------------------------------------------------------ delete

    async def delete_task(self, task_id: str) -> list[str]:
        """Delete a task and its descendants; refused while any of them runs."""
        database = await self.db()
        async with database.transaction(write=True) as session:
            task = await session.get(Task, task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            rows = await subtree_of(session, task.id)
            busy = [row for row in rows if row.status == TaskStatus.IN_PROGRESS.value]
            if busy:
                raise ConflictError(
                    f"task {busy[0].id!r} ({busy[0].name}) is running; cancel it first",
                    data={"task_id": busy[0].id},
                )
            if task.parent_id is not None:
                siblings = await session.scalars(
                    select(Task).where(Task.parent_id == task.parent_id, Task.id != task.id)
                )
                for sibling in siblings:
                    if any(dep["id"] == task.id for dep in sibling.dependencies):
                        raise ConflictError(
                            f"task {sibling.id!r} ({sibling.name}) depends on it; "
                            "remove that dependency first",
                            data={"task_id": sibling.id},
                        )
            ids = [row.id for row in rows]
            await session.execute(delete(TaskRun).where(TaskRun.task_id.in_(ids)))
            await session.execute(delete(Task).where(Task.id.in_(ids)))
        return ids

    # ------------------------------------------------------------------ scheduled queries

    async def list_scheduled(
        self,
        *,
        enabled_only: bool = True,
        user_id: str | None = None,
        schedule_type: str | None = None,
        status: str | None = None,
        before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        limit, offset = check_page(limit, offset)
        query = select(Task).where(Task.schedule_type.is_not(None))
        if enabled_only:
            query = query.where(Task.schedule_enabled)
        if before is not None:  # whose next occurrence comes before this instant
            query = query.where(Task.next_run_at < before)
        if user_id is not None:
            query = query.where(Task.user_id == user_id)
        if schedule_type is not None:
            query = query.where(Task.schedule_type == parse_schedule_type(schedule_type).value)
        if status is not None:
            query = query.where(Task.status == _status(status))
        ordered = query.order_by(Task.next_run_at.is_(None), Task.next_run_at, Task.id)
        return await self._page(ordered, limit, offset)

    async def due_tasks(
        self, *, before: datetime | str | None = None, user_id: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Enabled schedules whose next occurrence is due by `before` (default now) and that are
        not running, oldest first."""
        limit, _ = check_page(limit, 0)
        cutoff = parse_utc_instant("before", before) or self.clock()
        query = (
            due_filter(select(Task), cutoff, user_id)
            .where(Task.status != TaskStatus.IN_PROGRESS.value)
            .where(Task.schedule_mode != "external")  # fired outside, only watched here
            .order_by(Task.due_at, Task.id)
            .limit(limit)
        )
        database = await self.db()
        async with database.read() as session:
            return list(await session.scalars(query))

    async def init_schedule(self, task_id: str, *, from_time: datetime | str | None = None) -> Task:
        """Recompute next_run_at from `from_time` (default now) on the task's current grid."""
        start = parse_utc_instant("from_time", from_time)
        now = self.clock()
        database = await self.db()
        async with schedule_write(database) as session:
            task = await session.get(Task, task_id)
            if task is None:
                raise TaskNotFoundError(task_id)
            if task.schedule_type is None:
                raise ValidationError("schedule_type", "the task has no schedule")
            if not task.schedule_enabled:
                raise ValidationError(
                    "schedule_enabled", "the schedule is disabled; enable it first"
                )
            await attach_calendars(session, [task])
            set_next_run(task, next_run_from(schedule_of(task), task, now, start))
            task.updated_at = now
        return task

    async def complete_scheduled(
        self,
        task_id: str,
        *,
        success: bool = True,
        error: str | None = None,
        result: Any = None,
        calculate_next_run: bool = True,
    ) -> Task:
        """Record the outcome of a run an external scheduler performed, and move the schedule on
        (policy.decide_external_run says which occurrence it served and where the schedule
        goes). The task's row is locked first; the history's unique key refuses an occurrence
        reported twice."""
        now = self.clock()
        database = await self.db()
        occurrence: datetime | None = None
        try:
            async with schedule_write(database) as session:
                task = await session.get(Task, task_id, with_for_update=True)
                if task is None:
                    raise TaskNotFoundError(task_id)
                if task.status == TaskStatus.IN_PROGRESS.value:
                    raise ConflictError(
                        f"task {task_id!r} is running here; its run completes itself",
                        data={"task_id": task_id},
                    )
                moves = calculate_next_run and task.schedule_enabled and task.schedule_type
                if moves:  # a schedule it cannot rebuild must not stop the run's record
                    await attach_calendars(session, [task])
                decided = decide_external_run(
                    schedule_of(task) if moves else None,
                    task,
                    now,
                    success=success,
                    error=error,
                    calculate_next_run=calculate_next_run,
                )
                occurrence = decided.occurrence
                outcome = run_row(
                    task.id,
                    task.user_id,
                    RunTrigger.API.value,
                    occurrence,
                    decided.status.value,
                    now,
                    started_at=now,
                    finished_at=now,
                    attempt=1,
                    error=decided.error,
                    result=result,
                )
                session.add(TaskRun(**outcome))
                task.status = TaskStatus.COMPLETED.value if success else TaskStatus.FAILED.value
                task.result = result
                task.error = decided.error
                task.completed_at = now
                task.last_run_at = now
                task.run_count += 1
                task.updated_at = now
                if decided.move:
                    set_next_run(task, decided.following)
                await session.flush()
                await prune_runs(session, [task.id], self.settings.run_history_keep)
        except IntegrityError:
            raise ConflictError(
                f"the occurrence of task {task_id!r} at {occurrence} is already recorded",
                data={"task_id": task_id},
            ) from None
        return task

    # ------------------------------------------------------------------ run history

    async def attach_calendars(self, tasks: Sequence[Any]) -> None:
        """Read the calendars these tasks name, for their schedule math (`schedule_of`)."""
        if any(getattr(task, "schedule_calendar", None) for task in tasks):
            database = await self.db()
            async with database.read() as session:
                await attach_calendars(session, tasks)

    async def task_names(self, task_ids: list[str]) -> dict[str, str]:
        """The names of these tasks, by id (for lists of runs, which name only the id)."""
        database = await self.db()
        async with database.read() as session:
            rows = await session.execute(select(Task.id, Task.name).where(Task.id.in_(task_ids)))
            return {task_id: name for task_id, name in rows}

    async def list_runs(
        self,
        *,
        task_id: str | None = None,
        user_id: str | None = None,
        status: str | None = None,
        trigger: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        limit, offset = check_page(limit, offset)
        query = select(TaskRun)
        if trigger is not None:
            try:
                query = query.where(TaskRun.trigger == RunTrigger(trigger).value)
            except ValueError:
                names = ", ".join(t.value for t in RunTrigger)
                raise ValidationError("trigger", f"must be one of {names}") from None
        if task_id is not None:
            query = query.where(TaskRun.task_id == task_id)
        if user_id is not None:
            query = query.where(TaskRun.user_id == user_id)
        if status is not None:
            try:
                query = query.where(TaskRun.status == RunStatus(status).value)
            except ValueError:
                names = ", ".join(s.value for s in RunStatus)
                raise ValidationError("status", f"must be one of {names}") from None
        ordered = query.order_by(TaskRun.created_at.desc(), TaskRun.id)
        return await self._page(ordered, limit, offset)

    # ------------------------------------------------------------------ helpers

    async def _page(self, query: Select[Any], limit: int, offset: int) -> Page:
        database = await self.db()
        async with database.transaction() as session:
            total = await session.scalar(
                select(func.count()).select_from(query.order_by(None).subquery())
            )
            items = list(await session.scalars(query.limit(limit).offset(offset)))
        return Page(items, total or 0)


# ---------------------------------------------------------------------- shared query pieces


def due_filter(
    query: Select[Any],
    cutoff: datetime | ColumnElement[Any],
    user_id: str | ColumnElement[Any] | None,
) -> Select[Any]:
    """The rows whose next occurrence is due by `cutoff`. Shaped for the partial index
    ix_tasks_due (ix_tasks_user_due with a user): `schedule_enabled` and `due_at` lead.
    Written as the bare column (`WHERE schedule_enabled`; `= 1` on SQLite), not `IS true`,
    which PostgreSQL cannot match to the index predicate: it scanned the whole table."""
    tasks = TASKS.c  # table columns: the filter serves ORM and Core selects alike
    query = query.where(
        tasks.schedule_enabled,
        tasks.due_at <= cutoff,
        or_(tasks.max_runs.is_(None), tasks.run_count < tasks.max_runs),
        or_(tasks.schedule_end_at.is_(None), tasks.next_run_at <= tasks.schedule_end_at),
    )
    if user_id is not None:
        query = query.where(tasks.user_id == user_id)
    return query


# A task's history is pruned back to `keep` rows once `prune_step(keep)` more have piled up:
# the cost is paid once per so many runs rather than on every one. Its runs are counted in
# the database (run_count), so their rows stay under keep + prune_step(keep) - 1 (at most
# twice keep, or keep + 49); rows that no run follows (missed, skipped) are counted per
# process, so a restart or a second scheduler can let a few more pile up before the next
# pruning takes them.
PRUNE_EVERY = 50


def prune_step(keep: int) -> int:
    return max(1, min(PRUNE_EVERY, keep))


async def prune_runs(session: AsyncSession, task_ids: list[str], keep: int) -> None:
    """Keep the newest `keep` history rows of each of these tasks (a running run or a queued
    backfill occurrence is not history, and stays): one
    statement for a whole batch of tasks, deleting at most what piled up since their last
    pruning (small steps: no long lock on the history)."""
    if not task_ids:
        return
    dialect = (await session.connection()).dialect.name
    newest_first = (TaskRun.created_at.desc(), TaskRun.id.desc())
    ranked = (
        select(
            TaskRun.id,
            func.row_number().over(partition_by=TaskRun.task_id, order_by=newest_first).label("n"),
        )
        .where(among(RUNS.c.task_id, task_ids, dialect))
        # what is still to happen is not history: running runs, queued backfill occurrences
        .where(TaskRun.status.not_in([RunStatus.RUNNING.value, RunStatus.QUEUED.value]))
        .subquery()
    )
    stale = select(ranked.c.id).where(ranked.c.n > keep)
    await session.execute(delete(TaskRun).where(TaskRun.id.in_(stale)))


def build_tree(rows: Sequence[Task], root_id: str) -> TaskNode:
    nodes = {row.id: TaskNode(row) for row in rows}
    for row in sorted(rows, key=lambda r: (r.priority, r.created_at, r.id)):
        if row.parent_id in nodes and row.id != root_id:
            nodes[row.parent_id].children.append(nodes[row.id])
    return nodes[root_id]


def subtree_ids(root_id: str, *, with_root: bool = True) -> Select[tuple[str]]:
    """The ids of the tree under `root_id` (one recursive query, the only one): every
    statement about a whole tree (read, size, release, busy) selects from it."""
    start = Task.id == root_id if with_root else Task.parent_id == root_id
    tree = select(Task.id).where(start).cte("subtree", recursive=True)
    tree = tree.union_all(select(Task.id).where(Task.parent_id == tree.c.id))
    return select(tree.c.id)


async def subtree_of(session: AsyncSession, root_id: str) -> list[Task]:
    return list(await session.scalars(select(Task).where(Task.id.in_(subtree_ids(root_id)))))


def ancestor_ids(parent_id: str) -> Select[tuple[str, int]]:
    """The ids of `parent_id` and its ancestors up to the root, with their distance (1: the
    parent): one recursive query, the only walk up a tree. MAX_TREE_DEPTH bounds it even on
    rows that an operator's edit made into a cycle."""
    chain = (
        select(Task.id, Task.parent_id, literal(1).label("depth"))
        .where(Task.id == parent_id)
        .cte("ancestry", recursive=True)
    )
    chain = chain.union_all(
        select(Task.id, Task.parent_id, chain.c.depth + 1).where(
            Task.id == chain.c.parent_id, chain.c.depth < MAX_TREE_DEPTH
        )
    )
    return select(chain.c.id, chain.c.depth)


async def ancestors(session: AsyncSession, parent_id: str | None) -> list[Task]:
    """The ancestors from `parent_id` up to the root (last); at most MAX_TREE_DEPTH of them."""
    if parent_id is None:
        return []
    chain = ancestor_ids(parent_id).subquery()
    query = select(Task).join(chain, Task.id == chain.c.id).order_by(chain.c.depth)
    return list(await session.scalars(query))


async def _ancestry(session: AsyncSession, task: Task) -> list[Task]:
    """The task and its ancestors, up to its root (last)."""
    return [task, *await ancestors(session, task.parent_id)]


async def tree_size(session: AsyncSession, root_id: str) -> int:
    """How many tasks the tree under `root_id` holds (the root included)."""
    tree = subtree_ids(root_id).subquery()
    return int(await session.scalar(select(func.count()).select_from(tree)) or 0)


def _node_of(task: Task) -> NodeRef:
    return NodeRef(task.id, task.name, task.parent_id, [dict(d) for d in task.dependencies])


def _status(value: str) -> str:
    try:
        return TaskStatus(value).value
    except ValueError:
        names = ", ".join(s.value for s in TaskStatus)
        raise ValidationError("status", f"must be one of {names}") from None


async def _with_prefix_async(prefix: str, work: Awaitable[Any]) -> Any:
    """`_with_prefix` for a coroutine."""
    try:
        return await work
    except ValidationError as exc:
        if not prefix or exc.field.startswith(prefix):
            raise
        raise ValidationError(prefix + exc.field, exc.reason) from None


def _with_prefix(prefix: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `function`, prefixing the field of a ValidationError (`tasks[2].name`)."""
    try:
        return function(*args, **kwargs)
    except ValidationError as exc:
        if not prefix or exc.field.startswith(prefix):
            raise
        raise ValidationError(prefix + exc.field, exc.reason) from None
