"""Many clients triggering at once, against `apflow serve` on a real port (SQLite and
PostgreSQL): the starts are group-committed, and exactly once and Idempotency-Key hold as they
do one request at a time."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from api_support import (
    Api,
    ServerProcess,
    client_for,
    create_pg_database,
    drop_pg_database,
    server_env,
)

CLIENTS = 24


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Api]]:
    home = tmp_path_factory.mktemp(f"concurrent-{request.param}")
    url = (
        f"sqlite+aiosqlite:///{home / 'live.db'}"
        if request.param == "sqlite"
        else create_pg_database()
    )
    server = ServerProcess(server_env(home, APFLOW_DATABASE_URL=url))
    try:
        server.wait_ready()
        with client_for(server) as http:
            yield server, Api(http)
    finally:
        server.stop()
        if request.param == "postgresql":
            drop_pg_database(url)


def hammer(server: ServerProcess, requests: list[tuple[str, dict[str, str]]]) -> list[Any]:
    """POST every (path, headers) at once from CLIENTS threads, each with its own connection."""
    local = threading.local()
    barrier = threading.Barrier(CLIENTS)

    def client() -> httpx.Client:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=server.url, timeout=30)
        return local.http

    def warm(_: int) -> None:
        client().get("/healthz")
        barrier.wait()

    def send(item: tuple[str, dict[str, str]]) -> Any:
        path, headers = item
        response = client().post(path, headers=headers)
        return response.status_code, response.json()

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(warm, range(CLIENTS)))  # every client connected, then all at once
        return list(pool.map(send, requests))


def test_a_crowd_of_triggers_starts_each_task_once(live: tuple[ServerProcess, Api]) -> None:
    server, api = live
    tasks = [api.create(name=f"crowd-{i}") for i in range(120)]
    answers = hammer(server, [(f"/webhook/trigger/{t['id']}", {}) for t in tasks])
    assert {status for status, _ in answers} == {202}
    run_ids = [body["run_id"] for _, body in answers]
    assert len(set(run_ids)) == len(tasks)
    for task in tasks:
        runs = api.wait_run(task["id"])
        assert len(runs) == 1 and runs[0]["status"] == "completed"
        assert runs[0]["trigger"] == "webhook"


def test_one_idempotency_key_from_many_clients_is_one_run(
    live: tuple[ServerProcess, Api],
) -> None:
    server, api = live
    task = api.create(name="keyed")
    headers = {"Idempotency-Key": "delivery-42"}
    answers = hammer(server, [(f"/webhook/trigger/{task['id']}", headers)] * 60)
    assert {status for status, _ in answers} == {202}
    assert len({body["run_id"] for _, body in answers}) == 1
    assert Counter(body["status"] for _, body in answers) == Counter(
        {"triggered": 1, "duplicate": 59}
    )
    assert len(api.wait_run(task["id"])) == 1


def test_one_task_triggered_by_many_clients_runs_once(live: tuple[ServerProcess, Api]) -> None:
    server, api = live
    task = api.create(name="slow", params={"executor_id": "test_sleep"}, inputs={"seconds": 2})
    answers = hammer(server, [(f"/webhook/trigger/{task['id']}", {})] * 40)
    assert Counter(status for status, _ in answers) == Counter({202: 1, 409: 39})
    assert len(api.wait_run(task["id"], timeout=20)) == 1
