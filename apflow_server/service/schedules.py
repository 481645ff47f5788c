"""Schedules: list and find the due ones, recompute, report an external run, preview, and the
calendar export."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apflow_server.core.compute import UNLIMITED, Budget, off_loop
from apflow_server.core.errors import NotFoundError, ValidationError
from apflow_server.core.events import SCHEDULE_PAUSED, SCHEDULE_RESUMED, Event
from apflow_server.core.task_fields import (
    is_valid_unicode,
    no_nul,
    parse_instant,
    parse_utc_instant,
)
from apflow_server.schedules.plan import (
    Timetable,
    draft_schedule,
    fires_ahead,
    localise,
    occurrences_between,
    schedule_of,
)
from apflow_server.schedules.policy import closed_reason, holds_ahead
from apflow_server.service.audit import Audit, Change
from apflow_server.service.caller import Principal, check_owner, user_scope
from apflow_server.service.tasks import Tasks
from apflow_server.storage import backfills
from apflow_server.storage.models import Task
from apflow_server.storage.repository import MAX_PAGE, Page, TaskRepository

MAX_NOTE = 1000
MAX_UPCOMING_TASKS = 50  # schedules on one page of the upcoming timeline
MAX_UPCOMING_PER_TASK = 24  # occurrences drawn one by one (hourly for a day); more: a band
MAX_SKIP = 1000


def _who(caller: Principal | None) -> str:
    if caller is None:
        return "the operator"
    return caller.subject or f"a {caller.source} caller"


def _note(field: str, note: Any) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE or not is_valid_unicode(note):
        raise ValidationError(field, f"must be a string of at most {MAX_NOTE} characters")
    return no_nul(field, note).strip() or None


MAX_BACKFILL_CONCURRENCY = 1000


def _required(field: str, value: Any) -> Any:
    if value is None:
        raise ValidationError(field, "is required")
    return value


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValidationError(field, f"must be one of {', '.join(choices)}")


def _require_enabled(task: Task, action: str) -> None:
    if task.schedule_type is None:
        raise ValidationError("task_id", f"task {task.id!r} has no schedule to {action}")
    if not task.schedule_enabled:
        raise ValidationError(
            "task_id", f"the schedule of task {task.id!r} is disabled; nothing to {action}"
        )


logger = logging.getLogger("apflow_server.schedules")


class Schedules:
    def __init__(self, repository: TaskRepository, tasks: Tasks, audit: Audit) -> None:
        self.repository = repository
        self.tasks = tasks
        self.audit = audit

    async def list_scheduled(
        self,
        caller: Principal | None,
        *,
        enabled_only: bool = True,
        user_id: Any = None,
        schedule_type: str | None = None,
        status: str | None = None,
        before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        return await self.repository.list_scheduled(
            enabled_only=enabled_only,
            user_id=user_scope(caller, user_id),
            schedule_type=schedule_type,
            status=status,
            before=before,
            limit=limit,
            offset=offset,
        )

    async def upcoming(
        self,
        caller: Principal | None,
        *,
        hours: int = 24,
        limit: int = MAX_UPCOMING_TASKS,
        offset: int = 0,
        per_task: int = MAX_UPCOMING_PER_TASK,
        budget: Budget = UNLIMITED,
    ) -> tuple[list[Upcoming], int]:
        """What fires in the next `hours`: the enabled schedules whose next occurrence comes
        in that window (soonest first, a page of them) and how many there are in all. Each
        comes with its occurrences there, computed by the same engine as previews and the
        scheduler, at most `per_task` of them: a schedule that fires more often is `dense`
        and comes with its first few and the typical gap. A paused schedule is listed too:
        its occurrences are recorded skipped when they fall due."""
        now = self.repository.clock()
        end = now + timedelta(hours=hours)
        page = await self.list_scheduled(caller, before=end, limit=limit, offset=offset)
        await self.repository.attach_calendars(page.items)

        check = budget.checker("offset", "look at fewer schedules")

        def expand() -> list[Upcoming]:
            return [
                _upcoming(task, end - now, end, per_task, check)
                for task in page.items
                if task.next_run_at is not None
            ]

        return await off_loop(expand), page.total

    async def due(
        self,
        caller: Principal | None,
        *,
        before: datetime | str | None = None,
        user_id: Any = None,
        limit: int = 100,
    ) -> list[Task]:
        return await self.repository.due_tasks(
            before=before, user_id=user_scope(caller, user_id), limit=limit
        )

    async def pause(
        self, caller: Principal | None, task_id: Any, *, note: Any = None, until: Any = None
    ) -> Task:
        """Pause the schedule: its grid goes on, and each occurrence that falls due while
        paused is recorded skipped ("paused"). With `until`, it resumes by itself then."""
        current = await self.tasks.get(caller, task_id)
        text = _note("note", note)
        # Without an offset, a wall-clock time in the task's zone (as schedule bounds are).
        end = localise(parse_instant("until", until), current.schedule_timezone)
        if end is not None and end <= self.repository.clock():
            raise ValidationError("until", "must be in the future")
        who = _who(caller)

        def pause(task: Task) -> dict[str, Any]:
            check_owner(caller, task.user_id)
            _require_enabled(task, "pause")
            return {
                "schedule_paused": True,
                "schedule_pause_note": text or f"paused by {who}",
                "schedule_paused_until": end,
            }

        task = await self.repository.set_hold(
            task_id, pause, _announce(SCHEDULE_PAUSED, f"paused by {who}")
        )
        await self._audit(caller, "schedule.pause", task, ("schedule_paused", "note", "until"))
        logger.info(
            "task %s paused by %s until %s: %s",
            task.id,
            who,
            end or "resumed",
            task.schedule_pause_note,
        )
        return task

    async def resume(self, caller: Principal | None, task_id: Any, *, note: Any = None) -> Task:
        """Resume a paused schedule (its next occurrence runs; failures count from zero)."""
        await self.tasks.get(caller, task_id)
        text = _note("note", note)

        def resume(task: Task) -> dict[str, Any]:
            check_owner(caller, task.user_id)
            if task.schedule_type is None:
                raise ValidationError("task_id", f"task {task.id!r} has no schedule to resume")
            return {
                "schedule_paused": False,
                "schedule_pause_note": None,
                "schedule_paused_until": None,
                "consecutive_failures": 0,
            }

        task = await self.repository.set_hold(
            task_id, resume, _announce(SCHEDULE_RESUMED, text or f"resumed by {_who(caller)}")
        )
        await self._audit(caller, "schedule.resume", task, ("schedule_paused",))
        logger.info("task %s resumed by %s%s", task.id, _who(caller), f": {text}" if text else "")
        return task

    async def skip(self, caller: Principal | None, task_id: Any, *, count: Any = 1) -> Task:
        """Skip the next `count` occurrences: each is recorded skipped ("skipped by <who>")
        when it falls due. Skips add up; a paused schedule keeps them for after the pause."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SKIP:
            raise ValidationError("count", f"must be a whole number in 1..{MAX_SKIP}")
        await self.tasks.get(caller, task_id)
        who = _who(caller)

        def skip(task: Task) -> dict[str, Any]:
            check_owner(caller, task.user_id)
            _require_enabled(task, "skip")
            return {
                "schedule_skip_count": min(task.schedule_skip_count + count, MAX_SKIP),
                "schedule_skip_by": who,
            }

        task = await self.repository.set_hold(task_id, skip)
        await self._audit(caller, "schedule.skip", task, ("schedule_skip_count",))
        return task

    async def backfill(
        self,
        caller: Principal | None,
        task_id: Any,
        *,
        start: Any,
        end: Any,
        dry_run: Any = False,
        reprocess: Any = "none",
        max_concurrent: Any = 1,
        order: Any = "oldest_first",
        budget: Budget = UNLIMITED,
    ) -> dict[str, Any]:
        """Queue the schedule's occurrences in [start, end) for the schedulers to run, each
        with its own scheduled_for and trigger `backfill`, exactly once like any occurrence.
        An occurrence with a history row is left alone unless `reprocess` says to run it
        again (`failed`: the ones that did not complete; `all`). `dry_run` only says what
        would be queued. At most APFLOW_MAX_BACKFILL_OCCURRENCES occurrences."""
        task = await self.tasks.get(caller, task_id)
        if task.schedule_type is None:
            raise ValidationError("task_id", f"task {task.id!r} has no schedule to backfill")
        children = await self.repository.list_tasks(parent_id=task.id, limit=1)
        if children.total:
            raise ValidationError(
                "task_id", "a backfill runs a task without children (its runs overlap)"
            )
        first = localise(parse_instant("start", _required("start", start)), task.schedule_timezone)
        last = localise(parse_instant("end", _required("end", end)), task.schedule_timezone)
        assert first is not None and last is not None
        now = self.repository.clock()
        if last <= first:
            raise ValidationError("end", "must be after start")
        if last > now:
            raise ValidationError("end", "must not be in the future (the schedule runs those)")
        _choice("reprocess", reprocess, ("none", "failed", "all"))
        _choice("order", order, ("oldest_first", "newest_first"))
        if not isinstance(dry_run, bool):
            raise ValidationError("dry_run", "must be true or false")
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or not 1 <= max_concurrent <= MAX_BACKFILL_CONCURRENCY
        ):
            raise ValidationError(
                "max_concurrent", f"must be a whole number in 1..{MAX_BACKFILL_CONCURRENCY}"
            )
        cap = self.repository.settings.max_backfill_occurrences
        await self.repository.attach_calendars([task])
        schedule = schedule_of(task)
        occurrences = await off_loop(
            occurrences_between,
            schedule,
            first,
            last,
            cap + 1,
            budget.checker("start", "backfill a shorter period"),
        )
        if len(occurrences) > cap:
            raise ValidationError(
                "end",
                f"the period holds more than {cap} occurrences "
                "(APFLOW_MAX_BACKFILL_OCCURRENCES); backfill a shorter one",
            )
        # Days its business calendar closes are not run (the schedule skips them).
        occurrences = [o for o in occurrences if closed_reason(schedule, o) is None]
        made, decided = await backfills.create(
            await self.repository.db(),
            task_id=task.id,
            user_id=task.user_id,
            occurrences=occurrences,
            start=first,
            end=last,
            reprocess=reprocess,
            order=order,
            max_concurrent=max_concurrent,
            created_by=_who(caller),
            now=now,
            dry_run=dry_run,
        )
        if made is not None:
            logger.info(
                "backfill %s of task %s by %s: %d queued, %d already done",
                made.id, task.id, _who(caller), decided.queued, len(decided.done),
            )  # fmt: skip
            fields = ("start", "end", "reprocess", "max_concurrent", "order")
            await self._audit(caller, "schedule.backfill", task, fields)
        return {
            "backfill_id": made.id if made is not None else None,
            "dry_run": dry_run,
            "occurrences": [occurrence.isoformat() for occurrence in occurrences],
            "queued": decided.queued,
            "already_done": len(decided.done),
        }

    async def cancel_backfill(self, caller: Principal | None, backfill_id: Any) -> dict[str, Any]:
        """Cancel a backfill: what it still had queued is recorded cancelled."""
        if not isinstance(backfill_id, str) or not backfill_id or "\x00" in backfill_id:
            raise ValidationError("backfill_id", "must be a backfill id")
        database = await self.repository.db()
        found = await backfills.get(database, backfill_id)
        if found is None or (caller is not None and not caller.may_act_for(found.user_id)):
            raise NotFoundError(f"no backfill {backfill_id!r}", data={"field": "backfill_id"})
        cancelled = await backfills.cancel(database, backfill_id, self.repository.clock())
        if cancelled is None:
            raise NotFoundError(f"no backfill {backfill_id!r}", data={"field": "backfill_id"})
        await self.audit.record(
            caller, Change("backfill.cancel", "backfill", backfill_id, found.user_id)
        )
        return backfills.backfill_to_dict(cancelled)

    async def init(
        self, caller: Principal | None, task_id: Any, *, from_time: datetime | str | None = None
    ) -> Task:
        await self.tasks.get(caller, task_id)
        task = await self.repository.init_schedule(task_id, from_time=from_time)
        await self._audit(caller, "schedule.init", task, ("next_run_at",))
        return task

    async def complete(
        self,
        caller: Principal | None,
        task_id: Any,
        *,
        success: bool = True,
        error: str | None = None,
        result: Any = None,
        calculate_next_run: bool = True,
    ) -> Task:
        """Record a run an external scheduler performed and move the schedule on."""
        if not isinstance(success, bool):
            raise ValidationError("success", "must be true or false")
        if error is not None and not isinstance(error, str):
            raise ValidationError("error", "must be a string")
        if not isinstance(calculate_next_run, bool):
            raise ValidationError("calculate_next_run", "must be true or false")
        await self.tasks.get(caller, task_id)
        task = await self.repository.complete_scheduled(
            task_id,
            success=success,
            error=error,
            result=result,
            calculate_next_run=calculate_next_run,
        )
        await self._audit(caller, "schedule.complete", task, ("status", "next_run_at"))
        return task

    async def _audit(
        self, caller: Principal | None, action: str, task: Task, fields: tuple[str, ...]
    ) -> None:
        await self.audit.record(caller, Change(action, "task", task.id, task.user_id, fields))

    async def preview(
        self,
        caller: Principal | None,
        *,
        task_id: Any = None,
        count: int = 10,
        after: datetime | str | None = None,
        budget: Budget = UNLIMITED,
        **schedule_fields: Any,
    ) -> list[datetime]:
        """The next `count` fire times of a stored task's schedule, or of schedule fields given
        here (nothing is saved), computed off the event loop within `budget`."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PAGE:
            raise ValidationError("count", f"must be a whole number in 1..{MAX_PAGE}")
        now = self.repository.clock()
        start = parse_utc_instant("after", after) or now
        schedule: Timetable
        if task_id is not None:
            if schedule_fields:
                raise ValidationError(sorted(schedule_fields)[0], "give a task_id or a schedule")
            task, stored = await self.timetable(caller, task_id)
            if stored is None:
                raise ValidationError("schedule_type", "the task has no schedule")
            schedule = stored
            remaining = None if task.max_runs is None else task.max_runs - task.run_count
        else:
            default_timezone = self.repository.settings.default_timezone
            schedule, remaining = draft_schedule(
                schedule_fields, default_timezone=default_timezone, now=now
            )
        check = budget.checker("count", "ask for fewer fire times")
        return await off_loop(
            fires_ahead,
            schedule,
            count,
            start,
            remaining,
            strictly_after=after is not None,
            between_steps=check,
        )

    async def preview_holds(
        self, caller: Principal | None, task_id: Any, fires: list[datetime]
    ) -> list[str | None]:
        """Why each of a task's upcoming fire times will be skipped (paused, skipped by
        <user>), or None where it runs."""
        task, schedule = await self.timetable(caller, task_id)
        return holds_ahead(task, fires, schedule)

    async def fires_ahead(
        self, caller: Principal | None, task_id: Any, *, count: int, budget: Budget = UNLIMITED
    ) -> tuple[Task, list[tuple[datetime, str | None]]]:
        """The task, and its next `count` fire times with why each will be skipped (None: it
        runs); none for a disabled, ended or exhausted schedule. One read of the task."""
        task, schedule = await self.timetable(caller, task_id)
        if schedule is None or not task.schedule_enabled:
            return task, []
        remaining = None if task.max_runs is None else task.max_runs - task.run_count
        check = budget.checker("count", "ask for fewer fire times")
        fires = await off_loop(
            fires_ahead,
            schedule,
            count,
            self.repository.clock(),
            remaining,
            strictly_after=False,
            between_steps=check,
        )
        return task, list(zip(fires, holds_ahead(task, fires, schedule), strict=True))

    async def timetable(
        self, caller: Principal | None, task_id: Any
    ) -> tuple[Task, Timetable | None]:
        """The task and its schedule, under its business calendar if it names one (None:
        no schedule)."""
        task = await self.tasks.get(caller, task_id)
        await self.repository.attach_calendars([task])
        return task, schedule_of(task) if task.schedule_type is not None else None

    async def export_ical(
        self,
        caller: Principal | None,
        *,
        calendar_name: str | None = None,
        enabled_only: bool = True,
        user_id: Any = None,
        limit: int = 1000,
        base_url: str | None = None,
    ) -> tuple[str, int]:
        """The calendar text and how many tasks it shows."""
        from apflow_server.exports.ical import DEFAULT_CALENDAR_NAME, ICalExporter

        exporter = ICalExporter(
            calendar_name or DEFAULT_CALENDAR_NAME,
            base_url=base_url,
            repository=self.repository,
        )
        tasks = await exporter.fetch_tasks(
            user_id=user_scope(caller, user_id), enabled_only=enabled_only, limit=limit
        )
        return await off_loop(exporter.render, tasks), len(tasks)


def _announce(kind: str, by: str) -> Callable[[Task], Event]:
    """The event of a pause or a resume, with the task's note (or who did it)."""

    def event(task: Task) -> Event:
        note = task.schedule_pause_note if kind == SCHEDULE_PAUSED else by
        return Event(
            kind, task.user_id, {"task_id": task.id, "task_name": task.name, "note": note or by}
        )

    return event


@dataclass(frozen=True)
class Upcoming:
    task: Task
    fires: list[datetime]  # every occurrence in the window, or the first few when dense
    every: timedelta | None  # the typical gap between occurrences
    dense: bool  # fires more than the caller's per_task in the window


def _upcoming(
    task: Task, window: timedelta, end: datetime, per_task: int, check: Callable[[], None]
) -> Upcoming:
    """A schedule's occurrences until `end`. Three of them tell how often it fires: one that
    would fire more than `per_task` times is not enumerated further (a cron every minute
    would cost 1,440 steps of the engine for one row of a page)."""
    assert task.next_run_at is not None
    schedule = schedule_of(task)
    first = _aware(task.next_run_at)
    fires = [first, *occurrences_between(schedule, first + _TICK, end, 2, check)]
    every = (fires[-1] - first) / (len(fires) - 1) if len(fires) > 1 else None
    if every is not None and every * per_task < window:
        return Upcoming(task, fires, every, dense=True)
    if len(fires) == 3:
        fires += occurrences_between(schedule, fires[-1] + _TICK, end, per_task - 2, check)
        every = (fires[-1] - first) / (len(fires) - 1)
    return Upcoming(task, fires[:per_task], every, dense=len(fires) > per_task)


_TICK = timedelta(microseconds=1)


def _aware(value: datetime) -> datetime:
    """SQLite gives stored instants back without their zone: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
