"""A Kubernetes CronJob (`batch/v1`) that fires a task through the webhook route, signed at
run time from a Kubernetes Secret: the crontab line's own shell statements in one container."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from apflow_server.core.clock import iso_utc
from apflow_server.exports.triggers import (
    DEFAULT_CURL_TIMEOUT,
    DEFAULT_SECRET_ENV,
    GatewayInputError,
    _check_task_id,
    _check_timeout,
    _check_url,
    _convert,
    _curl_words,
    period_guard,
    signing_statements,
)
from apflow_server.schedules.to_cron import BoundedCron

DEFAULT_IMAGE = "curlimages/curl:8.10.1"
# A signed trigger runs the crontab line's own shell statements, which need sh, date, sed,
# openssl and curl in one image; curlimages/curl has no openssl. The official buildpack-deps
# curl image has all of them (Debian's ca-certificates brings openssl).
DEFAULT_SIGNING_IMAGE = "buildpack-deps:bookworm-curl"
# Kubernetes appends 11 characters to a CronJob's name for its Jobs; names stay within 52.
MAX_CRONJOB_NAME = 52
# A user and group id that no image's root is: runAsNonRoot needs a numeric user.
RUN_AS_ID = 65532

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


# ---------------------------------------------------------------------- Kubernetes


def cronjob_name(task_name: str, task_id: str, suffix: str = "") -> str:
    """A DNS-1123 name of at most 52 characters: the task name in lowercase ASCII, `-` for
    anything else, then 8 characters of the task id (a uuid's first 8, else a hash of it),
    then `suffix` (lowercase letters, digits and `-`) if any."""
    ascii_name = unicodedata.normalize("NFKD", task_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    short = _short_id(task_id) + (f"-{suffix}" if suffix else "")
    slug = slug[: MAX_CRONJOB_NAME - len(short) - 1].rstrip("-") or "apflow-task"
    return f"{slug}-{short}"


def _short_id(task_id: str) -> str:
    try:
        return uuid.UUID(task_id).hex[:8]
    except ValueError:
        return hashlib.sha256(task_id.encode()).hexdigest()[:8]


def generate_kubernetes_cronjob(
    task_id: str,
    task_name: str,
    schedule_expression: str,
    webhook_url: str,
    namespace: str = "default",
    *,
    schedule_type: str = "cron",
    timezone: str = "UTC",
    secret_name: str | None = None,
    secret_key: str = "webhook-secret",  # noqa: S107  (a key name in the Secret)
    image: str | None = None,
    anchor_at: datetime | None = None,
    timeout_seconds: int = DEFAULT_CURL_TIMEOUT,
    starting_deadline_seconds: int = 300,
    backoff_limit: int = 2,
    history_limit: int = 3,
) -> dict[str, Any]:
    """A `batch/v1` CronJob that POSTs to `webhook_url` at each occurrence of the schedule.

    `spec.schedule` is the schedule converted for Kubernetes (robfig/cron) and read in
    `spec.timeZone`; `concurrencyPolicy: Forbid`, `startingDeadlineSeconds` (an occurrence
    the controller could not start within it is skipped), three successful and failed Jobs
    kept. The Job's pod runs `curl -fsS` as a non-root user with a read-only root filesystem,
    no privilege escalation and no capabilities; `restartPolicy: Never`, so each retry
    (`backoff_limit`) is a fresh pod with a fresh signature.

    Without `secret_name` the container is curl alone (`image`, default curlimages/curl).
    With it, requests are signed: the container (`image`, default buildpack-deps'
    bookworm-curl, which has sh, openssl and curl) runs `sh -c` with the same statements as
    the crontab line (`signing_statements`), reading the secret from APFLOW_WEBHOOK_SECRET,
    which Kubernetes fills from key `secret_key` of the Secret `secret_name`. The Secret must
    hold exactly the server's APFLOW_WEBHOOK_SECRET (no trailing newline:
    `kubectl create secret generic NAME --from-literal=webhook-secret=...`)."""
    zone, expression = _convert(
        schedule_type, schedule_expression, timezone, anchor_at, target="kubernetes"
    )
    return _cronjob(
        task_id,
        task_name,
        webhook_url,
        namespace,
        schedule=expression,
        zone=zone,
        described=f"{schedule_type} {schedule_expression} ({zone.key})",
        secret_name=secret_name,
        secret_key=secret_key,
        image=image,
        timeout_seconds=timeout_seconds,
        starting_deadline_seconds=starting_deadline_seconds,
        backoff_limit=backoff_limit,
        history_limit=history_limit,
    )


def generate_expanded_kubernetes_cronjobs(
    task_id: str,
    task_name: str,
    described: str,
    expanded: BoundedCron,
    webhook_url: str,
    namespace: str = "default",
    *,
    secret_name: str | None = None,
    secret_key: str = "webhook-secret",  # noqa: S107  (a key name in the Secret)
    image: str | None = None,
    timeout_seconds: int = DEFAULT_CURL_TIMEOUT,
) -> dict[str, Any]:
    """A `v1` List of CronJobs for a bounded period (`to_cron.expand_to_cron`), one per
    expression, named `<task>-<id>-<n>`, each as generate_kubernetes_cronjob's. Their pods
    run `sh -c` (curlimages/curl has a shell), led by a guard that does nothing outside the
    period, since the same dates come round in other years. `startingDeadlineSeconds` is 50:
    a Job started later than that could fall outside a period that ends on the next minute.
    `described` is the schedule as people read it, kept in an annotation."""
    if not expanded.expressions:
        raise GatewayInputError("end", "the period holds no occurrence to trigger")
    items = [
        _cronjob(
            task_id,
            task_name,
            webhook_url,
            namespace,
            schedule=expression,
            zone=expanded.zone,
            described=described,
            secret_name=secret_name,
            secret_key=secret_key,
            image=image,
            timeout_seconds=timeout_seconds,
            starting_deadline_seconds=50,
            leading=[period_guard(expanded)],
            name_suffix=str(number),
            period=(expanded.start, expanded.end),
        )
        for number, expression in enumerate(expanded.expressions, start=1)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _cronjob(
    task_id: str,
    task_name: str,
    webhook_url: str,
    namespace: str,
    *,
    schedule: str,
    zone: ZoneInfo,
    described: str,
    secret_name: str | None,
    secret_key: str,
    image: str | None,
    timeout_seconds: int,
    starting_deadline_seconds: int = 300,
    backoff_limit: int = 2,
    history_limit: int = 3,
    leading: list[str] | None = None,
    name_suffix: str = "",
    period: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    _check_task_id(task_id)
    _check_url(webhook_url)
    if "$" in webhook_url:  # the kubelet rewrites $(NAME) and $$ in a container's command
        raise GatewayInputError("webhook_url", "must not contain '$' in a Kubernetes command")
    _check_timeout(timeout_seconds)
    if not _DNS_LABEL.match(namespace):
        raise GatewayInputError("namespace", f"{namespace!r} is not a DNS-1123 label")
    signed = secret_name is not None
    image = image or (DEFAULT_SIGNING_IMAGE if signed else DEFAULT_IMAGE)
    if any(ch.isspace() for ch in image):
        raise GatewayInputError("image", f"{image!r} is not an image reference")
    if secret_name is not None and (
        len(secret_name) > 253 or not _DNS_SUBDOMAIN.match(secret_name)
    ):
        raise GatewayInputError("secret_name", f"{secret_name!r} is not a Secret name")
    if signed and not _SECRET_KEY.match(secret_key):
        raise GatewayInputError("secret_key", f"{secret_key!r} is not a Secret key")

    name = cronjob_name(task_name, task_id, name_suffix)
    labels = {
        "app.kubernetes.io/name": "apflow-webhook-trigger",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "apflow-server",
    }
    annotations = {
        "apflow-server/task-id": task_id,
        "apflow-server/task-name": task_name,
        "apflow-server/schedule": described,
        "apflow-server/webhook-url": webhook_url,
    }
    if period is not None:
        annotations["apflow-server/period"] = f"{iso_utc(period[0])}/{iso_utc(period[1])}"
    trigger: dict[str, Any] = {
        "name": "trigger",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
    }
    if signed or leading:
        # No `$(NAME)` of a defined variable and no `$$` in it, so the kubelet's expansion
        # leaves the script as written (the URL was checked for `$` above).
        curl = _curl_words(webhook_url, signed=signed, timeout=timeout_seconds, quiet=False)
        statements = signing_statements(task_id, DEFAULT_SECRET_ENV) if signed else []
        script = "\n".join(["set -eu", *(leading or []), *statements, " ".join(curl)])
        trigger["command"] = ["sh", "-c", script]
    if signed:
        trigger["env"] = [
            {
                "name": DEFAULT_SECRET_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key}},
            }
        ]
    if not signed and not leading:
        trigger["command"] = ["curl"]
        trigger["args"] = [
            "-fsS",
            "--max-time",
            str(timeout_seconds),
            "-X",
            "POST",
            "-d",
            "",
            webhook_url,
        ]
    trigger["resources"] = _resources()
    trigger["securityContext"] = _container_security()
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [trigger],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "schedule": schedule,
            "timeZone": zone.key,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": starting_deadline_seconds,
            "successfulJobsHistoryLimit": history_limit,
            "failedJobsHistoryLimit": history_limit,
            "suspend": False,
            "jobTemplate": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": {
                    "backoffLimit": backoff_limit,
                    "activeDeadlineSeconds": (timeout_seconds + 300) * (backoff_limit + 1),
                    "ttlSecondsAfterFinished": 86400,
                    "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
                },
            },
        },
    }


def _resources() -> dict[str, Any]:
    return {
        "requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"cpu": "200m", "memory": "64Mi"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
