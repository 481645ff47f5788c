"""The scheduler's API mode against a live server: `apflow serve --no-scheduler` with
a JWT secret on a fresh database (SQLite file and PostgreSQL), in its own process with the
test executors; ApiSchedulers fire its schedules through JSON-RPC. Executions are counted by
the test_journal executor, which the server process appends to ($APFLOW_TEST_JOURNAL)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from api_support import (
    JWT_SECRET,
    SCHEDULER_SCRIPT,
    Api,
    ServerProcess,
    admin_token,
    assert_field,
    assert_stopped_gracefully,
    create_pg_database,
    drop_pg_database,
    server_env,
    token,
)

from apflow_server.config import Settings
from apflow_server.scheduler.api_mode import ApiError, ApiScheduler, resolve_token
from apflow_server.scheduler.base import SchedulerConfig, SchedulerState
from apflow_server.storage.database import Database
from apflow_server.storage.models import SchedulerInstance


@dataclass
class Live:
    server: ServerProcess
    journal: Path
    home: Path
    url: str

    def rpc(self, method: str, params: Any, auth: str | None = None) -> Any:
        response = httpx.post(
            f"{self.server.url}/tasks/",
            json={"jsonrpc": "2.0", "method": method, "params": params, "id": 1},
            headers={"Authorization": f"Bearer {auth or admin_token()}"},
            timeout=30,
        )
        body = response.json()
        assert "error" not in body, body
        return body["result"]

    def runs(self, task_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.rpc(
            "tasks.runs.list", {"task_id": task_id, "limit": 1000}
        )["items"]
        return items

    def journal_lines(self, task_ids: set[str]) -> list[tuple[str, str]]:
        lines = self.journal.read_text().splitlines() if self.journal.exists() else []
        rows = [tuple(line.split()[:2]) for line in lines]
        return [(task, occurrence) for task, occurrence in rows if task in task_ids]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp(f"apimode-{request.param}")
    url = (
        f"sqlite+aiosqlite:///{home / 'api.db'}"
        if request.param == "sqlite"
        else create_pg_database()
    )
    journal = home / "journal.txt"
    journal.touch()
    env = server_env(
        home,
        APFLOW_DATABASE_URL=url,
        APFLOW_JWT_SECRET=JWT_SECRET,
        APFLOW_TEST_JOURNAL=str(journal),
    )
    server = ServerProcess(env, "--no-scheduler")
    try:
        server.wait_ready()
        yield Live(server, journal, home, url)
    finally:
        code = server.stop()
        if request.param == "postgresql":
            drop_pg_database(url)
    assert_stopped_gracefully(server, code)


def at(seconds: float) -> datetime:
    """A whole second `seconds` from now (UTC)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


def journal_task(live: Live, name: str, **schedule: Any) -> dict[str, Any]:
    task: dict[str, Any] = live.rpc(
        "tasks.create",
        {
            "name": name,
            "params": {"executor_id": "test_journal"},
            "schedule_enabled": True,
            **schedule,
        },
    )
    return task


def wait_for_runs(
    live: Live, expected: dict[str, int], timeout: float = 20
) -> dict[str, list[Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = {task_id: live.runs(task_id) for task_id in expected}
        finished = {
            task_id: [r for r in items if r["status"] != "running"]
            for task_id, items in runs.items()
        }
        if all(len(finished[t]) >= n for t, n in expected.items()):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"runs did not finish: {runs}")
        time.sleep(0.1)


def scheduler_settings(live: Live, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "home": live.home,
        "database_url": "sqlite+aiosqlite:///unused-in-api-mode.db",
        "api_server_url": live.server.url,
        "jwt_secret": JWT_SECRET,
        **overrides,
    }
    return Settings(**values)


async def test_an_api_scheduler_fires_once_and_interval_schedules(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="apflow_server.scheduler")
    # Due already: with --no-scheduler, nobody fires it until an API scheduler runs.
    overdue_at = at(-1)
    overdue = await asyncio.to_thread(
        journal_task,
        live,
        "overdue",
        schedule_type="once",
        schedule_expression=overdue_at.isoformat(),
    )
    start = at(2)
    every = await asyncio.to_thread(
        journal_task,
        live,
        "every second",
        schedule_type="interval",
        schedule_expression="1",
        schedule_start_at=start.isoformat(),
        max_runs=3,
    )
    await asyncio.sleep(1)
    assert await asyncio.to_thread(live.runs, overdue["id"]) == []

    settings = scheduler_settings(live)
    api_token = resolve_token(settings, settings.jwt_secret)
    assert api_token.source == "generated"
    assert api_token.subject == f"scheduler@{socket.gethostname()}"
    scheduler = ApiScheduler(SchedulerConfig(poll_interval=0.5), settings, api_token)
    await scheduler.start()
    assert scheduler.state is SchedulerState.RUNNING
    try:
        runs = await asyncio.to_thread(wait_for_runs, live, {overdue["id"]: 1, every["id"]: 3})
    finally:
        await scheduler.stop()
    assert scheduler.state is SchedulerState.STOPPED

    assert [(r["trigger"], r["status"]) for r in runs[overdue["id"]]] == [("schedule", "completed")]
    assert datetime.fromisoformat(runs[overdue["id"]][0]["scheduled_for"]) == overdue_at
    interval_runs = runs[every["id"]]
    assert {(r["trigger"], r["status"]) for r in interval_runs} == {("schedule", "completed")}
    assert sorted(datetime.fromisoformat(r["scheduled_for"]) for r in interval_runs) == [
        start + timedelta(seconds=n) for n in range(3)
    ]
    journal = Counter(live.journal_lines({overdue["id"], every["id"]}))
    assert sum(journal.values()) == 4
    assert set(journal.values()) == {1}
    done = live.rpc("tasks.get", {"task_id": every["id"]})
    assert (done["schedule_enabled"], done["next_run_at"], done["run_count"]) == (False, None, 3)
    once = live.rpc("tasks.get", {"task_id": overdue["id"]})
    assert (once["schedule_enabled"], once["next_run_at"]) == (False, None)
    assert scheduler.stats.tasks_executed == 4

    started = [r.getMessage() for r in caplog.records if "started" in r.getMessage()]
    assert any(
        f"token subject=scheduler@{socket.gethostname()} source=generated" in line
        and "mode=api" in line
        for line in started
    ), started


def spawn_scheduler(live: Live, index: int) -> subprocess.Popen[str]:
    home = live.home / f"scheduler-{index}"
    home.mkdir(exist_ok=True)
    env = server_env(home, APFLOW_API_SERVER_URL=live.server.url, APFLOW_JWT_SECRET=JWT_SECRET)
    process = subprocess.Popen(
        [sys.executable, str(SCHEDULER_SCRIPT), "--poll", "0.5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process


def await_ready(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY"):
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"the API scheduler did not start: {line!r} {err}")
    return line.split()[1]


def stop_scheduler(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def test_two_api_schedulers_never_run_an_occurrence_twice(live: Live) -> None:
    processes = [spawn_scheduler(live, index) for index in range(2)]
    try:
        instances = [await_ready(process) for process in processes]
        assert instances[0] != instances[1]
        start = at(2)
        tasks = [
            journal_task(
                live,
                f"shared-{n}",
                schedule_type="interval",
                schedule_expression="1",
                schedule_start_at=start.isoformat(),
                max_runs=4,
            )
            for n in range(2)
        ]
        once_at = at(2)
        tasks.append(
            journal_task(
                live, "shared-once", schedule_type="once", schedule_expression=once_at.isoformat()
            )
        )
        expected = {tasks[0]["id"]: 4, tasks[1]["id"]: 4, tasks[2]["id"]: 1}
        runs = wait_for_runs(live, expected)
    finally:
        results = [stop_scheduler(process) for process in processes]

    for code, out, err in results:
        assert code == 0, err
        assert "STOPPED" in out, out
        assert "Traceback" not in err, err
        assert f"token subject=scheduler@{socket.gethostname()} source=generated" in err, err
    executed = [int(out.split("executed=")[1].split()[0]) for _, out, _ in results]
    assert sum(executed) == 9  # every occurrence triggered by exactly one of them

    for task in tasks:
        history = runs[task["id"]]
        assert len(history) == expected[task["id"]], history
        assert {(r["trigger"], r["status"]) for r in history} == {("schedule", "completed")}
        occurrences = [r["scheduled_for"] for r in history]
        assert len(set(occurrences)) == len(occurrences)
        assert all(occurrences)
    journal = Counter(live.journal_lines({task["id"] for task in tasks}))
    assert sum(journal.values()) == 9, journal
    assert set(journal.values()) == {1}, journal  # no (task, occurrence) executed twice


def test_the_configured_admin_token_is_used_as_is(live: Live) -> None:
    configured = admin_token("ops-robot")
    settings = scheduler_settings(live, admin_auth_token=configured, jwt_secret=None)
    api_token = resolve_token(settings, None)
    assert (api_token.value, api_token.subject, api_token.source) == (
        configured,
        "ops-robot",
        "config",
    )
    with pytest.raises(ApiError):
        resolve_token(scheduler_settings(live, jwt_secret=None), None)


async def test_an_api_scheduler_with_a_refused_token_does_not_start(live: Live) -> None:
    settings = scheduler_settings(live, admin_auth_token=token("x", secret="y" * 64))
    scheduler = ApiScheduler(
        SchedulerConfig(poll_interval=0.5), settings, resolve_token(settings, None)
    )
    with pytest.raises(ApiError):
        await scheduler.start()
    assert scheduler.state is SchedulerState.ERROR


def test_the_signed_admin_token_carries_exp_audience_and_issuer(tmp_path: Path) -> None:
    """A server that requires `aud` and `iss`: the API-mode scheduler signs its own admin
    token with them (and an `exp`), and it is accepted."""
    scope = {"APFLOW_JWT_AUDIENCE": "apflow-production", "APFLOW_JWT_ISSUER": "apflow-scheduler"}
    env = server_env(
        tmp_path,
        APFLOW_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'scoped.db'}",
        APFLOW_JWT_SECRET=JWT_SECRET,
        **scope,
    )
    server = ServerProcess(env, "--no-scheduler")
    try:
        server.wait_ready()
        settings = Settings.from_env({**env, "APFLOW_API_SERVER_URL": server.url})
        api_token = resolve_token(settings, settings.jwt_secret)
        claims = jwt.decode(
            api_token.value, JWT_SECRET, algorithms=["HS256"], audience="apflow-production"
        )
        assert claims["iss"] == "apflow-scheduler" and claims["exp"] > time.time()

        async def start_and_stop(settings: Settings) -> None:
            scheduler = ApiScheduler(
                SchedulerConfig(poll_interval=0.5),
                settings,
                resolve_token(settings, settings.jwt_secret),
            )
            await scheduler.start()
            assert scheduler.state is SchedulerState.RUNNING
            await scheduler.stop()

        asyncio.run(start_and_stop(settings))
        # The same scheduler without the audience: its token is refused, it does not start.
        unscoped = Settings.from_env(
            {**env, "APFLOW_API_SERVER_URL": server.url, "APFLOW_JWT_AUDIENCE": ""}
        )
        with pytest.raises(ApiError):
            asyncio.run(start_and_stop(unscoped))
    finally:
        code = server.stop()
    assert_stopped_gracefully(server, code)


def test_a_generated_token_is_signed_again_before_it_expires(live: Live) -> None:
    """A scheduler outlives its week-long token: it signs a fresh one when due, instead of
    being refused from then on."""
    env = server_env(live.home, APFLOW_JWT_SECRET=JWT_SECRET)
    settings = Settings.from_env({**env, "APFLOW_API_SERVER_URL": live.server.url})
    fresh = resolve_token(settings, settings.jwt_secret)
    expired = replace(
        fresh,
        value=token("scheduler@test", ["admin"], expires_in=-60),
        renew_at=0.0,  # due now
    )

    async def poll_once() -> Any:
        scheduler = ApiScheduler(SchedulerConfig(), settings, expired)
        scheduler._client = httpx.AsyncClient(
            timeout=30, headers={"Authorization": f"Bearer {expired.value}"}
        )
        try:
            due = await scheduler.call("tasks.scheduled.due", {"limit": 1})
            return due, scheduler.token
        finally:
            await scheduler._client.aclose()

    due, now_used = asyncio.run(poll_once())
    assert "items" in due
    assert now_used.value != expired.value and now_used.renew_at is not None
    assert now_used.renew_at > time.monotonic() + 5 * 86400


async def instance_row(live: Live, instance_id: str) -> SchedulerInstance | None:
    database = Database(live.url)
    try:
        async with database.transaction() as session:
            return await session.get(SchedulerInstance, instance_id)
    finally:
        await database.dispose()


async def test_an_api_scheduler_beats_through_the_server_whatever_its_poll(live: Live) -> None:
    """It has no database: the server records its instance row, every heartbeat interval
    while it sleeps its long poll, so `apflow scheduler status` sees it on any host."""
    settings = scheduler_settings(live)
    scheduler = ApiScheduler(
        SchedulerConfig(poll_interval=60, heartbeat_interval=1),
        settings,
        resolve_token(settings, JWT_SECRET),
    )

    await scheduler.start()
    try:
        beats = set()
        for _ in range(30):
            mine = await instance_row(live, scheduler.instance_id)
            if mine is not None:
                beats.add(mine.heartbeat_at)
                assert (mine.mode, mine.state) == ("api", "running")
            if len(beats) >= 3:
                break
            await asyncio.sleep(0.25)
        assert len(beats) >= 3, beats
    finally:
        await scheduler.stop()
    stopped = await instance_row(live, scheduler.instance_id)
    assert stopped is not None and stopped.state == "stopped"


async def test_a_heartbeat_needs_an_admin_and_sane_values(live: Live) -> None:
    beat = {
        "instance_id": "x",
        "host": "h",
        "pid": 1,
        "state": "running",
        "heartbeat_interval": 10,
    }
    with httpx.Client(base_url=live.server.url) as http:
        api = Api(http, token("alice"))
        error = api.fail("scheduler.heartbeat", beat)
        assert error["code"] == -32003
        admin = api.as_user(admin_token("ops"))
        assert admin.call("scheduler.heartbeat", beat) == {"recorded": True}
        assert_field(admin.fail("scheduler.heartbeat", {**beat, "state": "bogus"}), -32602, "state")
        deep = {"a": {"b": {"c": {"d": {"e": 1}}}}}
        assert_field(admin.fail("scheduler.heartbeat", {**beat, "stats": deep}), -32602, "stats")
