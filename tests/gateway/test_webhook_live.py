"""The generated triggers against a LIVE server with HMAC on: `apflow serve` in its own process
(temporary APFLOW_HOME, APFLOW_WEBHOOK_SECRET set), a task made with `apflow tasks create`.

The crontab line is run the way cron runs it: the job line's command after cron's `%`
processing (`\\%` becomes `%`, an unescaped `%` would end the command), by `sh -c`, with a
cron-like minimal environment holding the secret. The Kubernetes CronJob's container is run
the way its pod would: its `sh -c` script with the secret in its environment."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from apflow_server.scheduler.gateway.webhook import (
    generate_cron_config,
    generate_webhook_url,
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl"
)

SECRET = "live-webhook-secret-for-the-gateway-tests"
APFLOW = str(Path(sys.executable).parent / "apflow")
CRON_PATH = "/usr/bin:/bin"  # what cron gives a job


def cron_job_command(entry: str) -> tuple[dict[str, str], str, str]:
    """What cron runs for a crontab entry: its variables (`NAME=value` lines), the command
    handed to /bin/sh and the standard input (cronie's do_command: `\\%` → `%`, the first
    unescaped `%` ends the command and the rest, `%` → newline, becomes standard input)."""
    *settings, job = entry.splitlines()
    variables = dict(line.split("=", 1) for line in settings if not line.startswith("#"))
    fields = job.split(None, 5)
    assert len(fields) == 6, job
    text = fields[5]
    command: list[str] = []
    escaped = False
    for index, ch in enumerate(text):
        if escaped:
            escaped = False
            if ch == "%":
                command[-1] = "%"
                continue
            command.append(ch)
            continue
        if ch == "\\":
            escaped = True
        if ch == "%":
            return variables, "".join(command), text[index + 1 :].replace("%", "\n")
        command.append(ch)
    return variables, "".join(command), ""


def cron_env(**extra: str) -> dict[str, str]:
    return {"PATH": CRON_PATH, "HOME": os.environ.get("HOME", "/root"), "SHELL": "/bin/sh", **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Live:
    home: Path
    env: dict[str, str]
    base_url: str
    task_id: str

    def apflow(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [APFLOW, *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def runs(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.home / "apflow.db") as db:
            rows = db.execute(
                "SELECT trigger, status FROM task_runs WHERE task_id = ? ORDER BY started_at",
                (self.task_id,),
            ).fetchall()
        return [(str(trigger), str(status)) for trigger, status in rows]

    def wait_finished(self, count: int) -> list[tuple[str, str]]:
        deadline = time.monotonic() + 15
        while True:
            runs = self.runs()
            if len(runs) >= count and all(status != "running" for _, status in runs):
                return runs
            assert time.monotonic() < deadline, runs
            time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("gateway-live")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APFLOW_")}
    env["APFLOW_HOME"] = str(home)
    created = subprocess.run(
        [
            APFLOW,
            "tasks",
            "create",
            "--name",
            "Cron Trigger",
            "--executor",
            "echo_executor",
            "--inputs",
            '{"from": "cron"}',
            "--schedule-type",
            "daily",
            "--schedule-expression",
            "09:00",
            "--schedule-timezone",
            "Europe/Paris",
            "-f",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["id"]
    port = free_port()
    log = (home / "server.log").open("w")
    server_env = {**env, "APFLOW_WEBHOOK_SECRET": SECRET}
    server = subprocess.Popen(
        [APFLOW, "serve", "--port", str(port)],
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        yield Live(home, server_env, base_url, task_id)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    assert "Traceback" not in (home / "server.log").read_text()


_last_signed = [0]


def fresh_second() -> None:
    """Wait for a unix second no earlier trigger was signed in: a signature covers only the
    timestamp, the task and the (empty) body, and the server accepts each one once."""
    while int(time.time()) <= _last_signed[0]:
        time.sleep(0.02)
    _last_signed[0] = int(time.time())


def run_cron_entry(entry: str, **env: str) -> subprocess.CompletedProcess[str]:
    variables, command, stdin = cron_job_command(entry)
    fresh_second()
    assert stdin == "", "an unescaped % would cut the command"
    return subprocess.run(
        ["sh", "-c", command],
        env=cron_env(**variables, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def url_of(live: Live) -> str:
    url: str = generate_webhook_url(live.task_id, live.base_url)["url"]
    return url


def test_the_installed_cron_line_triggers_the_task(live: Live) -> None:
    entry = generate_cron_config(
        live.task_id, "* * * * *", url_of(live), secret_env="APFLOW_WEBHOOK_SECRET"
    )
    assert SECRET not in entry
    before = len(live.runs())
    result = run_cron_entry(entry, APFLOW_WEBHOOK_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")  # nothing for cron to mail
    runs = live.wait_finished(before + 1)
    assert runs[-1] == ("webhook", "completed")
    # The run history, as the CLI shows it.
    shown = live.apflow("tasks", "runs", live.task_id, "-f", "json")
    assert shown.returncode == 0, shown.stderr
    items: list[dict[str, Any]] = json.loads(shown.stdout)["items"]
    assert any(item["trigger"] == "webhook" for item in items)


def test_a_wrong_secret_fails_and_runs_nothing(live: Live) -> None:
    entry = generate_cron_config(
        live.task_id, "0 9 * * *", url_of(live), secret_env="APFLOW_WEBHOOK_SECRET"
    )
    before = live.runs()
    result = run_cron_entry(entry, APFLOW_WEBHOOK_SECRET="not-the-secret")
    assert result.returncode != 0
    assert "401" in result.stderr
    time.sleep(0.2)
    assert live.runs() == before


def test_an_unset_secret_stops_before_calling(live: Live) -> None:
    entry = generate_cron_config(live.task_id, "0 9 * * *", url_of(live), secret_env="HOOK_KEY")
    before = live.runs()
    result = run_cron_entry(entry)
    assert result.returncode != 0
    assert "HOOK_KEY" in result.stderr and "not set" in result.stderr
    assert live.runs() == before


def test_an_unsigned_line_is_refused_by_a_server_that_wants_signatures(live: Live) -> None:
    entry = generate_cron_config(live.task_id, "0 9 * * *", url_of(live))
    before = live.runs()
    result = run_cron_entry(entry, APFLOW_WEBHOOK_SECRET=SECRET)
    assert result.returncode != 0 and "401" in result.stderr
    assert live.runs() == before


def test_the_cli_cron_line_works_as_installed(live: Live) -> None:
    """`apflow scheduler cron-line` where the webhook secret is configured signs by default."""
    shown = live.apflow("scheduler", "cron-line", live.task_id, "--base-url", live.base_url)
    assert shown.returncode == 0, shown.stderr
    entry = shown.stdout.strip()
    assert entry.startswith("CRON_TZ=Europe/Paris\n0 9 * * * ")
    assert SECRET not in entry
    before = len(live.runs())
    result = run_cron_entry(entry, APFLOW_WEBHOOK_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    assert live.wait_finished(before + 1)[-1] == ("webhook", "completed")


def test_the_kubernetes_trigger_container_triggers_the_task_once(live: Live) -> None:
    """The CronJob as `apflow scheduler k8s-cronjob` prints it, its container's `sh -c` script
    run as the pod would (the secret in the variable its secretKeyRef feeds), with real curl
    and openssl against the live server."""
    shown = live.apflow(
        "scheduler",
        "k8s-cronjob",
        live.task_id,
        "--secret-name",
        "apflow-webhook",
        "--base-url",
        live.base_url,
        "-f",
        "json",
    )
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)
    assert SECRET not in shown.stdout
    pod = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (trigger,) = pod["containers"]
    env = cron_env()
    for item in trigger.get("env", []):
        assert item["valueFrom"]["secretKeyRef"]["name"] == "apflow-webhook"
        env[item["name"]] = SECRET  # what the kubelet reads from the Secret
    assert trigger["command"][:2] == ["sh", "-c"]
    before = len(live.runs())
    fresh_second()
    result = subprocess.run(
        trigger["command"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "triggered"
    assert live.wait_finished(before + 1)[-1] == ("webhook", "completed")
    # Without the secret it stops before calling; with a wrong one the server refuses it.
    unset = subprocess.run(
        trigger["command"], env=cron_env(), capture_output=True, text=True, timeout=60
    )
    assert unset.returncode != 0 and "not set" in unset.stderr
    fresh_second()
    wrong = subprocess.run(
        trigger["command"],
        env={**env, "APFLOW_WEBHOOK_SECRET": "not-the-secret"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode != 0 and "401" in wrong.stderr
    assert len(live.runs()) == before + 1


def test_the_cli_refuses_an_unsigned_cronjob_for_a_server_that_wants_signatures(
    live: Live,
) -> None:
    shown = live.apflow("scheduler", "k8s-cronjob", live.task_id, "--base-url", live.base_url)
    assert shown.returncode == 2 and shown.stdout == ""
    (line,) = shown.stderr.splitlines()
    assert "--secret-name" in line and "--unsigned" in line


def test_the_cron_emulation_cuts_at_an_unescaped_percent() -> None:
    assert cron_job_command("* * * * * date +%s") == ({}, "date +", "s")
    assert cron_job_command("CRON_TZ=UTC\n0 9 * * * a \\% b%x%y") == (
        {"CRON_TZ": "UTC"},
        "a % b",
        "x\ny",
    )


def test_an_expanded_line_triggers_inside_its_period_and_nowhere_else(live: Live) -> None:
    """A bounded period's line fires on the same dates of every year; its guard lets the job
    through only within the period (by the machine's clock, with real sh and date)."""
    from apflow_server.exports.triggers import generate_expanded_cron_config
    from apflow_server.schedules.to_cron import BoundedCron

    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    zone = ZoneInfo("Europe/Paris")

    def line(start: datetime, end: datetime) -> str:
        expanded = BoundedCron(zone, start, end, ("* * * * *",), fires=1)
        return generate_expanded_cron_config(
            live.task_id, expanded, url_of(live), secret_env="APFLOW_WEBHOOK_SECRET"
        )

    before = len(live.runs())
    for start, end in (
        (minute + timedelta(minutes=2), minute + timedelta(days=300)),  # not yet
        (minute - timedelta(days=300), minute),  # over (the end is exclusive)
    ):
        result = run_cron_entry(line(start, end), APFLOW_WEBHOOK_SECRET=SECRET)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert len(live.runs()) == before
    result = run_cron_entry(
        line(minute, minute + timedelta(minutes=2)), APFLOW_WEBHOOK_SECRET=SECRET
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert live.wait_finished(before + 1)[-1] == ("webhook", "completed")


def test_the_cli_expanded_cronjob_triggers_the_task(live: Live) -> None:
    """`k8s-cronjob --expand-until`: each CronJob's script (guard, signing, curl) run as its
    pod would, from today (its midnight in the task's zone) to a month ahead."""
    today = datetime.now(ZoneInfo("Europe/Paris")).date()  # the task's zone
    shown = live.apflow(
        *("scheduler", "k8s-cronjob", live.task_id, "--secret-name", "apflow-webhook"),
        *("--base-url", live.base_url, "-f", "json", "--expand-from", today.isoformat()),
        *("--expand-until", (today + timedelta(days=31)).isoformat()),
    )
    assert shown.returncode == 0, shown.stderr
    listed = json.loads(shown.stdout)
    assert listed["kind"] == "List" and listed["items"]
    pod = listed["items"][0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (trigger,) = pod["containers"]
    env = cron_env(**{item["name"]: SECRET for item in trigger["env"]})
    before = len(live.runs())
    fresh_second()
    result = subprocess.run(
        trigger["command"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert live.wait_finished(before + 1)[-1] == ("webhook", "completed")
