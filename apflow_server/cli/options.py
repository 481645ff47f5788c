"""Option decorators shared by several commands, and reading back which options were given."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from apflow_server.core.types import (
    CalendarRule,
    MisfirePolicy,
    OverlapPolicy,
    RunStatus,
    ScheduleMode,
    ScheduleType,
    TaskStatus,
)
from apflow_server.storage.repository import MAX_PAGE

from .params import CLEAR, JSON_LIST, JSON_OBJECT, AliasedChoice, Clearable

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "json")


def compose(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """Apply `decorators` as if stacked in this order above a function."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def choice_of(values: Iterable[str]) -> click.Choice[str]:
    return click.Choice([str(value) for value in values], case_sensitive=False)


format_option = click.option(
    "-f",
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table: rich tables for people; json: machine-readable JSON on stdout.",
)


def page_options(default_limit: int = 50) -> Callable[[F], F]:
    return compose(
        click.option(
            "--limit",
            type=click.IntRange(1, MAX_PAGE),
            default=default_limit,
            show_default=True,
            help="Show at most this many.",
        ),
        click.option(
            "--offset",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Skip this many first.",
        ),
    )


user_id_filter = click.option("--user-id", help="Only tasks of this owner.")
task_status_filter = click.option(
    "--status",
    type=AliasedChoice([str(value) for value in TaskStatus], {"running": "in_progress"}),
    help="Only tasks in this status (`running` is in_progress).",
)
run_status_filter = click.option(
    "--status", type=choice_of(RunStatus), help="Only runs in this status."
)

# ---------------------------------------------------------------------- task fields

inputs_option = click.option("--inputs", type=JSON_OBJECT, help="Inputs as a JSON object.")
params_option = click.option("--params", type=JSON_OBJECT, help="Executor params as a JSON object.")
schemas_option = click.option("--schemas", type=JSON_OBJECT, help="Schemas as a JSON object.")
executor_option = click.option(
    "--executor", help="The executor's name (sets params.executor_id, keeping the other params)."
)
priority_option = click.option(
    "--priority", type=click.IntRange(0, 3), help="0 (urgent) ... 3 (low); default 2."
)
dependencies_option = click.option(
    "--dependencies",
    type=JSON_LIST,
    help='Sibling tasks to wait for, as a JSON list: [{"id": "...", "required": true}].',
)

# ---------------------------------------------------------------------- schedules

_CLEARS = " (`none` clears it)"

schedule_definition_options: Callable[[F], F] = compose(
    click.option(
        "--schedule-type",
        type=Clearable(choice_of(ScheduleType)),
        help="The kind of schedule" + _CLEARS + ".",
    ),
    click.option(
        "--schedule-expression",
        type=Clearable(click.STRING),
        help="E.g. 09:00 (daily), '1-5 09:00' (weekly), '0 9 * * 1-5' (cron), 3600 (interval).",
    ),
    click.option(
        "--schedule-timezone",
        help="IANA zone the wall-clock times are read in, e.g. Europe/Berlin.",
    ),
    click.option(
        "--schedule-start-at",
        type=Clearable(click.STRING),
        help="ISO 8601 datetime before which nothing fires (no offset: in the schedule's zone)"
        + _CLEARS
        + ".",
    ),
    click.option(
        "--schedule-end-at",
        type=Clearable(click.STRING),
        help="ISO 8601 datetime after which nothing fires" + _CLEARS + ".",
    ),
    click.option(
        "--max-runs",
        type=Clearable(click.INT),
        help="Disable the schedule after this many runs" + _CLEARS + ".",
    ),
)

schedule_options: Callable[[F], F] = compose(
    schedule_definition_options,
    click.option(
        "--schedule-enabled/--schedule-disabled",
        default=None,
        help="Turn the schedule on (computes next_run_at) or off.",
    ),
    click.option(
        "--schedule-misfire",
        type=choice_of(MisfirePolicy),
        help="What to do with occurrences missed while down (default run_once).",
    ),
    click.option(
        "--schedule-overlap",
        type=choice_of(OverlapPolicy),
        help="What to do when an occurrence comes while the last run still runs (default skip).",
    ),
    click.option(
        "--schedule-jitter-seconds",
        type=click.INT,
        help="Delay each occurrence by a fixed pseudo-random 0..N seconds.",
    ),
    click.option(
        "--pause-after-failures",
        type=Clearable(click.INT),
        help="Pause the schedule after this many failed runs in a row" + _CLEARS + ".",
    ),
    click.option(
        "--schedule-mode",
        type=choice_of(ScheduleMode),
        help="internal (default): fired here; external: an outside scheduler calls the webhook "
        "and a missing call is recorded missed (trigger.overdue).",
    ),
    click.option(
        "--trigger-grace-seconds",
        type=Clearable(click.INT),
        help="external: how late the call may arrive (default 300)" + _CLEARS + ".",
    ),
    click.option(
        "--schedule-calendar",
        type=Clearable(click.STRING),
        help="Follow this business calendar (apflow calendars create)" + _CLEARS + ".",
    ),
    click.option(
        "--schedule-calendar-rule",
        type=Clearable(choice_of(CalendarRule)),
        help="An occurrence on a closed day: skip (default; recorded skipped), "
        "next_business_day or previous_business_day" + _CLEARS + ".",
    ),
    click.option(
        "--alert-late-after-seconds",
        type=Clearable(click.INT),
        help="run.late when a run starts this much after its occurrence" + _CLEARS + ".",
    ),
    click.option(
        "--alert-max-duration-seconds",
        type=Clearable(click.INT),
        help="run.too_long when a run runs longer than this" + _CLEARS + ".",
    ),
)


# ---------------------------------------------------------------------- reading them back


def given(ctx: click.Context, names: Iterable[str]) -> list[str]:
    """The parameters among `names` that were given on the command line."""
    return [name for name in names if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]


def given_values(ctx: click.Context, names: Iterable[str]) -> dict[str, Any]:
    """The values of the given parameters among `names`; `none` becomes null."""
    return {
        name: None if ctx.params[name] is CLEAR else ctx.params[name] for name in given(ctx, names)
    }


def flag_of(ctx: click.Context, name: str) -> str:
    """How a parameter is spelt on the command line (its long option)."""
    for param in ctx.command.params:
        if param.name == name:
            options = [opt for opt in param.opts if opt.startswith("--")] or param.opts
            return max(options, key=len) if isinstance(param, click.Option) else name.upper()
    return name
