"""`apflow scheduler webhook-url|cron-line|k8s-cronjob ID`: hand a task's schedule to an
external scheduler that fires it through the webhook route.

Each reads the task, converts its schedule (apflow_server.schedules.to_cron: refused, one line
and exit 1, when cron cannot express it exactly) and prints something ready to install:
the URL, a crontab entry, a CronJob manifest. What the output cannot carry (schedule bounds,
max_runs, the internal scheduler still firing an enabled schedule) is said in comment lines
(`#`) that crontab and YAML ignore, or under `notes` in JSON.
"""

from __future__ import annotations

from typing import Any

import click
import yaml

from apflow_server.config import Settings
from apflow_server.core.errors import ApflowError
from apflow_server.core.types import ScheduleType
from apflow_server.exports.kubernetes import (
    DEFAULT_IMAGE,
    DEFAULT_SIGNING_IMAGE,
    generate_kubernetes_cronjob,
)
from apflow_server.exports.triggers import (
    DEFAULT_SECRET_ENV,
    generate_cron_config,
    generate_webhook_url,
)
from apflow_server.schedules.plan import DEFAULT_TRIGGER_GRACE_SECONDS
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


def _load_task(task_id: str) -> Task:
    async def work(service: Service) -> Task:
        return await service.tasks.get(OPERATOR, task_id)

    return run_with_service(work)


def _schedule_of(task: Task) -> tuple[str, str]:
    if task.schedule_type is None or not task.schedule_expression:
        raise ApflowError(
            f"task {task.id!r} has no schedule to convert; set one with `apflow tasks update "
            f"{task.id} --schedule-type ... --schedule-expression ...`"
        )
    if task.schedule_calendar is not None:
        raise ApflowError(
            f"task {task.id!r} follows the business calendar {task.schedule_calendar!r}, "
            "which cron cannot express (it knows no holidays); let the internal scheduler "
            "fire it, or subscribe to its calendar feed"
        )
    return task.schedule_type, task.schedule_expression


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
    task = _load_task(task_id)
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
@format_option
def cron_line(
    task_id: str,
    base_url: str | None,
    secret_env: str | None,
    unsigned: bool,
    timeout: int,
    cron_tz: bool,
    output_format: str,
) -> None:
    """A crontab entry that triggers the task through the webhook at each occurrence of its
    schedule (CRON_TZ line, then the job line); signed at run time from an environment
    variable, never containing the secret."""
    if unsigned and secret_env:
        raise click.UsageError("--unsigned: not with --secret-env")
    settings = Settings.from_env()
    url = generate_webhook_url(task_id, base_url_of(base_url, settings))["url"]
    task = _load_task(task_id)
    schedule_type, expression = _schedule_of(task)
    if not unsigned and secret_env is None and settings.webhook_secret:
        secret_env = DEFAULT_SECRET_ENV
    entry = generate_cron_config(
        task.id,
        expression,
        url,
        schedule_type=schedule_type,
        timezone=task.schedule_timezone,
        secret_env=None if unsigned else secret_env,
        anchor_at=_anchor(task),
        timeout_seconds=timeout,
        cron_tz=cron_tz,
    )
    notes = _notes(task)
    if output_format == "json":
        job_line = entry.splitlines()[-1]
        output.print_json(
            {
                "task_id": task.id,
                "schedule_type": schedule_type,
                "schedule_expression": expression,
                "schedule_timezone": task.schedule_timezone,
                "cron_expression": " ".join(job_line.split()[:5]),
                "signed": secret_env is not None and not unsigned,
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
def k8s_cronjob(
    task_id: str,
    base_url: str | None,
    namespace: str,
    secret_name: str | None,
    secret_key: str,
    unsigned: bool,
    image: str | None,
    output_format: str,
) -> None:
    """A Kubernetes CronJob (batch/v1) that triggers the task through the webhook at each
    occurrence of its schedule, in the task's time zone; signed at run time from a
    Kubernetes Secret, never containing the secret."""
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
    task = _load_task(task_id)
    schedule_type, expression = _schedule_of(task)
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
