"""Rendering for every command: rich tables for people, JSON on stdout for programs.

JSON shapes, one per kind of result:
- one task: the task object (`task_to_dict`);
- a list of tasks or runs: `{"items": [...], "total": N}` (paged listings add `limit` and
  `offset`; `total` counts every match, not only this page);
- a tree: the root task object with a `children` list, recursively;
- a preview: `{"task_id", "schedule_type", "schedule_expression", "schedule_timezone",
  "fire_times": [{"utc": ..., "local": ...}]}`;
- a finished run (`tasks execute`, `scheduler trigger --wait`): the run object plus `tasks`;
- scheduler status: `{"daemon": {...}, "instances": [...]}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from apflow_server.storage.models import (
    SchedulerInstance,
    Task,
    TaskRun,
    run_to_dict,
    task_to_dict,
)
from apflow_server.storage.repository import Page, TaskNode

# Piped output is not cut at 80 columns: ids must stay whole and copyable.
PIPE_WIDTH = 200


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr), created per use so redirection works."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=False, soft_wrap=False, width=PIPE_WIDTH)
    return out


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def line(message: str) -> None:
    """A plain line on stdout (no markup, no wrapping), e.g. an id to copy."""
    click.echo(message)


# ---------------------------------------------------------------------- values


def instant(value: datetime | None) -> str:
    """A UTC instant for a table: `2025-03-06 09:00:00Z`."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def local_instant(value: datetime, zone: str) -> str:
    """The wall-clock time of `value` in `zone`: `2025-03-30 03:30:00 CEST (+02:00)`."""
    local = value.astimezone(ZoneInfo(zone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()} ({offset[:3]}:{offset[3:]})"


def schedule_text(task: Task) -> str:
    if task.schedule_type is None:
        return "-"
    text = f"{task.schedule_type} {task.schedule_expression or ''}".strip()
    text += f" {task.schedule_timezone}"
    if not task.schedule_enabled:
        return f"{text} (disabled)"
    if task.schedule_paused:
        return f"{text} (paused)"
    if task.schedule_skip_count:
        return f"{text} (skips {task.schedule_skip_count})"
    return text


def runs_text(task: Task) -> str:
    return f"{task.run_count}/{task.max_runs}" if task.max_runs is not None else str(task.run_count)


def cell(value: Any) -> Text:
    """A table cell shown literally (a name like `[red]` is not rich markup)."""
    if value is None:
        return Text("-")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, ensure_ascii=False))
    return Text(str(value))


def describe(task: Task) -> str:
    return f"{task.id} ({task.name})"


# ---------------------------------------------------------------------- tasks


def task_table(tasks: Iterable[Task]) -> Table:
    table = Table()
    table.add_column("ID", no_wrap=True)
    table.add_column("Name")
    table.add_column("Status", no_wrap=True)
    table.add_column("Schedule")
    table.add_column("Next run (UTC)", no_wrap=True)
    table.add_column("Runs", justify="right", no_wrap=True)
    table.add_column("User")
    for task in tasks:
        table.add_row(
            cell(task.id),
            cell(task.name),
            cell(task.status),
            cell(schedule_text(task)),
            cell(instant(task.next_run_at)),
            cell(runs_text(task)),
            cell(task.user_id),
        )
    return table


def show_task(task: Task, output_format: str, headline: str | None = None) -> None:
    """One task: every field in table mode (after an optional headline)."""
    if output_format == "json":
        print_json(task_to_dict(task))
        return
    if headline:
        line(headline)
    table = Table(show_header=False)
    table.add_column("Field", style="bold", no_wrap=True)
    table.add_column("Value")
    for name, value in task_to_dict(task).items():
        table.add_row(name, cell(value))
    console().print(table)


def show_task_row(task: Task, output_format: str, headline: str) -> None:
    """One task after a change: the headline and its one-row summary."""
    if output_format == "json":
        print_json(task_to_dict(task))
        return
    line(headline)
    console().print(task_table([task]))


def page_footer(shown: int, total: int, offset: int) -> str:
    """Where a page sits in the whole: "21-40 of 57"."""
    if shown == 0:
        return f"Nothing on this page ({total} in all)." if total else ""
    return f"{offset + 1}-{offset + shown} of {total}"


def show_tasks(
    tasks: Sequence[Task],
    output_format: str,
    *,
    total: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    empty: str = "No tasks found.",
) -> None:
    """A list of tasks; `limit` given means a paged listing."""
    total = len(tasks) if total is None else total
    if output_format == "json":
        data: dict[str, Any] = {"items": [task_to_dict(t) for t in tasks], "total": total}
        if limit is not None:
            data.update(limit=limit, offset=offset)
        print_json(data)
        return
    if not total:
        line(empty)
        return
    out = console()
    out.print(task_table(tasks))
    if limit is not None:
        out.print(page_footer(len(tasks), total, offset))


def show_page(page: Page, output_format: str, *, limit: int, offset: int, empty: str) -> None:
    show_tasks(page.items, output_format, total=page.total, limit=limit, offset=offset, empty=empty)


def _tree_label(task: Task) -> Text:
    label = Text()
    label.append(task.name, style="bold")
    label.append(f"  {task.id}  [{task.status}]")
    if task.schedule_type is not None:
        label.append(f"  {schedule_text(task)}, next {instant(task.next_run_at)}")
    return label


def show_tree(node: TaskNode, output_format: str) -> None:
    if output_format == "json":
        print_json(node.to_dict())
        return

    def add(branch: Tree, child: TaskNode) -> None:
        sub = branch.add(_tree_label(child.task))
        for grandchild in child.children:
            add(sub, grandchild)

    tree = Tree(_tree_label(node.task))
    for child in node.children:
        add(tree, child)
    console().print(tree)


# ---------------------------------------------------------------------- runs


def show_runs(page: Page, output_format: str, *, limit: int, offset: int) -> None:
    runs: list[TaskRun] = page.items
    if output_format == "json":
        print_json(
            {
                "items": [run_to_dict(run) for run in runs],
                "total": page.total,
                "limit": limit,
                "offset": offset,
            }
        )
        return
    if not page.total:
        line("No runs found.")
        return
    table = Table()
    table.add_column("Run ID", no_wrap=True)
    table.add_column("Task ID", no_wrap=True)
    table.add_column("Trigger", no_wrap=True)
    table.add_column("Scheduled for", no_wrap=True)
    table.add_column("Started", no_wrap=True)
    table.add_column("Finished", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Attempt", justify="right")
    table.add_column("Error / reason")
    for run in runs:
        table.add_row(
            cell(run.id),
            cell(run.task_id),
            cell(run.trigger),
            cell(instant(run.scheduled_for)),
            cell(instant(run.started_at)),
            cell(instant(run.finished_at)),
            cell(run.status),
            cell(run.attempt),
            cell(run.error or run.reason),
        )
    out = console()
    out.print(table)
    out.print(page_footer(len(runs), page.total, offset))


# ---------------------------------------------------------------------- preview


def show_preview(
    fire_times: Sequence[datetime],
    output_format: str,
    *,
    holds: Sequence[str | None] = (),
    task_id: str | None,
    schedule_type: str,
    expression: str,
    zone: str,
) -> None:
    reasons = list(holds) or [None] * len(fire_times)
    if output_format == "json":
        # JSON-RPC's tasks.scheduled.preview answer (fire_times in UTC, skipped), plus the
        # schedule it describes and each fire time in the schedule's zone.
        local = ZoneInfo(zone)
        answer: dict[str, Any] = {
            "task_id": task_id,
            "schedule_type": schedule_type,
            "schedule_expression": expression,
            "schedule_timezone": zone,
            "fire_times": [when.isoformat() for when in fire_times],
            "local_times": [when.astimezone(local).isoformat() for when in fire_times],
        }
        if task_id is not None:
            answer["skipped"] = [
                {"fire_time": when.isoformat(), "reason": reason}
                for when, reason in zip(fire_times, reasons, strict=True)
                if reason is not None
            ]
        print_json(answer)
        return
    subject = f"task {task_id}: " if task_id else ""
    title = f"{subject}{schedule_type} {expression} ({zone})"
    if not fire_times:
        line(f"{title}: no upcoming fire times.")
        return
    line(title)
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("UTC", no_wrap=True)
    table.add_column(f"Local ({zone})", no_wrap=True)
    held = any(reasons)
    if held:
        table.add_column("Skipped")
    for number, (when, reason) in enumerate(zip(fire_times, reasons, strict=True), start=1):
        row = [str(number), instant(when), local_instant(when, zone)]
        table.add_row(*row, *([reason or ""] if held else []))
    console().print(table)


# ---------------------------------------------------------------------- run outcomes


def _flatten(node: TaskNode) -> list[TaskNode]:
    return [node, *(below for child in node.children for below in _flatten(child))]


def _duration(run: TaskRun) -> str:
    if run.started_at is None or run.finished_at is None:
        return "-"
    return f"{(run.finished_at - run.started_at).total_seconds():.2f} s"


def _outcome_label(task: Task) -> Text:
    label = Text()
    label.append(task.name, style="bold")
    label.append(f"  {task.id}  [{task.status}]")
    if task.error:
        label.append(f"  {' '.join(task.error.split())}")
    return label


def show_run_outcome(run: TaskRun, node: TaskNode, output_format: str) -> None:
    """A finished run: its record, then the status of every task of the tree it ran.

    JSON: the run object plus `tasks`, the tree's tasks depth first, each with id, name,
    parent_id, status, result and error."""
    if output_format == "json":
        tasks = [
            {
                "id": below.task.id,
                "name": below.task.name,
                "parent_id": below.task.parent_id,
                "status": below.task.status,
                "result": below.task.result,
                "error": below.task.error,
            }
            for below in _flatten(node)
        ]
        print_json({**run_to_dict(run), "tasks": tasks})
        return
    line(f"Run {run.id} of task {describe(node.task)}: {run.status}")
    table = Table(show_header=False)
    table.add_column("Field", style="bold", no_wrap=True)
    table.add_column("Value")
    table.add_row("trigger", cell(run.trigger))
    table.add_row("status", cell(run.status))
    table.add_row("attempt", cell(run.attempt))
    table.add_row("started", cell(instant(run.started_at)))
    table.add_row("finished", cell(instant(run.finished_at)))
    table.add_row("duration", cell(_duration(run)))
    table.add_row("result", cell(run.result))
    table.add_row("error", cell(run.error))
    out = console()
    out.print(table)

    def add(branch: Tree, child: TaskNode) -> None:
        sub = branch.add(_outcome_label(child.task))
        for grandchild in child.children:
            add(sub, grandchild)

    tree = Tree(_outcome_label(node.task))
    for child in node.children:
        add(tree, child)
    out.print(tree)


# ---------------------------------------------------------------------- schedulers


def instance_to_dict(instance: SchedulerInstance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "host": instance.host,
        "pid": instance.pid,
        "mode": instance.mode,
        "user_filter": instance.user_filter,
        "state": instance.state,
        "started_at": instance.started_at.isoformat(),
        "heartbeat_at": instance.heartbeat_at.isoformat(),
        "stats": instance.stats,
    }


def _ago(value: datetime, now: datetime) -> str:
    seconds = max(0, int((now - value).total_seconds()))
    return f"{instant(value)} ({seconds}s ago)"


def _stat(instance: SchedulerInstance, name: str) -> Any:
    return (instance.stats or {}).get(name)


def show_scheduler_status(
    daemon: dict[str, Any],
    instances: Sequence[SchedulerInstance],
    output_format: str,
    now: datetime,
) -> None:
    """The local background scheduler and every live scheduler instance in the database.

    JSON: `{"daemon": {"state", "pid", "pid_file", "log_file", "instance_id"}, "instances":
    [...]}` where each instance carries its identity, state, heartbeat and stats."""
    if output_format == "json":
        print_json({"daemon": daemon, "instances": [instance_to_dict(i) for i in instances]})
        return
    state, pid = daemon["state"], daemon["pid"]
    if state == "running":
        identity = f", instance {daemon['instance_id']}" if daemon.get("instance_id") else ""
        line(f"Background scheduler: running (pid {pid}{identity})")
        line(f"  PID file: {daemon['pid_file']}")
        line(f"  log file: {daemon['log_file']}")
    elif state == "stale":
        named = f"names pid {pid}, which is not running" if pid else "holds no pid"
        line(f"Background scheduler: stale (the PID file {daemon['pid_file']} {named})")
        line("  `apflow scheduler stop` or `apflow scheduler start --background` removes it.")
    else:
        line("Background scheduler: not running")
    if not instances:
        line("No live scheduler instance in the database.")
        return
    count = len(instances)
    line(f"Live scheduler instances in the database: {count}")
    table = Table()
    table.add_column("Instance", no_wrap=True)
    table.add_column("Host")
    table.add_column("PID", justify="right")
    table.add_column("Mode")
    table.add_column("User")
    table.add_column("State")
    table.add_column("Started (UTC)", no_wrap=True)
    table.add_column("Last heartbeat", no_wrap=True)
    table.add_column("Executed", justify="right")
    table.add_column("Succeeded", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Active", justify="right")
    for instance in instances:
        table.add_row(
            cell(instance.id),
            cell(instance.host),
            cell(instance.pid),
            cell(instance.mode),
            cell(instance.user_filter or "*"),
            cell(instance.state),
            cell(instant(instance.started_at)),
            cell(_ago(instance.heartbeat_at, now)),
            cell(_stat(instance, "tasks_executed")),
            cell(_stat(instance, "tasks_succeeded")),
            cell(_stat(instance, "tasks_failed")),
            cell(_stat(instance, "active_tasks")),
        )
    console().print(table)
