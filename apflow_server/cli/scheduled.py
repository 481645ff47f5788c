"""`apflow tasks scheduled ...`: the schedules of tasks: list, due, init, complete, preview,
and the operator's controls: pause, resume, skip."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from apflow_server.core.types import ScheduleType
from apflow_server.service import Service
from apflow_server.storage.models import Task
from apflow_server.storage.repository import MAX_PAGE

from . import output
from .options import (
    choice_of,
    format_option,
    given_values,
    page_options,
    schedule_definition_options,
    task_status_filter,
    user_id_filter,
)
from .params import INSTANT, JSON_ANY
from .runtime import OPERATOR, run_with_service

PREVIEW_FIELDS = (
    "schedule_type",
    "schedule_expression",
    "schedule_timezone",
    "schedule_start_at",
    "schedule_end_at",
    "max_runs",
)


@click.group("scheduled")
def scheduled_group() -> None:
    """Scheduled tasks: what is due, when it fires next, and reporting external runs."""


@scheduled_group.command("list")
@click.option("--all", "include_disabled", is_flag=True, help="Include disabled schedules.")
@user_id_filter
@click.option(
    "--type", "schedule_type", type=choice_of(ScheduleType), help="Only schedules of this type."
)
@task_status_filter
@page_options()
@format_option
def list_scheduled(
    include_disabled: bool,
    user_id: str | None,
    schedule_type: str | None,
    status: str | None,
    limit: int,
    offset: int,
    output_format: str,
) -> None:
    """List tasks with a schedule, soonest next run first (enabled ones unless --all)."""

    async def work(service: Service) -> Any:
        return await service.schedules.list_scheduled(
            None,
            enabled_only=not include_disabled,
            user_id=user_id,
            schedule_type=schedule_type,
            status=status,
            limit=limit,
            offset=offset,
        )

    output.show_page(
        run_with_service(work),
        output_format,
        limit=limit,
        offset=offset,
        empty="No scheduled tasks found.",
    )


@scheduled_group.command("due")
@click.option(
    "--before", type=INSTANT, help="Due by this instant (e.g. 2025-03-06T09:00:00Z); default now."
)
@user_id_filter
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE),
    default=50,
    show_default=True,
    help="Show at most this many.",
)
@format_option
def due(before: datetime | None, user_id: str | None, limit: int, output_format: str) -> None:
    """Enabled schedules whose next run is due and that are not running, oldest first."""

    async def work(service: Service) -> list[Task]:
        return await service.schedules.due(None, before=before, user_id=user_id, limit=limit)

    output.show_tasks(run_with_service(work), output_format, empty="No task is due.")


@scheduled_group.command("init")
@click.argument("task_id")
@click.option(
    "--from-time", type=INSTANT, help="Compute the next run after this instant (default: now)."
)
@format_option
def init(task_id: str, from_time: datetime | None, output_format: str) -> None:
    """Recompute a task's next_run_at on its schedule."""

    async def work(service: Service) -> Task:
        return await service.schedules.init(None, task_id, from_time=from_time)

    task = run_with_service(work)
    if task.next_run_at is None:
        headline = f"Task {output.describe(task)} has no next run; its schedule is now disabled"
    else:
        headline = f"Next run of task {output.describe(task)}: {output.instant(task.next_run_at)}"
    output.show_task_row(task, output_format, headline)


@scheduled_group.command("pause")
@click.argument("task_id")
@click.option("--note", help="Why, shown on the task (default: who paused it).")
@click.option(
    "--until",
    help="Resume by itself at this ISO 8601 datetime (no offset: in the schedule's zone).",
)
@format_option
def pause(task_id: str, note: str | None, until: str | None, output_format: str) -> None:
    """Pause a schedule: each occurrence that falls due while paused is recorded skipped
    (reason paused) instead of running; `resume` (or --until) ends the pause."""

    async def work(service: Service) -> Task:
        return await service.schedules.pause(OPERATOR, task_id, note=note, until=until)

    task = run_with_service(work)
    ends = (
        f" until {output.instant(task.schedule_paused_until)}" if task.schedule_paused_until else ""
    )
    headline = f"Paused task {output.describe(task)}{ends}: {task.schedule_pause_note}"
    output.show_task_row(task, output_format, headline)


@scheduled_group.command("resume")
@click.argument("task_id")
@click.option("--note", help="Why (written to the service's log).")
@format_option
def resume(task_id: str, note: str | None, output_format: str) -> None:
    """Resume a paused schedule: its next occurrence runs."""

    async def work(service: Service) -> Task:
        return await service.schedules.resume(OPERATOR, task_id, note=note)

    task = run_with_service(work)
    following = output.instant(task.next_run_at) if task.next_run_at else "none"
    headline = f"Resumed task {output.describe(task)}; next run: {following}"
    output.show_task_row(task, output_format, headline)


@scheduled_group.command("skip")
@click.argument("task_id")
@click.option(
    "--count",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="How many of the next occurrences to skip.",
)
@format_option
def skip(task_id: str, count: int, output_format: str) -> None:
    """Skip the next occurrences of a schedule: each is recorded skipped when it falls due."""

    async def work(service: Service) -> Task:
        return await service.schedules.skip(OPERATOR, task_id, count=count)

    task = run_with_service(work)
    headline = (
        f"Task {output.describe(task)} skips its next {task.schedule_skip_count} occurrence(s)"
    )
    output.show_task_row(task, output_format, headline)


@scheduled_group.command("backfill")
@click.argument("task_id")
@click.option("--start", help="ISO 8601 start, inclusive (no offset: the schedule's zone).")
@click.option("--end", help="ISO 8601 end, exclusive, not in the future.")
@click.option("--dry-run", is_flag=True, help="Only show what would be queued.")
@click.option(
    "--reprocess",
    type=click.Choice(["none", "failed", "all"]),
    default="none",
    show_default=True,
    help="Occurrences with an outcome: leave them, or run the failed ones (or all) again.",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="How many of its runs may run at once.",
)
@click.option(
    "--order",
    type=click.Choice(["oldest_first", "newest_first"]),
    default="oldest_first",
    show_default=True,
)
@click.option("--cancel", "cancel_id", metavar="BACKFILL_ID", help="Cancel this backfill instead.")
@format_option
def backfill(
    task_id: str,
    start: str | None,
    end: str | None,
    dry_run: bool,
    reprocess: str,
    max_concurrent: int,
    order: str,
    cancel_id: str | None,
    output_format: str,
) -> None:
    """Run a schedule's occurrences of a past period, each once with its own scheduled_for
    (running schedulers take them; trigger backfill in the run history)."""
    if cancel_id is None and (start is None or end is None):
        raise click.UsageError("--start and --end are required (or --cancel BACKFILL_ID)")

    async def work(service: Service) -> dict[str, Any]:
        if cancel_id is not None:
            return await service.schedules.cancel_backfill(OPERATOR, cancel_id)
        return await service.schedules.backfill(
            OPERATOR,
            task_id,
            start=start,
            end=end,
            dry_run=dry_run,
            reprocess=reprocess,
            max_concurrent=max_concurrent,
            order=order,
        )

    answer = run_with_service(work)
    if output_format == "json":
        output.print_json(answer)
        return
    if cancel_id is not None:
        output.line(f"Backfill {answer['id']} is {answer['status']}.")
        return
    total = len(answer["occurrences"])
    if answer["dry_run"]:
        output.line(
            f"Would queue {answer['queued']} of {total} occurrence(s) of task {task_id} "
            f"({answer['already_done']} already done)."
        )
        return
    output.line(
        f"Backfill {answer['backfill_id']}: queued {answer['queued']} of {total} "
        f"occurrence(s) of task {task_id} ({answer['already_done']} already done); a running "
        f"scheduler runs them. Follow them with `apflow tasks runs {task_id}`."
    )


@scheduled_group.command("complete")
@click.argument("task_id")
@click.option(
    "--success/--failure", default=True, show_default=True, help="How the external run ended."
)
@click.option("--error", help="What went wrong (with --failure).")
@click.option("--result", type=JSON_ANY, help="The run's result, as JSON.")
@click.option(
    "--no-next-run", is_flag=True, help="Do not move the schedule on to its next occurrence."
)
@format_option
def complete(
    task_id: str,
    success: bool,
    error: str | None,
    result: Any,
    no_next_run: bool,
    output_format: str,
) -> None:
    """Record the outcome of a run an external scheduler performed, and move the schedule on."""

    async def work(service: Service) -> Task:
        return await service.schedules.complete(
            None,
            task_id,
            success=success,
            error=error,
            result=result,
            calculate_next_run=not no_next_run,
        )

    task = run_with_service(work)
    outcome = "a successful" if success else "a failed"
    next_run = output.instant(task.next_run_at) if task.next_run_at else "none"
    output.show_task_row(
        task,
        output_format,
        f"Recorded {outcome} run of task {output.describe(task)}; next run: {next_run}",
    )


@scheduled_group.command("preview")
@click.argument("task_id", required=False)
@click.option(
    "--count",
    type=click.IntRange(1, MAX_PAGE),
    default=10,
    show_default=True,
    help="How many fire times.",
)
@click.option("--after", type=INSTANT, help="Fire times after this instant (default: now).")
@schedule_definition_options
@format_option
@click.pass_context
def preview(
    ctx: click.Context,
    /,
    task_id: str | None,
    count: int,
    after: datetime | None,
    output_format: str,
    **_: Any,
) -> None:
    """The next fire times of a stored task's schedule, or of a schedule given by the
    --schedule-* options (nothing is saved), in UTC and in the schedule's zone."""
    fields = given_values(ctx, PREVIEW_FIELDS)
    if task_id is not None and fields:
        raise click.UsageError("give a TASK_ID or --schedule-* options, not both")
    if task_id is None and not fields:
        raise click.UsageError(
            "give a TASK_ID, or --schedule-type and --schedule-expression to preview"
        )

    async def work(
        service: Service,
    ) -> tuple[list[datetime], list[str | None], str, str, str]:
        if task_id is not None:
            task = await service.tasks.get(OPERATOR, task_id)
            times = await service.schedules.preview(
                OPERATOR, task_id=task_id, count=count, after=after
            )
            return (
                times,
                await service.schedules.preview_holds(OPERATOR, task_id, times),
                task.schedule_type or "",
                task.schedule_expression or "",
                task.schedule_timezone,
            )
        times = await service.schedules.preview(OPERATOR, count=count, after=after, **fields)
        zone = fields.get("schedule_timezone") or service.settings.default_timezone
        holds: list[str | None] = [None] * len(times)
        return times, holds, fields["schedule_type"], fields["schedule_expression"], zone

    times, holds, schedule_type, expression, zone = run_with_service(work)
    output.show_preview(
        times,
        output_format,
        holds=holds,
        task_id=task_id,
        schedule_type=schedule_type,
        expression=expression,
        zone=zone,
    )
