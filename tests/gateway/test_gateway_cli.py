"""`apflow scheduler webhook-url|cron-line|k8s-cronjob` in-process, on a temporary APFLOW_HOME
(the embedded SQLite database): output ready to install, and refusals as one error line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner, Result

from apflow_server.cli.main import apflow

CLEARED = (
    "APFLOW_DATABASE_URL",
    "APFLOW_DEBUG",
    "APFLOW_DEFAULT_TIMEZONE",
    "APFLOW_WEBHOOK_SECRET",
    "APFLOW_JWT_SECRET",
    "APFLOW_PUBLIC_URL",
    "COLUMNS",
)
SECRET = "cli-webhook-secret-value"


class Cli:
    def __init__(self, home: Path) -> None:
        self.env: dict[str, str | None] = {name: None for name in CLEARED}
        self.env["APFLOW_HOME"] = str(home)

    def __call__(self, *args: str, **env: str | None) -> Result:
        result = CliRunner().invoke(apflow, list(args), env={**self.env, **env})
        assert "Traceback" not in result.stdout + result.stderr
        return result

    def ok(self, *args: str, **env: str | None) -> str:
        result = self(*args, **env)
        assert result.exit_code == 0, (args, result.stderr)
        return result.stdout

    def json(self, *args: str, **env: str | None) -> Any:
        return json.loads(self.ok(*args, "-f", "json", **env))

    def task(self, *args: str) -> str:
        task_id: str = self.json("tasks", "create", "--name", "Nightly Export", *args)["id"]
        return task_id

    def fails(self, code: int, *args: str, names: tuple[str, ...] = ()) -> str:
        result = self(*args)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        for name in names:
            assert name in lines[0], lines[0]
        return lines[0]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def daily(cli: Cli, *extra: str) -> str:
    return cli.task(
        "--schedule-type",
        "daily",
        "--schedule-expression",
        "09:00,09:30",
        "--schedule-timezone",
        "Europe/Paris",
        *extra,
    )


def test_the_commands_are_on_the_scheduler_group(cli: Cli) -> None:
    shown = cli.ok("scheduler", "--help")
    for name in ("webhook-url", "cron-line", "k8s-cronjob"):
        assert name in shown


def test_webhook_url(cli: Cli) -> None:
    task_id = cli.task()
    assert cli.ok("scheduler", "webhook-url", task_id) == (
        f"POST http://127.0.0.1:8000/webhook/trigger/{task_id}\n"
    )
    data = cli.json("scheduler", "webhook-url", task_id, "--base-url", "https://api.example.com/")
    assert data == {
        "task_id": task_id,
        "url": f"https://api.example.com/webhook/trigger/{task_id}",
        "method": "POST",
    }
    signed = cli.json("scheduler", "webhook-url", task_id, "--signed")
    assert signed["signed_content"] == "{timestamp}.{task_id}.{body}"
    assert signed["algorithm"] == "HMAC-SHA256"
    assert "$APFLOW_WEBHOOK_SECRET" in signed["shell"]
    text = cli.ok("scheduler", "webhook-url", task_id, "--signed", "--secret-env", "HOOK")
    assert "X-Webhook-Signature" in text and '-hmac "$HOOK"' in text


def test_webhook_url_of_an_unknown_task(cli: Cli) -> None:
    cli.ok("tasks", "list")  # the database exists
    cli.fails(1, "scheduler", "webhook-url", "no-such-task", names=("no-such-task", "not found"))
    cli.fails(1, "scheduler", "webhook-url", "x", "--base-url", "nope", names=("base_url",))


def test_cron_line(cli: Cli) -> None:
    task_id = daily(cli)
    url = f"http://127.0.0.1:8000/webhook/trigger/{task_id}"
    out = cli.ok("scheduler", "cron-line", task_id)
    assert out == (
        "CRON_TZ=Europe/Paris\n"
        f"0,30 9 * * * curl -fsS -o /dev/null --max-time 30 -X POST -d '' {url}\n"
    )
    data = cli.json("scheduler", "cron-line", task_id, "--no-cron-tz", "--timeout", "5")
    assert data["cron_expression"] == "0,30 9 * * *"
    assert data["schedule_timezone"] == "Europe/Paris"
    assert data["signed"] is False
    assert data["crontab"].startswith("0,30 9 * * * curl") and "--max-time 5" in data["crontab"]
    assert data["notes"] == []


def test_cron_line_signs_when_a_webhook_secret_is_configured(cli: Cli) -> None:
    task_id = daily(cli)
    out = cli.ok("scheduler", "cron-line", task_id, APFLOW_WEBHOOK_SECRET=SECRET)
    assert '-hmac "$APFLOW_WEBHOOK_SECRET"' in out and SECRET not in out
    unsigned = cli.ok("scheduler", "cron-line", task_id, "--unsigned", APFLOW_WEBHOOK_SECRET=SECRET)
    assert "openssl" not in unsigned
    named = cli.json("scheduler", "cron-line", task_id, "--secret-env", "MY_KEY")
    assert named["signed"] is True and '-hmac "$MY_KEY"' in named["crontab"]
    cli.fails(2, "scheduler", "cron-line", task_id, "--unsigned", "--secret-env", "K")
    cli.fails(
        1, "scheduler", "cron-line", task_id, "--secret-env", "BAD-NAME", names=("secret_env",)
    )


def test_cron_line_notes_what_it_cannot_carry(cli: Cli) -> None:
    task_id = daily(cli, "--max-runs", "5", "--schedule-enabled")
    out = cli.ok("scheduler", "cron-line", task_id)
    comments = [line for line in out.splitlines() if line.startswith("#")]
    assert any("--schedule-mode external" in line for line in comments)
    assert any("max_runs" in line for line in comments)
    assert out.splitlines()[-2] == "CRON_TZ=Europe/Paris"
    notes = cli.json("scheduler", "cron-line", task_id)["notes"]
    assert len(notes) == 2


def test_interval_tasks_need_an_aligned_grid(cli: Cli) -> None:
    aligned = cli.task(
        "--schedule-type",
        "interval",
        "--schedule-expression",
        "15m",
        "--schedule-start-at",
        "2025-01-01T00:00:00Z",
    )
    assert cli.json("scheduler", "cron-line", aligned)["cron_expression"] == "*/15 * * * *"
    shifted = cli.task(
        "--schedule-type",
        "interval",
        "--schedule-expression",
        "15m",
        "--schedule-start-at",
        "2025-01-01T10:07:30Z",
    )
    cli.fails(1, "scheduler", "cron-line", shifted, names=("whole minute",))
    floating = cli.task("--schedule-type", "interval", "--schedule-expression", "15m")
    cli.fails(1, "scheduler", "cron-line", floating, names=("not fixed yet",))


@pytest.mark.parametrize(
    ("kind", "expression", "why"),
    [
        ("monthly", "1,L 09:00", "L (the last day of the month)"),
        ("once", "2031-01-01T09:00:00Z", "single time"),
        ("cron", "0 9 * * 5#2", "# (nth weekday)"),
        ("cron", "0 9 * * * 30", "seconds field"),
        ("daily", "09:00,17:30", "09:30, 17:00"),
    ],
)
def test_schedules_without_a_cron_equivalent_are_refused(
    cli: Cli, kind: str, expression: str, why: str
) -> None:
    task_id = cli.task("--schedule-type", kind, "--schedule-expression", expression)
    cli.env["APFLOW_PUBLIC_URL"] = "https://apflow.example.com"
    for command in ("cron-line", "k8s-cronjob"):
        cli.fails(1, "scheduler", command, task_id, names=(why,))


def test_unknown_tasks_and_tasks_without_a_schedule(cli: Cli) -> None:
    task_id = cli.task()
    cli.env["APFLOW_PUBLIC_URL"] = "https://apflow.example.com"
    for command in ("cron-line", "k8s-cronjob"):
        cli.fails(1, "scheduler", command, task_id, names=("no schedule",))
        cli.fails(1, "scheduler", command, "missing-id", names=("not found",))
    cli.fails(2, "scheduler", "k8s-cronjob")  # no ID


PUBLIC = "https://apflow.example.com"


def test_k8s_cronjob(cli: Cli) -> None:
    task_id = daily(cli)
    out = cli.ok(
        "scheduler", "k8s-cronjob", task_id, "--namespace", "batch", APFLOW_PUBLIC_URL=PUBLIC
    )
    assert "&id" not in out  # no YAML anchors
    manifest = yaml.safe_load(out)
    kubernetes_validate.validate(manifest, "1.30.0", strict=True)
    assert manifest["metadata"]["name"] == f"nightly-export-{task_id[:8]}"
    assert manifest["metadata"]["namespace"] == "batch"
    assert manifest["spec"]["schedule"] == "0,30 9 * * *"
    assert manifest["spec"]["timeZone"] == "Europe/Paris"
    pod = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["containers"][0]["args"][-1] == f"{PUBLIC}/webhook/trigger/{task_id}"

    signed = cli.json(
        "scheduler",
        "k8s-cronjob",
        task_id,
        "--secret-name",
        "apflow-hmac",
        "--secret-key",
        "key",
        "--image",
        "example.org/curl:1",
        "--base-url",
        "https://apflow.internal",
    )
    kubernetes_validate.validate(signed, kubernetes_validate.utils.latest_version(), strict=True)
    pod = signed["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (trigger,) = pod["containers"]
    ref = trigger["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "apflow-hmac", "key": "key"}
    assert trigger["image"] == "example.org/curl:1"
    assert trigger["command"][:2] == ["sh", "-c"]
    script = trigger["command"][2]
    assert script.endswith(f" https://apflow.internal/webhook/trigger/{task_id}")
    cli.fails(
        1,
        "scheduler",
        "k8s-cronjob",
        task_id,
        "--namespace",
        "Not_Valid",
        "--base-url",
        PUBLIC,
        names=("namespace",),
    )


def test_k8s_cronjob_refuses_without_a_public_url(cli: Cli) -> None:
    """A pod's 127.0.0.1 is the pod itself: the server's address must be given."""
    task_id = daily(cli)
    line = cli.fails(2, "scheduler", "k8s-cronjob", task_id, names=("--base-url",))
    assert "APFLOW_PUBLIC_URL" in line
    shown = yaml.safe_load(
        cli.ok("scheduler", "k8s-cronjob", task_id, APFLOW_PUBLIC_URL=PUBLIC + "/")
    )
    assert shown["metadata"]["annotations"]["apflow-server/webhook-url"] == (
        f"{PUBLIC}/webhook/trigger/{task_id}"
    )
    chosen = yaml.safe_load(
        cli.ok(
            "scheduler",
            "k8s-cronjob",
            task_id,
            "--base-url",
            "https://other.example.com",
            APFLOW_PUBLIC_URL=PUBLIC,
        )
    )
    assert chosen["metadata"]["annotations"]["apflow-server/webhook-url"].startswith(
        "https://other.example.com/"
    )


def test_k8s_cronjob_with_a_webhook_secret_signs_or_refuses(cli: Cli) -> None:
    task_id = daily(cli)
    common = ("scheduler", "k8s-cronjob", task_id, "--base-url", PUBLIC)
    result = cli(*common, APFLOW_WEBHOOK_SECRET=SECRET)
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "--secret-name" in line and "--unsigned" in line
    signed = yaml.safe_load(
        cli.ok(*common, "--secret-name", "apflow-webhook", APFLOW_WEBHOOK_SECRET=SECRET)
    )
    (trigger,) = signed["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert trigger["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "apflow-webhook",
        "key": "webhook-secret",
    }
    assert SECRET not in yaml.safe_dump(signed)
    unsigned = yaml.safe_load(cli.ok(*common, "--unsigned", APFLOW_WEBHOOK_SECRET=SECRET))
    (curl,) = unsigned["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert curl["command"] == ["curl"] and "env" not in curl
    both = cli(*common, "--unsigned", "--secret-name", "s", APFLOW_WEBHOOK_SECRET=SECRET)
    assert both.exit_code == 2 and "--unsigned" in both.stderr
    assert len(both.stderr.splitlines()) == 1


def test_the_public_url_setting_is_the_default_of_the_other_generators(cli: Cli) -> None:
    task_id = daily(cli)
    shown = cli.json("scheduler", "webhook-url", task_id, APFLOW_PUBLIC_URL=PUBLIC)
    assert shown["url"] == f"{PUBLIC}/webhook/trigger/{task_id}"
    entry = cli.ok("scheduler", "cron-line", task_id, APFLOW_PUBLIC_URL=PUBLIC)
    assert entry.rstrip().endswith(f"{PUBLIC}/webhook/trigger/{task_id}")
    local = cli.json("scheduler", "webhook-url", task_id)
    assert local["url"] == f"http://127.0.0.1:8000/webhook/trigger/{task_id}"


@pytest.mark.parametrize("value", ["apflow.example.com", "ftp://x", "https://x/?a=1", "https://"])
def test_a_public_url_that_is_not_one_is_refused(cli: Cli, value: str) -> None:
    result = cli("scheduler", "webhook-url", "x", APFLOW_PUBLIC_URL=value)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "APFLOW_PUBLIC_URL" in line


def test_k8s_cronjob_notes_are_yaml_comments(cli: Cli) -> None:
    task_id = daily(cli, "--schedule-enabled")
    out = cli.ok("scheduler", "k8s-cronjob", task_id, APFLOW_PUBLIC_URL=PUBLIC)
    assert out.startswith("# Note: the internal scheduler also fires this task")
    assert yaml.safe_load(out)["kind"] == "CronJob"
    result = cli("scheduler", "k8s-cronjob", task_id, "-f", "json", APFLOW_PUBLIC_URL=PUBLIC)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["kind"] == "CronJob"
    assert result.stderr.startswith("Note: the internal scheduler")


def test_k8s_cronjob_names_every_missing_choice_at_once(cli: Cli) -> None:
    """Without a public URL and without a signing choice, one line says both."""
    task_id = daily(cli)
    result = cli("scheduler", "k8s-cronjob", task_id, APFLOW_WEBHOOK_SECRET=SECRET)
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "--base-url" in line and "--secret-name" in line and "--unsigned" in line


def test_an_external_schedules_cron_line_says_it_is_watched(cli: Cli) -> None:
    task_id = daily(cli, "--schedule-enabled", "--schedule-mode", "external")
    out = cli.ok("scheduler", "cron-line", task_id, APFLOW_PUBLIC_URL=PUBLIC)
    assert out.startswith(
        "# Note: the internal scheduler watches this task: an occurrence not triggered within "
        "300 s is recorded missed and announced as trigger.overdue"
    )
    assert out.rstrip().endswith(f"{PUBLIC}/webhook/trigger/{task_id}")


def business_days(cli: Cli) -> str:
    cli.ok("calendars", "create", "munich", "--country", "DE", "--subdivision", "BY")
    return cli.task(
        "--schedule-type",
        "daily",
        "--schedule-expression",
        "09:00",
        "--schedule-timezone",
        "Europe/Berlin",
        "--schedule-calendar",
        "munich",
        "--schedule-enabled",
    )


def test_a_business_calendar_is_refused_unless_a_period_is_expanded(cli: Cli) -> None:
    task_id = business_days(cli)
    cli.env["APFLOW_PUBLIC_URL"] = PUBLIC
    for command in ("cron-line", "k8s-cronjob"):
        cli.fails(1, "scheduler", command, task_id, names=("munich", "--expand-until"))
    period = ("--expand-from", "2031-12-01", "--expand-until", "2032-01-31")
    shown = cli.json("scheduler", "cron-line", task_id, *period)
    assert shown["cron_expressions"] == [
        "0 9 2,5,7-9,12-16,19-23,26-30 1 *",
        "0 9 1-5,8-12,15-19,22-24,29-31 12 *",
    ]
    assert shown["occurrences"] == 41 and shown["schedule_calendar"] == "munich"
    # Midnight in Berlin, both ends; the end is the day after --expand-until.
    assert shown["period"] == {"start": "2031-11-30T23:00:00Z", "end": "2032-01-31T23:00:00Z"}
    lines = shown["crontab"].splitlines()
    assert lines[0] == "CRON_TZ=Europe/Berlin" and len(lines) == 3
    start = int(datetime(2031, 11, 30, 23, tzinfo=UTC).timestamp())
    end = int(datetime(2032, 1, 31, 23, tzinfo=UTC).timestamp())
    guard = f'now=$(date +\\%s); [ "$now" -ge {start} ] && [ "$now" -lt {end} ] || exit 0'
    assert all(line.split(" ", 5)[5].startswith(guard) for line in lines[1:])
    assert any("41 occurrences" in note for note in shown["notes"])
    text = cli.ok("scheduler", "cron-line", task_id, *period)
    assert text.startswith("# Note: 41 occurrences from 2031-12-01 00:00 to before 2032-02-01")
    listed = yaml.safe_load(cli.ok("scheduler", "k8s-cronjob", task_id, *period))
    assert listed["kind"] == "List" and len(listed["items"]) == 2
    kubernetes_validate.validate(listed["items"][0], "1.30.0", strict=True)
    names = [item["metadata"]["name"] for item in listed["items"]]
    assert len(set(names)) == 2 and all(len(name) <= 52 for name in names)
    schedules = [item["spec"]["schedule"] for item in listed["items"]]
    assert schedules == shown["cron_expressions"]
    container = listed["items"][1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = container["containers"][0]["command"]
    assert script[:2] == ["sh", "-c"] and guard.replace("\\%", "%") in script[2]


def test_an_expansion_too_long_or_backwards_is_one_line(cli: Cli) -> None:
    task_id = business_days(cli)
    cli.fails(1, "scheduler", "cron-line", task_id, "--expand-from", "2031-01-01",
              "--expand-until", "2032-01-02", names=("at most a year",))  # fmt: skip
    cli.fails(1, "scheduler", "cron-line", task_id, "--expand-from", "2031-01-02",
              "--expand-until", "2030-12-31", names=("after start",))  # fmt: skip
    cli.fails(2, "scheduler", "cron-line", task_id, "--expand-from", "2031-01-02")
    cli.fails(2, "scheduler", "cron-line", task_id, "--expand-until", "next week")
