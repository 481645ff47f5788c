"""Let an external scheduler fire tasks through the webhook route: URLs and crontab lines.

`POST {base}/webhook/trigger/{task_id}` starts a run; with APFLOW_WEBHOOK_SECRET set on the
server, the request carries `X-Webhook-Timestamp` (unix seconds) and `X-Webhook-Signature`
(lowercase hex HMAC-SHA256 of `"{timestamp}.{task_id}.{body}"` with the secret, a dot in the
id written `%2E`: see `signatures.signed_task_id`), the
timestamp must be recent (APFLOW_WEBHOOK_TOLERANCE_SECONDS, default 300) and each signature
is accepted once. The generators here therefore never write a signature down: a crontab line
or a Kubernetes Job computes it when it runs, from a secret it reads from its environment.

- `generate_webhook_url`: the URL and method, and with `include_signature` how to sign.
- `generate_cron_config`: a crontab entry (`CRON_TZ=` line plus the job line) that works as
  installed; see its docstring for the shell it runs.
- `generate_kubernetes_cronjob` (kubernetes.py): a `batch/v1` CronJob manifest.

Schedules become cron expressions through `apflow_server.schedules.to_cron`, which refuses
what cron cannot express exactly (monthly `L`, misaligned intervals, `once`, …).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from apflow_server.core.errors import ValidationError
from apflow_server.core.zones import get_zone
from apflow_server.schedules.to_cron import BoundedCron, CronConversionError, CronTarget, to_cron
from apflow_server.webhooks.signatures import (
    ALGORITHM,
    SIGNATURE_HEADER,
    SIGNED_CONTENT,
    TIMESTAMP_HEADER,
    signed_task_id,
)

if TYPE_CHECKING:
    from apflow_server.config import Settings

DEFAULT_SECRET_ENV = "APFLOW_WEBHOOK_SECRET"  # noqa: S105  (a variable name, not a secret)
DEFAULT_CURL_TIMEOUT = 30

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GatewayInputError(ValidationError, ValueError):
    """An argument a generator cannot use; `field` names it."""


@dataclass(frozen=True)
class WebhookConfig:
    """The description of a webhook integration: how the server guards the webhook route.

    The server itself is configured by environment variables (APFLOW_WEBHOOK_SECRET,
    APFLOW_WEBHOOK_ALLOWED_IPS, APFLOW_WEBHOOK_RATE_LIMIT); this object describes such a
    setup for code and documentation (`from_settings` reads it back from Settings).

    - secret_key: the HMAC signature key (None: no signature required by this layer).
    - allowed_ips: addresses and CIDR ranges allowed to call (None: any).
    - rate_limit: requests per minute per client address (0: unlimited).
    - timeout: seconds a triggered run may take.
    - async_execution: True starts the run in the background (202); False waits for it.
    """

    secret_key: str | None = field(default=None, repr=False)
    allowed_ips: list[str] | None = None
    rate_limit: int = 0
    timeout: int = 3600
    async_execution: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        return cls(
            secret_key=settings.webhook_secret,
            allowed_ips=[str(net) for net in settings.webhook_allowed_ips] or None,
            rate_limit=settings.webhook_rate_limit,
        )


# ---------------------------------------------------------------------- URL


def trigger_url(task_id: str, base_url: str, *, async_execution: bool = True) -> str:
    """`{base_url}/webhook/trigger/{task_id}`, the id percent-encoded."""
    if not isinstance(task_id, str) or not task_id:
        raise GatewayInputError("task_id", "must be a non-empty string")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GatewayInputError("base_url", f"{base_url!r} must be an http(s) URL")
    if parts.query or parts.fragment:
        raise GatewayInputError("base_url", "must have no query or fragment")
    url = f"{base_url.strip().rstrip('/')}/webhook/trigger/{quote(task_id, safe='')}"
    return url if async_execution else f"{url}?async=false"


def signing_statements(task_id: str, secret_env: str = DEFAULT_SECRET_ENV) -> list[str]:
    """POSIX shell statements that set `$ts` (now, unix seconds) and `$sig` (the signature of
    an empty body) from the secret in environment variable `secret_env`; they stop with an
    error when it is unset or empty. Needs date, printf, openssl and sed. (openssl takes the
    key as an argument: visible in the process list of the host while it runs.)"""
    _check_env_name(secret_env)
    return [
        f': "${{{secret_env}:?is not set}}"',
        "ts=$(date +%s)",
        f"sig=$(printf '%s.%s.' \"$ts\" {shlex.quote(signed_task_id(task_id))}"
        f" | openssl dgst -sha256 -hmac \"${secret_env}\" | sed 's/^.* //')",
    ]


def _curl_words(url: str, *, signed: bool, timeout: int, quiet: bool) -> list[str]:
    words = ["curl", "-fsS"]
    if quiet:
        words += ["-o", "/dev/null"]
    words += ["--max-time", str(timeout), "-X", "POST", "-d", "''"]
    if signed:
        words += [f'-H "{TIMESTAMP_HEADER}: $ts"', f'-H "{SIGNATURE_HEADER}: $sig"']
    return [*words, shlex.quote(url)]


def generate_webhook_url(
    task_id: str,
    base_url: str,
    include_signature: bool = False,
    *,
    secret_env: str = DEFAULT_SECRET_ENV,
    async_execution: bool = True,
) -> dict[str, Any]:
    """`{"url", "method": "POST"}` for triggering `task_id`; with `include_signature`, also
    how to sign (for a server with APFLOW_WEBHOOK_SECRET): `timestamp_header`,
    `signature_header`, `algorithm` ("HMAC-SHA256", lowercase hex), `signed_content`
    ("{timestamp}.{task_id}.{body}"), `secret_env` and `shell`, a POSIX shell snippet that
    computes the signature with openssl from that environment variable and calls the URL."""
    url = trigger_url(task_id, base_url, async_execution=async_execution)
    result: dict[str, Any] = {"url": url, "method": "POST"}
    if include_signature:
        statements = signing_statements(task_id, secret_env)
        curl = " ".join(_curl_words(url, signed=True, timeout=DEFAULT_CURL_TIMEOUT, quiet=False))
        result.update(
            timestamp_header=TIMESTAMP_HEADER,
            signature_header=SIGNATURE_HEADER,
            algorithm=ALGORITHM,
            signature_encoding="hex",
            signed_content=SIGNED_CONTENT,
            secret_env=secret_env,
            shell="\n".join([*statements, curl]),
        )
    return result


# ---------------------------------------------------------------------- crontab


def generate_cron_config(
    task_id: str,
    schedule_expression: str,
    webhook_url: str,
    *,
    schedule_type: str = "cron",
    timezone: str = "UTC",
    secret_env: str | None = None,
    anchor_at: datetime | None = None,
    timeout_seconds: int = DEFAULT_CURL_TIMEOUT,
    cron_tz: bool = True,
) -> str:
    """A crontab entry that POSTs to `webhook_url` at each occurrence of the schedule.

    Returned as two lines: `CRON_TZ=<timezone>` and the job line (`cron_tz=False`: the job
    line alone, for a cron whose own zone is `timezone`). CRON_TZ is read by cronie (Red Hat,
    Fedora, Arch, …) and applies to the lines after it in the crontab, so keep the pair
    together and give later entries their own CRON_TZ; Debian's and busybox's cron ignore it
    and run every line in the machine's zone.

    The job line runs `curl -fsS` (non-zero exit on an HTTP error, which cron then mails)
    with a timeout, discarding the response body. With `secret_env` (e.g.
    "APFLOW_WEBHOOK_SECRET") it signs each request when it runs: `date +%s` for the
    timestamp and `openssl dgst -sha256 -hmac` over `printf '%s.%s.' "$ts" '<task_id>'`
    (exactly "{timestamp}.{task_id}." for the empty body), the secret read from that
    variable, which the crontab's environment must provide (a `NAME=value` line at the top
    of a crontab only its owner can read); the secret never appears in the line. Every `%`
    is written `\\%`, as cron requires (an unescaped one ends the command).

    `schedule_type` / `schedule_expression` / `timezone` (and `anchor_at`, an instant of an
    interval's grid) are converted by `apflow_server.schedules.to_cron`; a schedule without
    an exact cron equivalent raises CronConversionError."""
    zone, expression = _convert(
        schedule_type, schedule_expression, timezone, anchor_at, target="crontab"
    )
    command = _cron_command(task_id, webhook_url, secret_env, timeout_seconds, [])
    line = f"{expression} {command}"
    return f"CRON_TZ={zone.key}\n{line}" if cron_tz else line


def generate_expanded_cron_config(
    task_id: str,
    expanded: BoundedCron,
    webhook_url: str,
    *,
    secret_env: str | None = None,
    timeout_seconds: int = DEFAULT_CURL_TIMEOUT,
    cron_tz: bool = True,
) -> str:
    """Crontab lines for a bounded period (`to_cron.expand_to_cron`): one job line per
    expression, each as generate_cron_config's, led by a guard that does nothing outside the
    period (cron has no year: the same dates come round again)."""
    command = _cron_command(
        task_id, webhook_url, secret_env, timeout_seconds, [period_guard(expanded)]
    )
    lines = [f"{expression} {command}" for expression in expanded.expressions]
    return "\n".join([f"CRON_TZ={expanded.zone.key}", *lines] if cron_tz else lines)


def period_guard(expanded: BoundedCron) -> str:
    """A POSIX shell statement that ends the command, successfully, unless the clock is in
    the expansion's period (unix seconds: no zone data needed). Both ends are whole minutes
    and cron starts a job within the minute it names, so a job of the period passes and one
    of the same date in another year does not."""
    start, end = int(expanded.start.timestamp()), int(expanded.end.timestamp())
    return f'now=$(date +%s); [ "$now" -ge {start} ] && [ "$now" -lt {end} ] || exit 0'


def _cron_command(
    task_id: str,
    webhook_url: str,
    secret_env: str | None,
    timeout_seconds: int,
    leading: list[str],
) -> str:
    """The job's command as a crontab writes it: `leading` statements, signing, curl."""
    _check_task_id(task_id)
    _check_url(webhook_url)
    _check_timeout(timeout_seconds)
    statements = signing_statements(task_id, secret_env) if secret_env is not None else []
    curl = _curl_words(
        webhook_url, signed=secret_env is not None, timeout=timeout_seconds, quiet=True
    )
    return escape_cron_command("; ".join([*leading, *statements, " ".join(curl)]))


def escape_cron_command(command: str) -> str:
    """The command as written in a crontab: cron turns an unescaped `%` into a newline (and
    the rest into standard input), and `\\%` into `%`."""
    if any(ch in command for ch in "\n\r\0"):
        raise GatewayInputError("command", "a crontab command must be one line")
    if "\\" in command:
        raise GatewayInputError(
            "command", "a backslash cannot be written safely in a crontab command"
        )
    return command.replace("%", "\\%")


# ---------------------------------------------------------------------- checks


def _convert(
    schedule_type: str,
    expression: str,
    timezone: str,
    anchor_at: datetime | None,
    *,
    target: CronTarget,
) -> tuple[ZoneInfo, str]:
    """The zone and the cron expression; an invalid schedule raises GatewayInputError and
    one cron cannot express CronConversionError (both ValidationError and ValueError)."""
    try:
        zone = get_zone(timezone)
        return zone, to_cron(
            schedule_type, expression, zone.key, anchor_at=anchor_at, target=target
        )
    except CronConversionError:
        raise
    except ValidationError as error:
        raise GatewayInputError(error.field, error.reason) from None


def _check_env_name(name: str) -> None:
    if not _ENV_NAME.match(name):
        raise GatewayInputError("secret_env", f"{name!r} is not an environment variable name")


def _check_task_id(task_id: str) -> None:
    if not isinstance(task_id, str) or not task_id:
        raise GatewayInputError("task_id", "must be a non-empty string")
    if any(ch in task_id for ch in "\n\r\0\\"):
        raise GatewayInputError("task_id", "must not contain line breaks or backslashes")


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GatewayInputError("webhook_url", f"{url!r} must be an http(s) URL")
    if any(ch.isspace() or ch in "\0\\" for ch in url):
        raise GatewayInputError("webhook_url", "must not contain spaces or backslashes")


def _check_timeout(seconds: int) -> None:
    if not isinstance(seconds, int) or seconds <= 0:
        raise GatewayInputError("timeout_seconds", "must be a positive whole number")
