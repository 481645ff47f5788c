"""The webhook gateway's generators, offline: the URL and its signing recipe (the shell
snippet's signature checked against the server's own), the crontab line's shape and escaping,
and the Kubernetes CronJob against the Kubernetes schema in strict mode."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from apflow_server.config import Settings
from apflow_server.scheduler.gateway import signatures
from apflow_server.scheduler.gateway.webhook import (
    DEFAULT_SIGNING_IMAGE,
    WebhookConfig,
    cronjob_name,
    escape_cron_command,
    generate_cron_config,
    generate_kubernetes_cronjob,
    generate_webhook_url,
    signing_statements,
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


def signed_cronjob(task_id: str = TASK, url: str = URL, **extra: Any) -> dict[str, Any]:
    return generate_kubernetes_cronjob(
        task_id,
        "Report",
        "1,15 06:30",
        url,
        "jobs",
        schedule_type="monthly",
        timezone="America/New_York",
        secret_name="apflow-webhook",
        secret_key="hmac",
        **extra,
    )


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def test_cronjob_with_secret_signs_from_a_kubernetes_secret() -> None:
    manifest = signed_cronjob()
    validate(manifest)
    assert manifest["spec"]["schedule"] == "30 6 1,15 * *"
    assert manifest["spec"]["timeZone"] == "America/New_York"
    pod = pod_of(manifest)
    assert pod["restartPolicy"] == "Never"  # each retry is a fresh pod with a fresh signature
    assert "initContainers" not in pod and "volumes" not in pod
    (trigger,) = pod["containers"]
    assert trigger["env"] == [
        {
            "name": "APFLOW_WEBHOOK_SECRET",
            "valueFrom": {"secretKeyRef": {"name": "apflow-webhook", "key": "hmac"}},
        }
    ]
    # The crontab line's own statements sign it, in an image with sh, openssl and curl.
    assert trigger["image"] == DEFAULT_SIGNING_IMAGE
    assert trigger["command"][:2] == ["sh", "-c"]
    script = trigger["command"][2]
    for statement in signing_statements(TASK):
        assert statement in script.splitlines()
    assert script.splitlines()[-1].endswith(shlex.quote(URL))
    assert SECRET not in script
    assert trigger["securityContext"]["readOnlyRootFilesystem"] is True
    assert trigger["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    own_image = signed_cronjob(image="registry.local/curl-openssl:3")
    assert pod_of(own_image)["containers"][0]["image"] == "registry.local/curl-openssl:3"


def stub_curl(folder: Path) -> Path:
    """A `curl` that writes its arguments, one per line, where $CURL_ARGS says."""
    folder.mkdir(exist_ok=True)
    stub = folder / "curl"
    stub.write_text('#!/bin/sh\nfor arg in "$@"; do printf \'%s\\n\' "$arg"; done > "$CURL_ARGS"\n')
    stub.chmod(0o755)
    return stub


def run_trigger_container(
    manifest: dict[str, Any], tmp_path: Path, secret: str | None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The trigger container's command as the pod runs it: its `sh -c` script, the secret
    in the variable its secretKeyRef feeds, curl replaced by the stub."""
    (trigger,) = pod_of(manifest)["containers"]
    args_file = tmp_path / "curl-args"
    args_file.unlink(missing_ok=True)
    stub_curl(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "CURL_ARGS": str(args_file)}
    if secret is not None:
        (variable,) = (e["name"] for e in trigger["env"] if "valueFrom" in e)
        env[variable] = secret
    result = subprocess.run(
        trigger["command"], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    sent = args_file.read_text().splitlines() if args_file.exists() else []
    return result, sent


def header(sent: list[str], name: str) -> str:
    values = [sent[i + 1] for i, word in enumerate(sent[:-1]) if word == "-H"]
    (value,) = (v.split(": ", 1)[1] for v in values if v.split(": ", 1)[0] == name)
    return value


@needs_openssl
@pytest.mark.parametrize("task_id", [TASK, "nightly.report.v2", "daily-report", "a:b_c"])
def test_the_trigger_container_sends_a_signature_the_server_accepts(
    tmp_path: Path, task_id: str
) -> None:
    url = generate_webhook_url(task_id, "https://apflow.example.com")["url"]
    result, sent = run_trigger_container(signed_cronjob(task_id, url), tmp_path, SECRET)
    assert result.returncode == 0, result.stderr
    assert sent[-1] == url
    assert sent[sent.index("-X") + 1] == "POST" and sent[sent.index("-d") + 1] == ""
    timestamp = header(sent, "X-Webhook-Timestamp")
    signature = header(sent, "X-Webhook-Signature")
    signatures.verify(  # raises when the server would refuse it
        SECRET,
        timestamp=timestamp,
        signature=signature,
        task_id=task_id,
        body=b"",
        now=time.time(),
        tolerance_seconds=300,
    )
    with pytest.raises(signatures.SignatureError):
        signatures.verify(
            "another-secret",
            timestamp=timestamp,
            signature=signature,
            task_id=task_id,
            body=b"",
            now=time.time(),
            tolerance_seconds=300,
        )


@needs_openssl
def test_the_trigger_container_stops_before_calling_without_the_secret(tmp_path: Path) -> None:
    for secret in (None, ""):
        result, sent = run_trigger_container(signed_cronjob(), tmp_path, secret)
        assert result.returncode != 0
        assert "APFLOW_WEBHOOK_SECRET" in result.stderr and "not set" in result.stderr
        assert sent == []


def kubernetes_expand(text: str, env: dict[str, str]) -> str:
    """What the kubelet does to a container's command before running it: `$(NAME)` becomes
    the variable's value when NAME is defined (else stays as written), `$$` becomes `$`
    (Kubernetes' third_party/forked/golang/expansion, ported)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close != -1:
                    name = text[i + 2 : close]
                    out.append(env.get(name, f"$({name})"))
                    i = close + 1
                    continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def test_kubernetes_variable_expansion_leaves_the_script_as_written() -> None:
    (trigger,) = pod_of(signed_cronjob("nightly.report.v2"))["containers"]
    defined = {e["name"]: "the-value-of-" + e["name"] for e in trigger["env"]}
    for word in trigger["command"]:
        assert kubernetes_expand(word, defined) == word
    assert kubernetes_expand("a $$(X) $(X) $(Y) $", {"X": "1"}) == "a $(X) 1 $(Y) $"


def test_a_url_kubernetes_would_rewrite_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook_url"):
        signed_cronjob(url="https://apflow.example.com/x$$y/webhook/trigger/t")


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
