"""The webhook gateway's generators, offline: the URL and its signing recipe (the shell
snippet's signature checked against the server's own), the crontab line's shape and escaping,
and the Kubernetes CronJob against the Kubernetes schema in strict mode."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from apflow_server.config import Settings
from apflow_server.scheduler.gateway import signatures
from apflow_server.scheduler.gateway.webhook import (
    SIGNER_SCRIPT,
    WebhookConfig,
    cronjob_name,
    escape_cron_command,
    generate_cron_config,
    generate_kubernetes_cronjob,
    generate_webhook_url,
)
from apflow_server.schedules.to_cron import CronConversionError

SECRET = "the-webhook-secret-0123456789"
TASK = "3f2b9c1e-8d4a-4f6b-9c2d-1a2b3c4d5e6f"
URL = f"https://api.example.com/webhook/trigger/{TASK}"
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APFLOW_")}
    env.update(extra)
    return env


# ---------------------------------------------------------------------- WebhookConfig


def test_webhook_config_defaults_follow_the_guide() -> None:
    config = WebhookConfig()
    assert (config.secret_key, config.allowed_ips, config.rate_limit) == (None, None, 0)
    assert (config.timeout, config.async_execution) == (3600, True)
    assert "secret" not in repr(WebhookConfig(secret_key="hush")).replace("secret_key", "")


def test_webhook_config_from_settings() -> None:
    settings = Settings.from_env(
        {
            "APFLOW_HOME": "/tmp/nowhere",
            "APFLOW_WEBHOOK_SECRET": "s",
            "APFLOW_WEBHOOK_ALLOWED_IPS": "10.0.0.0/8,127.0.0.1",
            "APFLOW_WEBHOOK_RATE_LIMIT": "30",
        }
    )
    config = WebhookConfig.from_settings(settings)
    assert config.secret_key == "s"
    assert config.allowed_ips == ["10.0.0.0/8", "127.0.0.1/32"]
    assert config.rate_limit == 30


# ---------------------------------------------------------------------- webhook URL


def test_webhook_url_plain() -> None:
    assert generate_webhook_url("abc123", "https://api.example.com") == {
        "url": "https://api.example.com/webhook/trigger/abc123",
        "method": "POST",
    }
    assert generate_webhook_url("abc", "http://h:8000/base/")["url"] == (
        "http://h:8000/base/webhook/trigger/abc"
    )
    assert generate_webhook_url("a b/ü?", "http://h")["url"] == (
        "http://h/webhook/trigger/a%20b%2F%C3%BC%3F"
    )
    assert generate_webhook_url("x", "http://h", async_execution=False)["url"].endswith(
        "/x?async=false"
    )


@pytest.mark.parametrize("base", ["api.example.com", "ftp://h", "", "http://h/?q=1"])
def test_webhook_url_refuses_a_base_that_is_not_an_http_url(base: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        generate_webhook_url("abc", base)


def test_signed_webhook_url_describes_the_signature() -> None:
    described = generate_webhook_url(TASK, "https://api.example.com", include_signature=True)
    assert described["url"] == URL
    assert described["method"] == "POST"
    assert described["timestamp_header"] == "X-Webhook-Timestamp"
    assert described["signature_header"] == "X-Webhook-Signature"
    assert described["algorithm"] == "HMAC-SHA256"
    assert described["signed_content"] == "{timestamp}.{task_id}.{body}"
    assert described["secret_env"] == "APFLOW_WEBHOOK_SECRET"
    assert "openssl dgst -sha256 -hmac" in described["shell"]
    assert SECRET not in str(described)


def snippet_signature(shell: str, timestamp: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """Run the snippet's signing statements with a fixed timestamp, printing $sig."""
    lines = shell.splitlines()
    assert lines[-1].startswith("curl ")
    assert "ts=$(date +%s)" in lines
    statements = [f"ts={timestamp}" if line == "ts=$(date +%s)" else line for line in lines[:-1]]
    script = "\n".join([*statements, 'printf %s "$sig"'])
    return subprocess.Popen(
        ["sh", "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@needs_openssl
@pytest.mark.parametrize(
    "task_id",
    [TASK, "report 'daily' $HOME `id` \"x\" ;&|", "üñí-cødé", "100%-done", "nightly.backup"],
)
def test_the_shell_snippet_signs_as_the_server_verifies(task_id: str) -> None:
    shell = generate_webhook_url(task_id, "http://h", include_signature=True)["shell"]
    process = snippet_signature(shell, 1700000000, clean_env(APFLOW_WEBHOOK_SECRET=SECRET))
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert out == signatures.sign(SECRET, 1700000000, task_id)
    signatures.verify(
        SECRET,
        timestamp="1700000000",
        signature=out,
        task_id=task_id,
        body=b"",
        now=1700000000,
        tolerance_seconds=300,
    )


@needs_openssl
def test_the_shell_snippet_reads_the_secret_from_the_named_variable() -> None:
    shell = generate_webhook_url(TASK, "http://h", True, secret_env="MY_HOOK_KEY")["shell"]
    assert "$MY_HOOK_KEY" in shell
    process = snippet_signature(shell, 1, clean_env(MY_HOOK_KEY="k"))
    out, _ = process.communicate(timeout=20)
    assert out == signatures.sign("k", 1, TASK)
    unset = snippet_signature(shell, 1, clean_env())
    _, err = unset.communicate(timeout=20)
    assert unset.returncode != 0 and "MY_HOOK_KEY" in err
    with pytest.raises(ValueError, match="secret_env"):
        generate_webhook_url(TASK, "http://h", True, secret_env="NOT-A-NAME")


# ---------------------------------------------------------------------- crontab line


def test_cron_line_with_a_zone_and_no_secret() -> None:
    entry = generate_cron_config(
        TASK, "1-5 09:00", URL, schedule_type="weekly", timezone="Europe/Berlin"
    )
    tz_line, job = entry.split("\n")
    assert tz_line == "CRON_TZ=Europe/Berlin"
    assert job.startswith("0 9 * * 1-5 curl -fsS -o /dev/null --max-time 30 -X POST ")
    assert job.endswith(URL)
    assert "X-Webhook" not in job and "openssl" not in job
    assert generate_cron_config(TASK, "0 * * * *", URL, cron_tz=False).count("\n") == 0


def test_cron_line_signs_at_run_time_without_the_secret() -> None:
    entry = generate_cron_config(
        TASK, "*/15 * * * *", URL, secret_env="APFLOW_WEBHOOK_SECRET", timeout_seconds=12
    )
    job = entry.splitlines()[-1]
    assert job.startswith("*/15 * * * * ")
    assert "date +\\%s" in job
    assert 'openssl dgst -sha256 -hmac "$APFLOW_WEBHOOK_SECRET"' in job
    assert "--max-time 12" in job
    assert '-H "X-Webhook-Timestamp: $ts" -H "X-Webhook-Signature: $sig"' in job
    # Every % is escaped for cron, and nothing else is.
    assert re.search(r"(?<!\\)%", job) is None
    assert "echo" not in job  # printf builds the signed content exactly
    assert SECRET not in entry


def test_cron_line_converts_the_schedule_or_refuses() -> None:
    assert generate_cron_config(TASK, "09:30", URL, schedule_type="daily").startswith(
        "CRON_TZ=UTC\n30 9 * * * "
    )
    with pytest.raises(CronConversionError, match="last day"):
        generate_cron_config(TASK, "L 09:00", URL, schedule_type="monthly")
    with pytest.raises(CronConversionError, match="single time"):
        generate_cron_config(TASK, "2030-01-01T00:00:00Z", URL, schedule_type="once")
    with pytest.raises(ValueError, match="schedule_timezone"):
        generate_cron_config(TASK, "0 9 * * *", URL, timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="webhook_url"):
        generate_cron_config(TASK, "0 9 * * *", "not a url")
    with pytest.raises(ValueError, match="task_id"):
        generate_cron_config("a\nb", "0 9 * * *", URL)


def test_escape_cron_command() -> None:
    assert escape_cron_command("date +%s; printf '%%'") == "date +\\%s; printf '\\%\\%'"
    with pytest.raises(ValueError):
        escape_cron_command("a\\%b")
    with pytest.raises(ValueError):
        escape_cron_command("a\nb")


# ---------------------------------------------------------------------- Kubernetes


def validate(manifest: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_cronjob_without_secret_passes_strict_validation() -> None:
    manifest = generate_kubernetes_cronjob(
        task_id=TASK,
        task_name="Daily Report",
        schedule_expression="0 9 * * *",
        webhook_url=URL,
        namespace="production",
    )
    validate(manifest)
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "CronJob"
    assert manifest["metadata"]["name"] == "daily-report-3f2b9c1e"
    assert manifest["metadata"]["namespace"] == "production"
    spec = manifest["spec"]
    assert spec["schedule"] == "0 9 * * *"
    assert spec["timeZone"] == "UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "initContainers" not in pod and "volumes" not in pod
    (container,) = pod["containers"]
    assert container["image"] == "curlimages/curl:8.10.1"
    assert container["command"] == ["curl"]
    assert container["args"][-1] == URL and "-fsS" in container["args"]
    assert "--max-time" in container["args"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_cronjob_with_secret_signs_from_a_kubernetes_secret() -> None:
    manifest = generate_kubernetes_cronjob(
        TASK,
        "Report",
        "1,15 06:30",
        URL,
        "jobs",
        schedule_type="monthly",
        timezone="America/New_York",
        secret_name="apflow-webhook",
        secret_key="hmac",
        image="registry.local/curl:8",
    )
    validate(manifest)
    assert manifest["spec"]["schedule"] == "30 6 1,15 * *"
    assert manifest["spec"]["timeZone"] == "America/New_York"
    pod = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # each retry is a fresh pod with a fresh signature
    (signer,) = pod["initContainers"]
    secret_env = [e for e in signer["env"] if e["name"] == "APFLOW_WEBHOOK_SECRET"]
    assert secret_env == [
        {
            "name": "APFLOW_WEBHOOK_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "apflow-webhook", "key": "hmac"}},
        }
    ]
    assert signer["command"][:2] == ["python3", "-c"]
    (curl,) = pod["containers"]
    assert curl["image"] == "registry.local/curl:8"
    assert curl["args"][-3:] == ["-H", "@/var/run/apflow/headers", URL]
    for container in (signer, curl):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_signer_writes_the_headers_the_server_verifies(tmp_path: Path) -> None:
    headers = tmp_path / "headers"
    task_id = "task with spaces ü"
    result = subprocess.run(
        [sys.executable, "-c", SIGNER_SCRIPT],
        env=clean_env(
            APFLOW_WEBHOOK_SECRET=SECRET,
            APFLOW_TASK_ID=task_id,
            APFLOW_HEADERS_FILE=str(headers),
        ),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = headers.read_text().splitlines()
    assert [line.split(": ")[0] for line in lines] == ["X-Webhook-Timestamp", "X-Webhook-Signature"]
    timestamp = lines[0].split(": ")[1]
    assert lines[1].split(": ")[1] == signatures.sign(SECRET, timestamp, task_id)
    empty = subprocess.run(
        [sys.executable, "-c", SIGNER_SCRIPT],
        env=clean_env(APFLOW_WEBHOOK_SECRET="", APFLOW_TASK_ID="t", APFLOW_HEADERS_FILE="x"),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert empty.returncode != 0 and "empty" in empty.stderr


AWKWARD_NAMES = [
    "Daily Report",
    "  spaces   everywhere  ",
    "Ünïcödé Repört — täglich",
    "日報",  # nothing ASCII survives
    "---",
    "x" * 100,
    "A.B_C/D\\E:F",
    "report-" + "ab" * 60 + "-end",
    "9 to 5",
]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
@pytest.mark.parametrize("task_id", [TASK, "my-own-id with space", "x" * 300])
def test_cronjob_names_are_dns_1123_and_fit_52(name: str, task_id: str) -> None:
    derived = cronjob_name(name, task_id)
    assert DNS_1123.match(derived), derived
    assert len(derived) <= 52
    manifest = generate_kubernetes_cronjob(task_id, name, "*/5 * * * *", URL)
    assert manifest["metadata"]["name"] == derived
    assert manifest["metadata"]["annotations"]["apflow-server/task-id"] == task_id
    validate(manifest)


def test_cronjob_names_keep_tasks_apart() -> None:
    ids = ["report-2024-01", "report-2024-02", TASK, TASK.replace("3f", "4f")]
    assert len({cronjob_name("Report", task_id) for task_id in ids}) == len(ids)
    assert cronjob_name("Ünïcödé", TASK) == "unicode-3f2b9c1e"
    assert cronjob_name("日報", TASK) == "apflow-task-3f2b9c1e"


def test_cronjob_refuses_what_kubernetes_cannot_run() -> None:
    with pytest.raises(CronConversionError, match="L"):
        generate_kubernetes_cronjob(TASK, "n", "0 0 L * *", URL)
    with pytest.raises(CronConversionError, match="Kubernetes"):
        generate_kubernetes_cronjob(TASK, "n", "0 0 */2 * 1", URL)
    with pytest.raises(ValueError, match="namespace"):
        generate_kubernetes_cronjob(TASK, "n", "0 0 * * *", URL, "Bad_Namespace")
    with pytest.raises(ValueError, match="secret_name"):
        generate_kubernetes_cronjob(TASK, "n", "0 0 * * *", URL, secret_name="No Such")


def test_manifest_objects_are_not_shared() -> None:
    manifest = generate_kubernetes_cronjob(TASK, "n", "0 0 * * *", URL)
    manifest["metadata"]["labels"]["extra"] = "1"
    template = manifest["spec"]["jobTemplate"]
    assert "extra" not in template["metadata"]["labels"]
    assert "extra" not in template["spec"]["template"]["metadata"]["labels"]
