"""`apflow tasks ...`: create, read, change and delete tasks and trees, and their run history."""

from __future__ import annotations

from typing import Any

import click

from apflow_server.core.task_fields import WRITABLE_ON_CREATE
from apflow_server.service import Service
from apflow_server.storage.models import Task, TaskRun
from apflow_server.storage.repository import TaskNode

from . import output
from .options import (
    dependencies_option,
    executor_option,
    flag_of,
    format_option,
    given,
    given_values,
    inputs_option,
    page_options,
    params_option,
    priority_option,
    run_status_filter,
    schedule_options,
    schemas_option,
    task_status_filter,
    user_id_filter,
)
from .params import TaskFile
from .runs import execute_here, report_run
from .runtime import OPERATOR, run_with_service
from .scheduled import scheduled_group

# Options that set a task field, by parameter name: every field a create may write (the one
# list, in core/task_fields.py), with `id` taken as --id (parameter new_id) and `executor`
# folded into params.
FIELD_PARAMS = (*sorted(WRITABLE_ON_CREATE - {"id"}), "new_id", "executor")


@click.group("tasks")
def tasks_group() -> None:
    """Create, inspect, change and delete tasks."""


tasks_group.add_command(scheduled_group)


def _fields(ctx: click.Context) -> tuple[dict[str, Any], str | None]:
    """The task fields given on the command line, and the --executor when given."""
    fields = given_values(ctx, [name for name in FIELD_PARAMS if name in ctx.params])
    if "new_id" in fields:
        fields["id"] = fields.pop("new_id")
    executor = fields.pop("executor", None)
    return fields, executor


def _with_executor(params: dict[str, Any] | None, executor: str) -> dict[str, Any]:
    return {**(params or {}), "executor_id": executor}


# ---------------------------------------------------------------------- create


@tasks_group.command("create")
@click.option("--name", help="The task's name (1-200 characters).")
@inputs_option
@params_option
@schemas_option
@executor_option
@click.option("--user-id", help="The owner.")
@priority_option
@click.option("--parent-id", help="Create the task under this parent.")
@dependencies_option
@click.option("--id", "new_id", help="Use this id instead of a generated uuid.")
@click.option(
    "--file",
    "tree_file",
    type=TaskFile(),
    help="Create a tree from a JSON file (`-` = stdin): a list of task objects whose "
    "parent_id and dependencies may name each other by id or name, or one task object.",
)
@schedule_options
@format_option
@click.pass_context
def create(
    ctx: click.Context, /, tree_file: list[dict[str, Any]] | None, output_format: str, **_: Any
) -> None:
    """Create a task, or a whole tree with --file (validated in full before anything is
    written)."""
    fields, executor = _fields(ctx)
    if tree_file is not None:
        mixed = given(ctx, FIELD_PARAMS)
        if mixed:
            flags = ", ".join(flag_of(ctx, name) for name in mixed)
            raise click.UsageError(f"--file: cannot be combined with {flags}")
        specs = tree_file
    else:
        if "name" not in fields:
            raise click.UsageError("Missing option '--name' (or give a tree with --file).")
        if executor is not None:
            fields["params"] = _with_executor(fields.get("params"), executor)
        specs = [fields]

    async def work(service: Service) -> list[Task]:
        return await service.tasks.create(OPERATOR, specs, batch=tree_file is not None)

    tasks = run_with_service(work)
    if output_format == "json":
        if tree_file is None:
            output.show_task(tasks[0], "json")
        else:
            output.show_tasks(tasks, "json")
        return
    for task in tasks:
        output.line(f"Created task {output.describe(task)}")
        if task.next_run_at is not None:
            output.line(f"  next run: {output.instant(task.next_run_at)}")


# ---------------------------------------------------------------------- read


@tasks_group.command("get")
@click.argument("task_id")
@format_option
def get(task_id: str, output_format: str) -> None:
    """Show one task, every field."""

    async def work(service: Service) -> Task:
        return await service.tasks.get(OPERATOR, task_id)

    output.show_task(run_with_service(work), output_format)


@tasks_group.command("list")
@user_id_filter
@task_status_filter
@click.option("--parent-id", help="Only the children of this task.")
@click.option("--roots-only", is_flag=True, help="Only root tasks (no parent).")
@page_options()
@format_option
def list_tasks(
    user_id: str | None,
    status: str | None,
    parent_id: str | None,
    roots_only: bool,
    limit: int,
    offset: int,
    output_format: str,
) -> None:
    """List tasks, oldest first."""

    async def work(service: Service) -> Any:
        return await service.tasks.list_tasks(
            OPERATOR,
            user_id=user_id,
            status=status,
            parent_id=parent_id,
            roots_only=roots_only,
            limit=limit,
            offset=offset,
        )

    output.show_page(
        run_with_service(work),
        output_format,
        limit=limit,
        offset=offset,
        empty="No tasks found.",
    )


@tasks_group.command("tree")
@click.argument("task_id")
@format_option
def tree(task_id: str, output_format: str) -> None:
    """Show the whole tree a task belongs to, from its root."""

    async def work(service: Service) -> TaskNode:
        return await service.tasks.tree(OPERATOR, task_id)

    output.show_tree(run_with_service(work), output_format)


@tasks_group.command("runs")
@click.argument("task_id", required=False)
@user_id_filter
@run_status_filter
@page_options()
@format_option
def runs(
    task_id: str | None,
    user_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
    output_format: str,
) -> None:
    """The run history, newest first: of one task, or of all tasks."""

    async def work(service: Service) -> Any:
        return await service.runs.list_runs(
            OPERATOR, task_id=task_id, user_id=user_id, status=status, limit=limit, offset=offset
        )

    output.show_runs(run_with_service(work), output_format, limit=limit, offset=offset)


# ---------------------------------------------------------------------- update


@tasks_group.command("update")
@click.argument("task_id")
@click.option("--name", help="A new name.")
@inputs_option
@params_option
@schemas_option
@executor_option
@click.option("--user-id", help="A new owner (root tasks only; the whole tree follows).")
@priority_option
@dependencies_option
@schedule_options
@format_option
@click.pass_context
def update(ctx: click.Context, /, task_id: str, output_format: str, **_: Any) -> None:
    """Change a task: only the options given are changed. An enabled schedule gets its
    next_run_at at once."""
    fields, executor = _fields(ctx)
    if not fields and executor is None:
        raise click.UsageError(
            "nothing to change: give at least one option, e.g. --name or --schedule-enabled"
        )

    async def work(service: Service) -> Task:
        if executor is not None:
            params = fields.get("params")
            if params is None:
                params = (await service.tasks.get(OPERATOR, task_id)).params
            fields["params"] = _with_executor(params, executor)
        return await service.tasks.update(OPERATOR, task_id, fields)

    task = run_with_service(work)
    output.show_task_row(task, output_format, f"Updated task {output.describe(task)}")


# ---------------------------------------------------------------------- delete


def _subtree(node: TaskNode, task_id: str) -> TaskNode | None:
    if node.task.id == task_id:
        return node
    for child in node.children:
        found = _subtree(child, task_id)
        if found is not None:
            return found
    return None


def _flatten(node: TaskNode) -> list[Task]:
    return [node.task, *(task for child in node.children for task in _flatten(child))]


@tasks_group.command("delete")
@click.argument("task_id")
@format_option
def delete(task_id: str, output_format: str) -> None:
    """Delete a task with all its descendants and their run history."""

    async def work(service: Service) -> tuple[list[str], dict[str, str]]:
        root = await service.tasks.tree(OPERATOR, task_id)
        doomed = _subtree(root, task_id)
        names = {task.id: task.name for task in _flatten(doomed)} if doomed else {}
        return await service.tasks.delete(OPERATOR, task_id), names

    deleted, names = run_with_service(work)
    ordered = [task_id, *(other for other in deleted if other != task_id)]
    if output_format == "json":
        output.print_json({"deleted": ordered})
        return
    others = len(ordered) - 1
    suffix = f" and {others} descendant{'s' if others != 1 else ''}" if others else ""
    output.line(f"Deleted task {task_id} ({names.get(task_id, '?')}){suffix}")
    for other in ordered[1:]:
        output.line(f"  {other} ({names.get(other, '?')})")


# ---------------------------------------------------------------------- run now, cancel


@tasks_group.command("execute")
@click.argument("task_id")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=3600,
    show_default=True,
    help="Longest the run may take, in seconds; then it is cancelled and recorded as timeout.",
)
@format_option
def execute(task_id: str, timeout: float, output_format: str) -> None:
    """Run a task and its subtree now, in this process (no scheduler needed), and show the
    outcome of every task. Exits 1 unless the run completes; refused while the task runs."""

    async def work(service: Service) -> tuple[TaskRun, TaskNode]:
        return await execute_here(service, task_id, timeout)

    run, node = run_with_service(work)
    report_run(run, node, output_format)


@tasks_group.command("cancel")
@click.argument("task_id")
@format_option
def cancel(task_id: str, output_format: str) -> None:
    """Cancel the task's running run, wherever it runs: it is recorded as cancelled at once,
    and the process running it stops it at its next lease renewal."""

    async def work(service: Service) -> tuple[Task, bool, float]:
        task = await service.tasks.get(OPERATOR, task_id)
        cancelled = await service.runs.cancel(OPERATOR, task_id)
        return task, cancelled, service.settings.lease_seconds / 3

    task, cancelled, renewal = run_with_service(work)
    run_id = task.current_run_id if cancelled else None
    if output_format == "json":
        output.print_json({"task_id": task.id, "cancelled": cancelled, "run_id": run_id})
        return
    if cancelled:
        output.line(
            f"Cancelled run {run_id} of task {output.describe(task)}; the process running it "
            f"stops it at its next lease renewal (within about {renewal:.0f} s)."
        )
    else:
        output.line(
            f"Task {output.describe(task)} is not running (status {task.status}); "
            "nothing to cancel."
        )
