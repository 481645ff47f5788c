"""`apflow scheduler webhook-url|cron-line|k8s-cronjob ID`: hand a task's schedule to an
external scheduler that fires it through the webhook route.

Each reads the task, converts its schedule (apflow_server.schedules.to_cron: refused, one line
and exit 1, when cron cannot express it exactly) and prints something ready to install:
the URL, a crontab entry, a CronJob manifest. What the output cannot carry (schedule bounds,
max_runs, the internal scheduler still firing an enabled schedule) is said in comment lines
(`#`) that crontab and YAML ignore, or under `notes` in JSON.

A schedule cron cannot express (one under a business calendar, monthly `L`) can still be
handed over a period at a time: `--expand-until DAY` lists its occurrences up to that day as
cron lines (Kubernetes: a List of CronJobs), each job guarded to do nothing outside the period.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click
import yaml

from apflow_server.config import Settings
from apflow_server.core.clock import iso_utc
from apflow_server.core.errors import ApflowError
from apflow_server.core.types import ScheduleType
from apflow_server.exports.kubernetes import (
    DEFAULT_IMAGE,
    DEFAULT_SIGNING_IMAGE,
    generate_expanded_kubernetes_cronjobs,
    generate_kubernetes_cronjob,
)
from apflow_server.exports.triggers import (
    DEFAULT_SECRET_ENV,
    generate_cron_config,
    generate_expanded_cron_config,
    generate_webhook_url,
)
from apflow_server.schedules.plan import DEFAULT_TRIGGER_GRACE_SECONDS, Timetable
from apflow_server.schedules.timezones import resolve_local
from apflow_server.schedules.to_cron import BoundedCron, expand_to_cron
from apflow_server.service import Service
from apflow_server.storage.models import Task

from . import output
from .options import format_option
from .runtime import OPERATOR, run_with_service
from .scheduler import scheduler_group

# The webhook URL and the crontab line may well run on the server's own host; a Kubernetes
# pod never does (its 127.0.0.1 is the pod itself), so k8s-cronjob has no such fallback.
LOCAL_BASE_URL = "http://127.0.0.1:8000"

base_url_option = click.option(
    "--base-url",
    help="Where the apflow server is reached from the external scheduler "
    f"(default: APFLOW_PUBLIC_URL, else {LOCAL_BASE_URL}).",
)


def base_url_of(given: str | None, settings: Settings) -> str:
    """--base-url, else APFLOW_PUBLIC_URL, else the local default."""
    return given or settings.public_url or LOCAL_BASE_URL


def _load_task(task_id: str) -> tuple[Task, Timetable | None]:
    async def work(service: Service) -> tuple[Task, Timetable | None]:
        return await service.schedules.timetable(OPERATOR, task_id)

    return run_with_service(work)


def _require_schedule(task: Task, schedule: Timetable | None) -> Timetable:
    if schedule is None or not task.schedule_expression:
        raise ApflowError(
            f"task {task.id!r} has no schedule to convert; set one with `apflow tasks update "
            f"{task.id} --schedule-type ... --schedule-expression ...`"
        )
    return schedule


def _schedule_of(task: Task, schedule: Timetable | None) -> tuple[str, str]:
    _require_schedule(task, schedule)
    assert task.schedule_type is not None and task.schedule_expression is not None
    if task.schedule_calendar is not None:
        raise ApflowError(
            f"task {task.id!r} follows the business calendar {task.schedule_calendar!r}, "
            "which cron cannot express (it knows no holidays); pass --expand-until DATE for "
            "lines that fire its occurrences up to that day, let the internal scheduler fire "
            "it, or subscribe to its calendar feed"
        )
    return task.schedule_type, task.schedule_expression


expand_from_option = click.option(
    "--expand-from",
    type=click.DateTime(["%Y-%m-%d"]),
    help="With --expand-until: the first day, in the task's zone (default: now).",
)
expand_until_option = click.option(
    "--expand-until",
    type=click.DateTime(["%Y-%m-%d"]),
    help="List the occurrences up to the end of this day (in the task's zone, at most a year "
    "ahead) as cron lines guarded to that period: for a schedule cron cannot express, such "
    "as one under a business calendar.",
)


def _expanded(
    task: Task, schedule: Timetable | None, start: datetime | None, until: datetime | None
) -> BoundedCron | None:
    """The bounded expansion the options ask for, or None (no --expand-until)."""
    if until is None:
        if start is not None:
            raise click.UsageError("--expand-from: only with --expand-until")
        return None
    schedule = _require_schedule(task, schedule)
    zone = schedule.zone
    first = datetime.now(UTC) if start is None else _midnight(start.date(), zone)
    return expand_to_cron(schedule, first, _midnight(until.date() + timedelta(days=1), zone))


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return resolve_local(datetime.combine(day, time()), zone).first


def _expansion_notes(expanded: BoundedCron) -> list[str]:
    first, end = expanded.start.astimezone(expanded.zone), expanded.end.astimezone(expanded.zone)
    return [
        f"{expanded.fires} occurrences from {first:%Y-%m-%d %H:%M} to before "
        f"{end:%Y-%m-%d %H:%M} ({expanded.zone.key}); each job does nothing outside that "
        "period (cron has no year), so generate the next period before it ends, and again "
        "after a change to the schedule or its business calendar"
    ]


def _notes(task: Task) -> list[str]:
    notes = []
    if task.schedule_enabled and task.schedule_mode == "external":
        grace = task.trigger_grace_seconds or DEFAULT_TRIGGER_GRACE_SECONDS
        notes.append(
            "the internal scheduler watches this task: an occurrence not triggered within "
            f"{grace} s is recorded missed and announced as trigger.overdue"
        )
    elif task.schedule_enabled:
        notes.append(
            "the internal scheduler also fires this task while its schedule is enabled; make "
            f"it watch instead (a missing call is then reported) with `apflow tasks update "
            f"{task.id} --schedule-mode external` once the external scheduler takes over"
        )
    dropped = [
        name
        for name, value in (
            ("schedule_end_at", task.schedule_end_at),
            ("max_runs", task.max_runs),
            (
                "schedule_start_at",
                task.schedule_start_at if task.schedule_type != ScheduleType.INTERVAL else None,
            ),
        )
        if value is not None
    ]
    if dropped:
        notes.append(
            f"{', '.join(dropped)} cannot be expressed here: the external scheduler fires "
            "until it is removed"
        )
    return notes


def _anchor(task: Task) -> Any:
    return task.schedule_start_at or task.schedule_anchor_at


def _comments(notes: list[str]) -> list[str]:
    return [f"# Note: {note}" for note in notes]


@scheduler_group.command("webhook-url")
@click.argument("task_id")
@base_url_option
@click.option("--signed", is_flag=True, help="Also show how to sign a request (HMAC-SHA256).")
@click.option(
    "--secret-env",
    default=DEFAULT_SECRET_ENV,
    show_default=True,
    help="With --signed: the environment variable the shell snippet reads the secret from.",
)
@format_option
def webhook_url(
    task_id: str, base_url: str | None, signed: bool, secret_env: str, output_format: str
) -> None:
    """The webhook URL that triggers a task: POST to it (with --signed: the headers, the
    signed content and a shell snippet that signs with openssl)."""
    base_url = base_url_of(base_url, Settings.from_env())
    described = generate_webhook_url(task_id, base_url, signed, secret_env=secret_env)
    task, _ = _load_task(task_id)
    if output_format == "json":
        output.print_json({"task_id": task.id, **described})
        return
    output.line(f"{described['method']} {described['url']}")
    if signed:
        output.line(
            f"Headers: {described['timestamp_header']} (unix seconds), "
            f"{described['signature_header']} ({described['algorithm']}, lowercase hex)"
        )
        output.line(f"Signed content: {described['signed_content']}")
        output.line(f"Shell (the secret from ${secret_env}):")
        output.line(described["shell"])


@scheduler_group.command("cron-line")
@click.argument("task_id")
@base_url_option
@click.option(
    "--secret-env",
    help="Sign each request with the secret in this environment variable of the cron job "
    f"(default: {DEFAULT_SECRET_ENV} when a webhook secret is configured here).",
)
@click.option("--unsigned", is_flag=True, help="Do not sign the requests.")
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="curl's --max-time, in seconds.",
)
@click.option(
    "--cron-tz/--no-cron-tz",
    default=True,
    show_default=True,
    help="Lead with a CRON_TZ=<zone> line (cronie); without it, cron's own zone must be the "
    "task's.",
)
@expand_from_option
@expand_until_option
@format_option
def cron_line(
    task_id: str,
    base_url: str | None,
    secret_env: str | None,
    unsigned: bool,
    timeout: int,
    cron_tz: bool,
    expand_from: datetime | None,
    expand_until: datetime | None,
    output_format: str,
) -> None:
    """A crontab entry that triggers the task through the webhook at each occurrence of its
    schedule (CRON_TZ line, then the job line); signed at run time from an environment
    variable, never containing the secret. With --expand-until, one line per group of
    occurrences up to that day instead."""
    if unsigned and secret_env:
        raise click.UsageError("--unsigned: not with --secret-env")
    settings = Settings.from_env()
    url = generate_webhook_url(task_id, base_url_of(base_url, settings))["url"]
    task, schedule = _load_task(task_id)
    if not unsigned and secret_env is None and settings.webhook_secret:
        secret_env = DEFAULT_SECRET_ENV
    secret_env = None if unsigned else secret_env
    expanded = _expanded(task, schedule, expand_from, expand_until)
    if expanded is not None:
        _print_expanded_cron(task, expanded, url, secret_env, timeout, cron_tz, output_format)
        return
    schedule_type, expression = _schedule_of(task, schedule)
    entry = generate_cron_config(
        task.id,
        expression,
        url,
        schedule_type=schedule_type,
        timezone=task.schedule_timezone,
        secret_env=secret_env,
        anchor_at=_anchor(task),
        timeout_seconds=timeout,
        cron_tz=cron_tz,
    )
    job_line = entry.splitlines()[-1]
    fields = {
        "schedule_type": schedule_type,
        "schedule_expression": expression,
        "schedule_timezone": task.schedule_timezone,
        "cron_expression": " ".join(job_line.split()[:5]),
    }
    _print_crontab(task, entry, _notes(task), fields, secret_env, output_format)


def _print_expanded_cron(
    task: Task,
    expanded: BoundedCron,
    url: str,
    secret_env: str | None,
    timeout: int,
    cron_tz: bool,
    output_format: str,
) -> None:
    entry = generate_expanded_cron_config(
        task.id,
        expanded,
        url,
        secret_env=secret_env,
        timeout_seconds=timeout,
        cron_tz=cron_tz,
    )
    fields = {
        "schedule_type": task.schedule_type,
        "schedule_expression": task.schedule_expression,
        "schedule_timezone": task.schedule_timezone,
        "schedule_calendar": task.schedule_calendar,
        "period": {"start": iso_utc(expanded.start), "end": iso_utc(expanded.end)},
        "occurrences": expanded.fires,
        "cron_expressions": list(expanded.expressions),
    }
    notes = _expansion_notes(expanded) + _notes(task)
    _print_crontab(task, entry, notes, fields, secret_env, output_format)


def _print_crontab(
    task: Task,
    entry: str,
    notes: list[str],
    fields: dict[str, Any],
    secret_env: str | None,
    output_format: str,
) -> None:
    """The crontab text with its notes as comments, or all of it as JSON."""
    if output_format == "json":
        output.print_json(
            {
                "task_id": task.id,
                **fields,
                "signed": secret_env is not None,
                "crontab": entry,
                "notes": notes,
            }
        )
        return
    for comment in _comments(notes):
        output.line(comment)
    output.line(entry)


@scheduler_group.command("k8s-cronjob")
@click.argument("task_id")
@click.option(
    "--base-url",
    help="Where pods reach the apflow server, e.g. https://apflow.example.com or "
    "http://apflow.apps.svc:8000 (default: APFLOW_PUBLIC_URL; required, since a pod's "
    "127.0.0.1 is the pod itself).",
)
@click.option("--namespace", default="default", show_default=True, help="The CronJob's namespace.")
@click.option(
    "--secret-name",
    help="Sign each request with the webhook secret held in this Kubernetes Secret "
    "(required when APFLOW_WEBHOOK_SECRET is set here, unless --unsigned).",
)
@click.option(
    "--secret-key",
    default="webhook-secret",
    show_default=True,
    help="With --secret-name: the key of the secret in it.",
)
@click.option(
    "--unsigned",
    is_flag=True,
    help="Do not sign the requests (for a server without APFLOW_WEBHOOK_SECRET).",
)
@click.option(
    "--image",
    help=f"The container image (default: {DEFAULT_IMAGE}; signed: {DEFAULT_SIGNING_IMAGE}, "
    "which has the sh, openssl and curl the signing needs).",
)
@click.option(
    "-f",
    "--format",
    "output_format",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="The manifest as YAML (for kubectl apply -f -) or JSON.",
)
@expand_from_option
@expand_until_option
def k8s_cronjob(
    task_id: str,
    base_url: str | None,
    namespace: str,
    secret_name: str | None,
    secret_key: str,
    unsigned: bool,
    image: str | None,
    expand_from: datetime | None,
    expand_until: datetime | None,
    output_format: str,
) -> None:
    """A Kubernetes CronJob (batch/v1) that triggers the task through the webhook at each
    occurrence of its schedule, in the task's time zone; signed at run time from a
    Kubernetes Secret, never containing the secret. With --expand-until, a List of CronJobs
    for the occurrences up to that day instead."""
    settings = Settings.from_env()
    if unsigned and secret_name:
        raise click.UsageError("--unsigned: not with --secret-name")
    base_url = base_url or settings.public_url
    missing = []  # every missing choice in one line, not one per attempt
    if not base_url:
        missing.append(
            "pass --base-url URL or set APFLOW_PUBLIC_URL: the address pods reach the server "
            "at (a pod's 127.0.0.1 is the pod itself)"
        )
    if not unsigned and secret_name is None and settings.webhook_secret:
        missing.append(
            "the server requires signed webhooks (APFLOW_WEBHOOK_SECRET is set): pass "
            "--secret-name NAME (a Kubernetes Secret holding it), or --unsigned on purpose"
        )
    if missing:
        raise click.UsageError("; and ".join(missing))
    assert base_url is not None
    url = generate_webhook_url(task_id, base_url)["url"]
    task, schedule = _load_task(task_id)
    expanded = _expanded(task, schedule, expand_from, expand_until)
    if expanded is not None:
        calendar = f" under {task.schedule_calendar}" if task.schedule_calendar else ""
        manifest = generate_expanded_kubernetes_cronjobs(
            task.id,
            task.name,
            f"{task.schedule_type} {task.schedule_expression} ({task.schedule_timezone}){calendar}",
            expanded,
            url,
            namespace,
            secret_name=None if unsigned else secret_name,
            secret_key=secret_key,
            image=image,
        )
        notes = _expansion_notes(expanded) + _notes(task)
    else:
        schedule_type, expression = _schedule_of(task, schedule)
        manifest = generate_kubernetes_cronjob(
            task.id,
            task.name,
            expression,
            url,
            namespace,
            schedule_type=schedule_type,
            timezone=task.schedule_timezone,
            secret_name=None if unsigned else secret_name,
            secret_key=secret_key,
            image=image,
            anchor_at=_anchor(task),
        )
        notes = _notes(task)
    if output_format == "json":
        for note in notes:  # JSON has no comments, and the manifest must stay applicable
            click.echo(f"Note: {note}", err=True)
        output.print_json(manifest)
        return
    for comment in _comments(notes):
        output.line(comment)
    click.echo(
        yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True), nl=False
    )


class _BlockDumper(yaml.SafeDumper):
    """safe_dump, with multi-line strings (the signing script) as readable `|` blocks and no
    `&id001` anchors for repeated values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)
