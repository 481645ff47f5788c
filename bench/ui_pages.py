"""The dashboard's pages under load of data: 10,000 tasks and 100,000 runs in PostgreSQL, every
page timed for an admin (all tasks) and for one user (their ~1,000).

    .venv/bin/python bench/ui_pages.py                     # about 1 min
    .venv/bin/python bench/ui_pages.py --tasks 10000 --runs 100000 --requests 50

A fresh PostgreSQL database is created, migrated and COPY-seeded: --tasks tasks of --users users
(user_00, the viewer, owns 1/users of them), cron, daily, interval and weekly schedules in
several IANA zones, enabled, next_run_at computed from each schedule (5% paused, 2% disabled,
a few running now); --runs rows of run history, one task of user_00 with --heavy-runs of them
(a 5-minute interval), the rest spread unevenly (frequent schedules get more), mostly
completed, some failed, skipped, missed, timed out, a few manual and webhook; a few hundred
audit entries, notification endpoints with deliveries, and two scheduler instances.

Then `apflow serve --no-scheduler --log-level warning` runs on it (JWT authentication on), and
each viewer signs in the way a browser does (GET /ui/login for the form's CSRF token and cookie,
then POST /ui/login with `token` and `csrf_token` and this server as Origin, keeping the
`apflow_session` cookie). Every page is requested 3 times (warm-up), then --requests times
one after the other; the time is the client's, from the request until the whole body is read.
A page answering 404 is reported missing.

Then, unless --no-profile, the server is started again with SQLAlchemy's cursor events hooked
(each statement's duration written to a file) and every page requested twice more: per page,
how many statements one request runs, their total time, the slowest and the most repeated one.
For a page that misses a target, the slowest statement's EXPLAIN (ANALYZE, BUFFERS) is printed,
and, when py-spy is installed (on PATH or /tmp/bench-venv/bin, see bench/README.md), where the
server's time goes while the page is requested for 5 s. None of these requests are among the
timed ones (the hook and the sampling cost time).

Targets: p95 < 200 ms and a body < 100 KB. Prints a Markdown table, then one JSON line. The
database is dropped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api import Server, free_port
from burst import ADMIN_URL, create_pg, drop_pg, percentile

from apflow_server.core.tokens import issue_token
from apflow_server.notifications.secret_box import SecretBox
from apflow_server.schedules.schedule import Schedule
from apflow_server.storage.database import Database
from apflow_server.storage.listener import asyncpg_dsn

TARGET_P95_MS = 200.0
TARGET_KB = 100.0
WARMUP = 3
VIEWER = "user_00"
ADMIN = "admin"

# (type, expression, approximate period in seconds: how far apart past runs are put)
SCHEDULES = (
    ("cron", "*/15 * * * *", 900),
    ("cron", "0 * * * *", 3600),
    ("cron", "30 2 * * *", 86400),
    ("cron", "0 9 * * 1-5", 120960),
    ("cron", "0 */6 * * *", 21600),
    ("daily", "09:00", 86400),
    ("daily", "06:30,18:30", 43200),
    ("interval", "15m", 900),
    ("interval", "1h", 3600),
    ("interval", "6h", 21600),
    ("interval", "1d", 86400),
    ("weekly", "1-5 09:00", 120960),
    ("weekly", "1 08:00", 604800),
    ("weekly", "6,7 10:00", 302400),
)
ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
)
VERBS = ("sync", "export", "import", "refresh", "report", "cleanup", "backup", "notify", "rollup")
THINGS = (
    "invoices",
    "orders",
    "customers",
    "inventory",
    "metrics",
    "sessions",
    "payouts",
    "search-index",
    "leads",
    "tickets",
)
ERRORS = (
    "HTTP 503 Service Unavailable from https://api.example.com/v1/jobs",
    "HTTP 500 Internal Server Error from https://hooks.example.org/run",
    "timed out after 30 s connecting to https://reports.example.net/build",
    "connection refused: https://10.0.0.12:8443/sync",
    "HTTP 429 Too Many Requests from https://api.example.com/v1/jobs (retry after 60 s)",
)

TASK_COLUMNS = (
    "id", "parent_id", "user_id", "name", "status", "priority", "inputs", "params", "schemas",
    "dependencies", "result", "error", "progress", "created_at", "updated_at", "started_at",
    "completed_at", "schedule_type", "schedule_expression", "schedule_timezone",
    "schedule_enabled", "run_count", "next_run_at", "last_run_at", "schedule_misfire",
    "schedule_overlap", "schedule_jitter_seconds", "schedule_anchor_at", "due_at",
    "current_run_id", "schedule_paused", "schedule_pause_note", "pause_after_failures",
    "schedule_mode", "alert_late_after_seconds", "consecutive_failures", "schedule_skip_count",
)  # fmt: skip
RUN_COLUMNS = (
    "id", "task_id", "user_id", "trigger", "scheduled_for", "started_at", "finished_at",
    "status", "attempt", "error", "result", "instance_id", "lease_expires_at", "created_at",
    "reason",
)  # fmt: skip
AUDIT_COLUMNS = ("id", "at", "actor", "user_id", "action", "target_type", "target_id", "fields")
ENDPOINT_COLUMNS = (
    "id", "user_id", "url", "description", "events", "secret_encrypted", "enabled",
    "disabled_reason", "failing_since", "created_at", "updated_at",
)  # fmt: skip
DELIVERY_COLUMNS = (
    "id", "endpoint_id", "user_id", "event_type", "body", "status", "attempts",
    "next_attempt_at", "last_status_code", "last_error", "created_at", "delivered_at",
)  # fmt: skip
INSTANCE_COLUMNS = (
    "id", "host", "pid", "mode", "user_filter", "state", "started_at", "heartbeat_at", "stats",
)  # fmt: skip


# ---------------------------------------------------------------------- seeding


@dataclass
class SeedTask:
    id: str
    user_id: str
    kind: str
    expression: str
    period: int
    zone: str
    next_run_at: datetime | None
    enabled: bool
    paused: bool
    created: datetime
    runs: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Seeded:
    heavy_task_id: str
    heavy_runs: int
    viewer_tasks: int
    max_runs_other_task: int
    counts: dict[str, int]
    seconds: dict[str, float]


def user_of(index: int, users: int) -> str:
    return f"user_{index % users:02d}"


def make_tasks(count: int, users: int, now: datetime, rng: random.Random) -> list[SeedTask]:
    tasks = []
    for index in range(count):
        kind, expression, period = rng.choice(SCHEDULES)
        zone = ZONES[rng.randrange(len(ZONES))]
        enabled = rng.random() >= 0.02
        paused = enabled and rng.random() < 0.05
        # Created up to 400 days ago; an interval's grid starts at its creation.
        created = now - timedelta(seconds=rng.uniform(86400, 400 * 86400))
        schedule = Schedule.parse(kind, expression, zone, anchor_at=created)
        tasks.append(
            SeedTask(
                id=str(uuid.uuid4()),
                user_id=user_of(index, users),
                kind=kind,
                expression=expression,
                period=period,
                zone=zone,
                next_run_at=schedule.next_after(now) if enabled else None,
                enabled=enabled,
                paused=paused,
                created=created,
            )
        )
    # The page of one task: user_00's first task runs every 5 minutes and has the most history.
    heavy = tasks[0]
    heavy.kind, heavy.expression, heavy.period, heavy.zone = "interval", "5m", 300, "UTC"
    heavy.enabled, heavy.paused = True, False
    heavy.created = now - timedelta(days=40, seconds=rng.uniform(0, 300))
    heavy.next_run_at = Schedule.parse("interval", "5m", anchor_at=heavy.created).next_after(now)
    return tasks


def pick_run_status(rng: random.Random, paused: bool) -> str:
    if paused and rng.random() < 0.5:
        return "skipped"
    roll = rng.random()
    if roll < 0.84:
        return "completed"
    if roll < 0.93:
        return "failed"
    if roll < 0.97:
        return "skipped"
    if roll < 0.99:
        return "missed"
    return "timeout"


def make_runs(
    tasks: list[SeedTask], total: int, heavy_runs: int, now: datetime, rng: random.Random
) -> None:
    """Fill each task's `runs` (tuples in RUN_COLUMNS order), `total` in all."""
    running = min(8, total // 1000, len(tasks) - 1)
    total -= running
    heavy_runs = min(heavy_runs, total)
    # Frequent schedules get more runs (the square root of how many fit in 30 days), skewed.
    weights = [
        math.sqrt(30 * 86400 / task.period) * rng.lognormvariate(0, 0.8) for task in tasks[1:]
    ]
    scale = (total - heavy_runs) / sum(weights) if weights else 0
    shares = [heavy_runs] + [int(w * scale) for w in weights]
    for index in rng.sample(range(1, len(tasks)), k=min(len(tasks) - 1, total - sum(shares))):
        shares[index] += 1  # the remainder of the rounding, one each
    instances = ("sched-a:4242", "sched-b:4243")
    for task, share in zip(tasks, shares, strict=True):
        # Past occurrences: the last one before now, then one period apart going back.
        last = (task.next_run_at or now) - timedelta(seconds=task.period)
        while last > now - timedelta(seconds=60):
            last -= timedelta(seconds=task.period)
        ad_hoc = 0
        for k in range(share):
            if task is not tasks[0] and rng.random() < 0.04:
                ad_hoc += 1
                trigger = "manual" if rng.random() < 0.6 else "webhook"
                scheduled_for = None
                started = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
                status = "completed" if rng.random() < 0.9 else "failed"
            else:
                trigger = "schedule"
                scheduled_for = last - timedelta(seconds=(k - ad_hoc) * task.period)
                started = scheduled_for + timedelta(seconds=rng.expovariate(1 / 0.05))
                status = pick_run_status(rng, task.paused and k < 12)
            run_id = str(uuid.uuid4())
            if status in ("skipped", "missed"):
                reason = (
                    ("paused" if task.paused else "overlap: the previous run was still running")
                    if status == "skipped"
                    else "the scheduler was down past the misfire grace time"
                )
                when = scheduled_for or started
                row = (run_id, task.id, task.user_id, trigger, scheduled_for, None, None,
                       status, 0, None, None, None, None, when, reason)  # fmt: skip
            else:
                duration = rng.lognormvariate(-0.5, 1.3)
                if status == "timeout":
                    duration = 30.0
                finished = started + timedelta(seconds=duration)
                error = rng.choice(ERRORS) if status in ("failed", "timeout") else None
                result = (
                    json.dumps({"status_code": 200, "elapsed_ms": round(duration * 1000)})
                    if status == "completed"
                    else None
                )
                instance = rng.choice(instances)
                row = (run_id, task.id, task.user_id, trigger, scheduled_for, started, finished,
                       status, 1, error, result, instance, None, started, None)  # fmt: skip
            task.runs.append(row)
    # A few running now (their tasks in progress), on the most recent occurrence.
    for task in rng.sample([task for task in tasks[1:] if task.enabled], k=running):
        started = now - timedelta(seconds=rng.uniform(1, 120))
        row = (str(uuid.uuid4()), task.id, task.user_id, "schedule", started, started, None,
               "running", 1, None, None, instances[0], now + timedelta(minutes=5), started,
               None)  # fmt: skip
        task.runs.append(row)


def task_record(task: SeedTask, index: int, now: datetime, rng: random.Random) -> tuple[Any, ...]:
    finished = [run for run in task.runs if run[6] is not None]
    last = max(finished, key=lambda run: run[6]) if finished else None
    running = next((run for run in task.runs if run[7] == "running"), None)
    trailing_failures = 0
    for run in sorted(finished, key=lambda run: run[6], reverse=True):
        if run[7] not in ("failed", "timeout"):
            break
        trailing_failures += 1
    if running is not None:
        status = "in_progress"
    elif last is None:
        status = "pending"
    else:
        status = "failed" if last[7] in ("failed", "timeout") else "completed"
    created = task.created
    verb, thing = VERBS[index % len(VERBS)], THINGS[(index // len(VERBS)) % len(THINGS)]
    name = f"{verb}-{thing}-{index:05d}"
    inputs = json.dumps(
        {"url": f"https://api.example.com/v1/{thing}/{verb}", "method": "POST", "timeout": 30}
    )
    return (
        task.id, None, task.user_id, name, status, rng.choice((1, 2, 2, 3)), inputs,
        '{"executor_id": "rest_executor"}', "{}", "[]",
        last[10] if last is not None else None,
        last[9] if last is not None else None,
        0.0 if running else 1.0,
        created, last[6] if last is not None else created,
        (running or last)[5] if (running or last) is not None else None,
        last[6] if last is not None and running is None else None,
        task.kind, task.expression, task.zone, task.enabled, len(task.runs),
        task.next_run_at, last[5] if last is not None else None,
        "run_once", "skip", 0, created, task.next_run_at if task.enabled else None,
        running[0] if running is not None else None,
        task.paused, "maintenance window" if task.paused else None,
        5 if index % 3 == 0 else None, "internal", 300 if index % 4 == 0 else None,
        trailing_failures, 0,
    )  # fmt: skip


def audit_records(
    tasks: list[SeedTask], count: int, now: datetime, rng: random.Random
) -> list[tuple[Any, ...]]:
    actions = (
        ("task.create", ["name", "params", "inputs", "schedule_type", "schedule_expression"]),
        ("task.update", ["schedule_expression"]),
        ("task.update", ["schedule_paused", "schedule_pause_note"]),
        ("task.update", ["inputs"]),
        ("task.run.manual", []),
        ("task.cancel", []),
    )
    records = []
    for _ in range(count):
        task = rng.choice(tasks)
        action, fields = rng.choice(actions)
        actor = task.user_id if rng.random() < 0.8 else ADMIN
        at = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        row = (secrets.token_hex(12), at, actor, task.user_id, action, "task", task.id,
               json.dumps(fields))  # fmt: skip
        records.append(row)
    return records


def notification_records(
    users: int, secret_key: str, now: datetime, rng: random.Random, per_endpoint: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    box = SecretBox(secret_key)
    events = ["run.failed", "run.missed", "schedule.paused", "trigger.overdue"]
    endpoints, deliveries = [], []
    for user_index in range(min(users, 4)):
        user = f"user_{user_index:02d}"
        for number in range(2):
            endpoint_id = "ep_" + secrets.token_hex(8)
            enabled = not (user_index == 3 and number == 1)
            created = now - timedelta(days=rng.uniform(10, 90))
            row = (endpoint_id, user, f"https://hooks.example.com/{user}/{number}",
                   f"{'on-call pager' if number == 0 else 'team chat'} for {user}",
                   json.dumps(events if number == 0 else [*events, "run.succeeded"]),
                   box.seal("whsec_" + secrets.token_urlsafe(24)), enabled,
                   None if enabled else "failing since 3 days", None, created, created)  # fmt: skip
            endpoints.append(row)
            for _ in range(per_endpoint):
                at = now - timedelta(seconds=rng.uniform(0, 7 * 86400))
                event = rng.choice(events)
                status = rng.choices(
                    ("delivered", "failed", "pending", "cancelled"), (85, 8, 5, 2)
                )[0]
                body = json.dumps(
                    {"type": event, "timestamp": at.isoformat(), "data": {"task_id": "..."}}
                )
                ok = status == "delivered"
                row = ("msg_" + secrets.token_hex(12), endpoint_id, user, event, body, status,
                       1 if ok else rng.randint(1, 8), at + timedelta(minutes=5),
                       200 if ok else 502, None if ok else "HTTP 502 Bad Gateway", at,
                       at + timedelta(milliseconds=80) if ok else None)  # fmt: skip
                deliveries.append(row)
    return endpoints, deliveries


def instance_records(now: datetime) -> list[tuple[Any, ...]]:
    records = []
    for number, host in enumerate(("sched-a", "sched-b")):
        started = now - timedelta(hours=30 + number)
        stats = {
            "state": "running",
            "started_at": started.isoformat(),
            "tasks_executed": 41_234 + number,
            "tasks_succeeded": 39_001,
            "tasks_failed": 2_233,
            "active_tasks": 2,
            "tasks_timed_out": 12,
            "runs_reclaimed": 0,
            "last_poll_at": now.isoformat(),
            "next_wake_at": (now + timedelta(seconds=20)).isoformat(),
            "instance_id": f"{host}:{4242 + number}",
            "extra": {},
            "heartbeat_interval": 5.0,
        }
        row = (f"{host}:{4242 + number}", host, 4242 + number, "internal", None, "running",
               started, now, json.dumps(stats))  # fmt: skip
        records.append(row)
    return records


async def seed(url: str, args: argparse.Namespace, secret_key: str) -> Seeded:
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    tasks = make_tasks(args.tasks, args.users, now, rng)
    make_runs(tasks, args.runs, args.heavy_runs, now, rng)
    task_rows = [task_record(task, index, now, rng) for index, task in enumerate(tasks)]
    run_rows = [run for task in tasks for run in task.runs]
    audit_rows = audit_records(tasks, args.audit, now, rng)
    endpoints, deliveries = notification_records(args.users, secret_key, now, rng, 40)
    instances = instance_records(now)
    seconds["generate"] = time.perf_counter() - began

    began = time.perf_counter()
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with connection.transaction():
            for table, columns, records in (
                ("tasks", TASK_COLUMNS, task_rows),
                ("task_runs", RUN_COLUMNS, run_rows),
                ("audit_log", AUDIT_COLUMNS, audit_rows),
                ("notification_endpoints", ENDPOINT_COLUMNS, endpoints),
                ("notification_deliveries", DELIVERY_COLUMNS, deliveries),
                ("scheduler_instances", INSTANCE_COLUMNS, instances),
            ):
                await connection.copy_records_to_table(table, records=records, columns=columns)
        seconds["copy"] = time.perf_counter() - began
        began = time.perf_counter()
        await connection.execute("VACUUM ANALYZE")
        seconds["vacuum_analyze"] = time.perf_counter() - began
    finally:
        await connection.close()
    others = [len(task.runs) for task in tasks[1:]]
    return Seeded(
        heavy_task_id=tasks[0].id,
        heavy_runs=len(tasks[0].runs),
        viewer_tasks=sum(1 for task in tasks if task.user_id == VIEWER),
        max_runs_other_task=max(others) if others else 0,
        counts={
            "tasks": len(task_rows),
            "runs": len(run_rows),
            "audit": len(audit_rows),
            "endpoints": len(endpoints),
            "deliveries": len(deliveries),
            "scheduler_instances": len(instances),
        },
        seconds={key: round(value, 2) for key, value in seconds.items()},
    )


async def create_and_seed(
    args: argparse.Namespace, secret_key: str, created: list[str]
) -> tuple[str, Seeded, float]:
    name, url = await create_pg()
    created.append(name)
    database = Database(url)
    began = time.perf_counter()
    try:
        await database.upgrade()
    finally:
        await database.dispose()
    migrated = time.perf_counter() - began
    seeded = await seed(url, args, secret_key)
    seeded.seconds["migrate"] = round(migrated, 2)
    return url, seeded, time.perf_counter() - began


# ---------------------------------------------------------------------- the pages


def pages(heavy_task_id: str) -> list[tuple[str, str]]:
    return [
        ("overview", "/ui/"),
        ("upcoming", "/ui/upcoming"),
        ("runs", "/ui/runs"),
        ("runs failed", "/ui/runs?status=failed"),
        ("schedulers", "/ui/schedulers"),
        ("audit", "/ui/audit"),
        ("notifications", "/ui/notifications"),
        ("task (heavy)", f"/ui/tasks/{heavy_task_id}"),
    ]


def start_server(url: str, home: Path, env_extra: dict[str, str], label: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APFLOW_")}
    env |= {"APFLOW_DATABASE_URL": url, "APFLOW_HOME": str(home)} | env_extra
    if "UI_BENCH_SQL_LOG" in env_extra:
        command = [sys.executable, "-c", SQL_HOOK]
    else:
        command = [sys.executable, "-m", "apflow_server.cli.main"]
    command += ["serve", "--port", str(port), "--no-scheduler", "--log-level", "warning"]
    return Server(command, env, port, home / f"{label}.log")


def new_client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=60, follow_redirects=False)


def sign_in(client: httpx.Client, token: str) -> str:
    """Sign the client in as a browser does: GET /ui/login (the form's CSRF token and its
    cookie), then POST the token with it and an Origin of this server. The client then holds
    the `apflow_session` cookie. Returns "ok", or what went wrong."""
    form = client.get("/ui/login")
    if form.status_code == 404:
        return "no /ui/login (404)"
    found = re.search(r'name="csrf_token"\s+value="([^"]*)"', form.text)
    data = {"token": token} | ({"csrf_token": html.unescape(found.group(1))} if found else {})
    origin = f"{client.base_url.scheme}://{client.base_url.host}:{client.base_url.port}"
    response = client.post("/ui/login", data=data, headers={"Origin": origin})
    if response.status_code >= 400:
        error = re.search(r'class="error"[^>]*>([^<]*)<', response.text)
        why = html.unescape(error.group(1)) if error else response.text[:200]
        return f"/ui/login answered {response.status_code}: {why}"
    if "apflow_session" not in client.cookies:
        return f"/ui/login answered {response.status_code} without an apflow_session cookie"
    return "ok"


@dataclass
class PageResult:
    viewer: str
    page: str
    path: str
    status: int | None = None
    note: str = ""
    times_ms: list[float] = field(default_factory=list)
    body_kb: float = 0.0
    wire_kb: float = 0.0

    def figures(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "viewer": self.viewer,
            "page": self.page,
            "path": self.path,
            "status": self.status,
        }
        if self.note:
            data["note"] = self.note
        if self.times_ms:
            data |= {
                "n": len(self.times_ms),
                "p50_ms": round(percentile(self.times_ms, 0.5), 1),
                "p95_ms": round(percentile(self.times_ms, 0.95), 1),
                "max_ms": round(max(self.times_ms), 1),
                "kb": round(self.body_kb, 1),
                "wire_kb": round(self.wire_kb, 1),
                "meets_targets": self.meets_targets,
            }
        return data

    @property
    def meets_targets(self) -> bool:
        return (
            bool(self.times_ms)
            and percentile(self.times_ms, 0.95) < TARGET_P95_MS
            and self.body_kb < TARGET_KB
            and self.status == 200
        )


def time_page(client: httpx.Client, viewer: str, page: str, path: str, n: int) -> PageResult:
    result = PageResult(viewer, page, path)
    for _ in range(WARMUP):
        response = client.get(path)
        result.status = response.status_code
        if response.status_code == 404:
            result.note = "missing (404)"
            return result
    if result.status != 200:
        location = response.headers.get("location")
        result.note = f"answered {result.status}" + (f" -> {location}" if location else "")
        if result.status in (301, 302, 303, 307, 308, 401, 403):
            return result
    for _ in range(n):
        started = time.perf_counter()
        response = client.get(path)
        body = response.content
        result.times_ms.append((time.perf_counter() - started) * 1000)
        result.body_kb = len(body) / 1024
        result.wire_kb = response.num_bytes_downloaded / 1024
        result.status = response.status_code
    return result


def viewers(secret: str) -> list[tuple[str, str]]:
    return [
        ("admin", issue_token(secret, ADMIN, roles=["admin"], expires_in=3600)),
        (VIEWER, issue_token(secret, VIEWER, expires_in=3600)),
    ]


def measure(base: str, secret: str, heavy: str, n: int) -> tuple[list[PageResult], dict[str, str]]:
    results: list[PageResult] = []
    logins: dict[str, str] = {}
    for viewer, token in viewers(secret):
        with new_client(base) as client:
            login = sign_in(client, token)
            logins[viewer] = login
            for page, path in pages(heavy):
                if login != "ok":
                    results.append(PageResult(viewer, page, path, note="not signed in"))
                    continue
                results.append(time_page(client, viewer, page, path, n))
    return results, logins


# ---------------------------------------------------------------------- SQL profile

# Runs `apflow` with every statement's start (CLOCK_MONOTONIC, shared by all processes on
# Linux), duration, text and parameters appended to $UI_BENCH_SQL_LOG.
SQL_HOOK = r"""
import json, os, sys, time
from sqlalchemy import event
from sqlalchemy.engine import Engine

_out = open(os.environ["UI_BENCH_SQL_LOG"], "a", buffering=1)

@event.listens_for(Engine, "before_cursor_execute")
def _before(conn, cursor, statement, parameters, context, executemany):
    conn.info.setdefault("ui_bench_started", []).append(time.monotonic())

@event.listens_for(Engine, "after_cursor_execute")
def _after(conn, cursor, statement, parameters, context, executemany):
    started = conn.info["ui_bench_started"].pop()
    params = None if executemany else parameters
    _out.write(json.dumps({
        "t": started, "ms": (time.monotonic() - started) * 1000, "sql": statement,
        "params": [[type(p).__name__, p] for p in params] if isinstance(params, (list, tuple))
        else None,
    }, default=str) + "\n")

from apflow_server.cli.main import main
sys.argv = ["apflow", *sys.argv[1:]]
main()
"""


def literal(kind: str, value: Any) -> str:
    if value is None:
        return "NULL"
    if kind == "bool":
        return "TRUE" if value else "FALSE"
    if kind in ("int", "float"):
        return str(value)
    if kind == "datetime":
        return "'" + str(value) + "'::timestamptz"
    return "'" + str(value).replace("'", "''") + "'"


def inline(statement: str, params: list[list[Any]] | None) -> str | None:
    if params is None:
        return statement if "$1" not in statement else None
    for number in range(len(params), 0, -1):
        kind, value = params[number - 1]
        if kind in ("list", "tuple", "dict"):
            return None
        statement = statement.replace(f"${number}", literal(kind, value))
    return statement


def shape(statement: str) -> str:
    return re.sub(r"\s+", " ", statement).strip()


def profile_sql(
    base: str, log: Path, secret: str, heavy: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (viewer, page): statements per request, their time, the slowest one, the most
    repeated one (N+1 queries show there)."""
    windows: list[tuple[str, str, float, float]] = []
    for viewer, token in viewers(secret):
        with new_client(base) as client:
            if sign_in(client, token) != "ok":
                continue
            for page, path in pages(heavy):
                if client.get(path).status_code != 200:
                    continue
                for _ in range(2):
                    started = time.monotonic()
                    client.get(path)
                    windows.append((viewer, page, started, time.monotonic()))
    time.sleep(0.2)  # the hook's last lines
    statements = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for viewer, page, started, ended in windows:
        mine = [s for s in statements if started <= s["t"] <= ended]
        if not mine:
            continue
        slowest = max(mine, key=lambda s: s["ms"])
        repeated = Counter(shape(s["sql"]) for s in mine).most_common(1)[0]
        entry = {
            "queries": len(mine),
            "sql_ms": round(sum(s["ms"] for s in mine), 1),
            "slowest_ms": round(slowest["ms"], 1),
            "slowest_sql": shape(slowest["sql"]),
            "slowest_inline": inline(slowest["sql"], slowest["params"]),
            "most_repeated": repeated[1],
            "most_repeated_sql": repeated[0],
        }
        key = (viewer, page)
        if key not in found or entry["sql_ms"] < found[key]["sql_ms"]:
            found[key] = entry  # the faster of the two requests: the warm one
    return found


def profile_python(
    base: str, pid: int, py_spy: str, secret: str, heavy: str, misses: set[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[float, str]]]:
    """Per page that misses a target: where the server's time goes (py-spy samples while the
    page is requested for 5 s), as the project's frames (and templates) by inclusive share."""
    found: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for viewer, token in viewers(secret):
        with new_client(base) as client:
            if sign_in(client, token) != "ok":
                continue
            for page, path in pages(heavy):
                if (viewer, page) not in misses:
                    continue
                output = Path(tempfile.mkstemp(suffix=".txt")[1])
                spy = subprocess.Popen(
                    [py_spy, "record", "-p", str(pid), "-d", "5", "-r", "200", "-f", "raw",
                     "-o", str(output)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                deadline = time.monotonic() + 5.5
                while time.monotonic() < deadline and spy.poll() is None:
                    client.get(path)
                spy.wait(timeout=30)
                found[(viewer, page)] = hot_frames(output.read_text())
                output.unlink()
    return found


def hot_frames(raw: str, top: int = 12) -> list[tuple[float, str]]:
    """The project's functions and the templates by inclusive share of the busy samples."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any("selectors.py" in frame or "Condition.wait" in frame for frame in frames[-2:]):
            continue  # idle: waiting for work
        total += int(count)
        for frame in set(frames):
            mine = "apflow_server/" in frame and "/cli/" not in frame
            mine = mine and "/api/" not in frame  # the middlewares: on every stack
            if mine or ".html:" in frame or "croniter" in frame or "jinja2" in frame:
                inclusive[frame] += int(count)
    return [(round(100 * n / total, 1), frame) for frame, n in inclusive.most_common(top)]


def profile(
    url: str,
    home: Path,
    env_extra: dict[str, str],
    secret: str,
    heavy: str,
    misses: set[tuple[str, str]],
    py_spy: str | None,
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], list[tuple[float, str]]]]:
    log = home / "sql.jsonl"
    log.write_text("")
    server = start_server(url, home, env_extra | {"UI_BENCH_SQL_LOG": str(log)}, "profile")
    try:
        base = f"http://127.0.0.1:{server.port}"
        sql = profile_sql(base, log, secret, heavy)
        python: dict[tuple[str, str], list[tuple[float, str]]] = {}
        if py_spy and misses:
            python = profile_python(base, server.process.pid, py_spy, secret, heavy, misses)
    finally:
        server.stop()
    return sql, python


async def explain(url: str, statement: str) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement)
        return "\n".join(row[0] for row in rows)
    finally:
        await connection.close()


# ---------------------------------------------------------------------- report


def markdown(results: list[PageResult], sql: dict[tuple[str, str], dict[str, Any]]) -> str:
    lines = [
        "| viewer | page | status | p50 ms | p95 ms | max ms | KB | SQL stmts | SQL ms "
        "| other ms | targets |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        entry = sql.get((result.viewer, result.page), {})
        queries = entry.get("queries", "")
        sql_ms = entry.get("sql_ms", "")
        if not result.times_ms:
            lines.append(
                f"| {result.viewer} | `{result.path}` | {result.status or ''} | | | | "
                f"| | | | {result.note} |"
            )
            continue
        figures = result.figures()
        other = round(figures["p50_ms"] - sql_ms, 1) if sql_ms != "" else ""
        verdict = "ok" if result.meets_targets else "**MISS**"
        if result.note:
            verdict += f" ({result.note})"
        lines.append(
            f"| {result.viewer} | `{result.path}` | {result.status} | {figures['p50_ms']} "
            f"| {figures['p95_ms']} | {figures['max_ms']} | {figures['kb']} "
            f"| {queries} | {sql_ms} | {other} | {verdict} |"
        )
    return "\n".join(lines)


def details(
    url: str,
    results: list[PageResult],
    sql: dict[tuple[str, str], dict[str, Any]],
    python: dict[tuple[str, str], list[tuple[float, str]]],
    every: bool,
) -> str:
    """For each page that misses a target: its slowest statement with its plan, its most
    repeated statement, and where the server's time goes."""
    out: list[str] = []
    for result in results:
        key = (result.viewer, result.page)
        if not result.times_ms or (result.meets_targets and not every):
            continue
        p95 = percentile(result.times_ms, 0.95)
        out.append(
            f"\n### {result.viewer} `{result.path}`: p95 {p95:.0f} ms, {result.body_kb:.0f} KB"
        )
        entry = sql.get(key)
        if entry is not None:
            out.append(
                f"{entry['queries']} statements, {entry['sql_ms']} ms in all; the slowest "
                f"{entry['slowest_ms']} ms; the most repeated x{entry['most_repeated']}: "
                f"`{entry['most_repeated_sql'][:300]}`\n\nslowest: `{entry['slowest_sql'][:1500]}`"
            )
            if entry["slowest_inline"]:
                try:
                    plan = asyncio.run(explain(url, entry["slowest_inline"]))
                except Exception as exc:  # a statement the inlining got wrong
                    plan = f"(EXPLAIN failed: {exc})"
                out.append("```\n" + plan + "\n```")
        frames = python.get(key)
        if frames:
            out.append("server time by frame (py-spy, inclusive share of busy samples):")
            out.extend(f"    {share:5.1f}%  {frame}" for share, frame in frames)
    return "\n".join(out)


def load() -> float:
    return os.getloadavg()[0]


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def find_py_spy() -> str | None:
    return shutil.which("py-spy") or next(
        (str(p) for p in [Path("/tmp/bench-venv/bin/py-spy")] if p.exists()), None
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--heavy-runs", type=int, default=5_000, help="runs of the task page's")
    parser.add_argument("--audit", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seed-only", action="store_true", help="seed, report, drop; no server")
    parser.add_argument("--no-profile", action="store_true", help="no SQL or py-spy pass")
    parser.add_argument(
        "--details", action="store_true", help="statements and plans of every page, not only slow"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    args = parser.parse_args()

    # SIGTERM ends the run like Ctrl-C does: through the finally clauses, dropping the database.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    secret = secrets.token_urlsafe(32)
    secret_key = secrets.token_urlsafe(32)
    created: list[str] = []
    load_before = load()
    try:
        with tempfile.TemporaryDirectory(prefix="apflow-ui-bench-") as tmp:
            home = Path(tmp)
            url, seeded, seed_seconds = asyncio.run(create_and_seed(args, secret_key, created))
            print(
                f"seeded {seeded.counts} in {seed_seconds:.1f} s {seeded.seconds}; "
                f"{seeded.viewer_tasks} tasks of {VIEWER}; task page {seeded.heavy_task_id} "
                f"with {seeded.heavy_runs} runs (the most of any other task: "
                f"{seeded.max_runs_other_task})",
                file=sys.stderr,
            )
            summary: dict[str, Any] = {
                "tasks": seeded.counts["tasks"],
                "runs": seeded.counts["runs"],
                "seed_seconds": round(seed_seconds, 1),
                "seed_detail": seeded.seconds,
                "viewer_tasks": seeded.viewer_tasks,
                "heavy_task_runs": seeded.heavy_runs,
                "requests": args.requests,
                "load_before": round(load_before, 2),
            }
            if args.seed_only:
                print(json.dumps(summary))
                return
            env_extra = {"APFLOW_JWT_SECRET": secret, "APFLOW_SECRET_KEY": secret_key}
            server = start_server(url, home, env_extra, "server")
            try:
                base = f"http://127.0.0.1:{server.port}"
                results, logins = measure(base, secret, seeded.heavy_task_id, args.requests)
            finally:
                server.stop()
            summary["load_after"] = round(load(), 2)
            summary["logins"] = logins
            sql: dict[tuple[str, str], dict[str, Any]] = {}
            python: dict[tuple[str, str], list[tuple[float, str]]] = {}
            misses = {(r.viewer, r.page) for r in results if r.times_ms and not r.meets_targets}
            py_spy = find_py_spy()
            if not args.no_profile and any(result.times_ms for result in results):
                sql, python = profile(
                    url, home, env_extra, secret, seeded.heavy_task_id, misses, py_spy
                )
            for viewer, login in logins.items():
                if login != "ok":
                    print(f"{viewer} not signed in: {login}\n")
            print(markdown(results, sql))
            print(
                f"\n{args.requests} sequential requests per page after {WARMUP} warm-up; "
                "KB: the body, decoded (wire_kb in the JSON: as transferred); "
                "SQL: one warm request with statement timing on; other ms: p50 - SQL ms "
                "(Python, templates, HTTP)."
            )
            if (misses or args.details) and not args.no_profile:
                if py_spy is None and misses:
                    print("\n(py-spy not found: no Python profile of the slow pages)")
                print(details(url, results, sql, python, args.details))
            summary["pages"] = [
                result.figures() | {
                    key: value
                    for key, value in sql.get((result.viewer, result.page), {}).items()
                    if key in ("queries", "sql_ms", "slowest_ms", "most_repeated")
                }
                for result in results
            ]  # fmt: skip
            timed = [result for result in results if result.times_ms]
            summary["all_meet_targets"] = all(r.meets_targets for r in timed) if timed else None
            print(json.dumps(summary))
    finally:
        for name in created:
            if args.keep:
                print(f"kept {ADMIN_URL.rsplit('/', 1)[0]}/{name}", file=sys.stderr)
            else:
                asyncio.run(drop_pg(name))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
