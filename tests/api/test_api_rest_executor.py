"""rest_executor inside the service: each app uses its own settings (two apps in one process,
one allowing private addresses and one not), keeps one pooled connection across runs, and
closes it when it shuts down; under the TestClient and as `apflow serve` on a real port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_harness import ServiceFactory
from api_support import Api, ServerProcess, assert_stopped_gracefully, client_for, server_env
from rest_support import RecordingServer, recording_server

REFUSED = (
    "127.0.0.1 resolves to the non-public address 127.0.0.1; "
    "set APFLOW_REST_ALLOW_PRIVATE_URLS=1 to allow it"
)


@pytest.fixture
def target() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server


def rest_task(api: Api, url: str) -> str:
    task = api.create(params={"executor_id": "rest_executor"}, inputs={"url": url})
    task_id: str = task["id"]
    return task_id


def execute(api: Api, task_id: str) -> dict[str, Any]:
    outcome: dict[str, Any] = api.call("tasks.execute", {"task_id": task_id, "wait": True})
    return outcome


def test_two_apps_in_one_process_obey_their_own_settings(
    make_service: ServiceFactory, target: RecordingServer
) -> None:
    open_ = make_service(rest_allow_private_urls=True)
    guarded = make_service()
    task_id = rest_task(open_.api, f"{target.url}/hello")
    for _ in range(2):
        allowed = execute(open_.api, task_id)
        refused = execute(guarded.api, task_id)
        assert (allowed["status"], allowed["result"]["body"]["path"]) == ("completed", "/hello")
        assert (refused["status"], refused["error"]) == ("failed", REFUSED)
    assert [path for _, _, path in target.requests] == ["/hello", "/hello"]


def test_an_app_reuses_one_connection_and_closes_it_at_shutdown(
    make_service: ServiceFactory, target: RecordingServer
) -> None:
    service = make_service(rest_allow_private_urls=True)
    task_id = rest_task(service.api, f"{target.url}/again")
    for _ in range(3):
        assert execute(service.api, task_id)["status"] == "completed"
    ports = {port for port, _, _ in target.requests}
    assert len(ports) == 1 and len(target.requests) == 3
    assert target.open_connections() == list(ports)

    service.http.__exit__(None, None, None)  # the lifespan's shutdown
    assert target.wait_all_closed()


def test_a_served_app_pools_its_connection_and_closes_it_on_sigterm(
    tmp_path: Path, target: RecordingServer
) -> None:
    """`apflow serve` on a real port: the guard is on by default, the switch lifts it, and
    runs share one connection (that the shutdown closes it is shown under the TestClient
    above: here the end of the process would close it anyway)."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'rest.db'}"
    guarded_home, open_home = tmp_path / "guarded", tmp_path / "open"
    guarded_home.mkdir()
    open_home.mkdir()
    guarded = ServerProcess(server_env(guarded_home, APFLOW_DATABASE_URL=database))
    open_ = ServerProcess(
        server_env(open_home, APFLOW_DATABASE_URL=database, APFLOW_REST_ALLOW_PRIVATE_URLS="1")
    )
    try:
        guarded.wait_ready()
        open_.wait_ready()
        with client_for(guarded) as guarded_http, client_for(open_) as open_http:
            guarded_api, open_api = Api(guarded_http), Api(open_http)
            task_id = rest_task(open_api, f"{target.url}/served")
            refused = execute(guarded_api, task_id)
            assert (refused["status"], refused["error"]) == ("failed", REFUSED)
            for _ in range(3):
                assert execute(open_api, task_id)["status"] == "completed"
        assert len(target.requests) == 3
        assert len({port for port, _, _ in target.requests}) == 1
        assert len(target.open_connections()) == 1
    finally:
        codes = guarded.stop(), open_.stop()
    assert_stopped_gracefully(guarded, codes[0])
    assert_stopped_gracefully(open_, codes[1])
