"""A Kubernetes CronJob (`batch/v1`) that fires a task through the webhook route, signed at
run time from a Kubernetes Secret: the crontab line's own shell statements in one container."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from apflow_server.exports.triggers import (
    DEFAULT_CURL_TIMEOUT,
    DEFAULT_SECRET_ENV,
    GatewayInputError,
    _check_task_id,
    _check_timeout,
    _check_url,
    _convert,
    _curl_words,
    signing_statements,
)

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


def cronjob_name(task_name: str, task_id: str) -> str:
    """A DNS-1123 name of at most 52 characters: the task name in lowercase ASCII, `-` for
    anything else, then 8 characters of the task id (a uuid's first 8, else a hash of it)."""
    ascii_name = unicodedata.normalize("NFKD", task_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    short = _short_id(task_id)
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

    name = cronjob_name(task_name, task_id)
    labels = {
        "app.kubernetes.io/name": "apflow-webhook-trigger",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "apflow-server",
    }
    annotations = {
        "apflow-server/task-id": task_id,
        "apflow-server/task-name": task_name,
        "apflow-server/schedule": f"{schedule_type} {schedule_expression} ({zone.key})",
        "apflow-server/webhook-url": webhook_url,
    }
    trigger: dict[str, Any] = {
        "name": "trigger",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
    }
    if signed:
        # No `$(NAME)` of a defined variable and no `$$` in it, so the kubelet's expansion
        # leaves the script as written (the URL was checked for `$` above).
        curl = _curl_words(webhook_url, signed=True, timeout=timeout_seconds, quiet=False)
        statements = signing_statements(task_id, DEFAULT_SECRET_ENV)
        script = "\n".join(["set -eu", *statements, " ".join(curl)])
        trigger["command"] = ["sh", "-c", script]
        trigger["env"] = [
            {
                "name": DEFAULT_SECRET_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret_key}},
            }
        ]
    else:
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
            "schedule": expression,
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
