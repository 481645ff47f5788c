"""The service as deployed: `apflow serve` in its own process on a real port (through
server_process.py, which registers the test executors first), with JWT and HMAC on, spoken to
with httpx. One server per database (SQLite file, PostgreSQL database of its own) for the
module; every JSON-RPC method is called at least once here, with its main error paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import (
    JWT_SECRET,
    WEBHOOK_SECRET,
    Api,
    ServerProcess,
    admin_token,
    assert_field,
    assert_stopped_gracefully,
    client_for,
    create_pg_database,
    drop_pg_database,
    server_env,
    signed_headers,
    token,
)

from apflow_server.api.methods import METHODS

INVALID, FORBIDDEN, NOT_FOUND, CONFLICT = -32602, -32003, -32004, -32009
ALICE, BOB = token("alice"), token("bob")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, Api]]:
    home = tmp_path_factory.mktemp(f"live-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{home / 'live.db'}"
    else:
        url = create_pg_database()
    env = server_env(
        home,
        APFLOW_DATABASE_URL=url,
        APFLOW_JWT_SECRET=JWT_SECRET,
        APFLOW_WEBHOOK_SECRET=WEBHOOK_SECRET,
        APFLOW_LEASE_SECONDS="5",
        APFLOW_NOTIFY_ALLOW_PRIVATE_URLS="1",
    )
    server = ServerProcess(env)
    try:
        server.wait_ready()
        with client_for(server) as http:
            yield server, Api(http, admin_token())
    finally:
        code = server.stop()
        if request.param == "postgresql":
            drop_pg_database(url)
    assert_stopped_gracefully(server, code)


@pytest.fixture
def api(live: tuple[ServerProcess, Api]) -> Api:
    return live[1]


def test_every_method_over_a_real_server(api: Api) -> None:
    called: set[str] = set()

    def call(method: str, params: Any = None) -> Any:
        called.add(method)
        return api.call(method, params)

    one = call("tasks.create", {"name": "one", "params": {"executor_id": "echo_executor"}})
    assert one["status"] == "pending"
    tree = call(
        "tasks.create",
        [
            {"name": "root"},
            {"name": "kid", "parent_id": "root", "params": {"executor_id": "echo_executor"}},
        ],
    )["tasks"]
    root, kid = tree
    assert kid["parent_id"] == root["id"]
    tree2 = call("tasks.create", {"tasks": [{"name": "r2"}, {"name": "k2", "parent_id": "r2"}]})
    assert tree2["tasks"][1]["parent_id"] == tree2["tasks"][0]["id"]
    assert call("tasks.get", {"task_id": one["id"]})["name"] == "one"
    updated = call(
        "tasks.update",
        {
            "task_id": one["id"],
            "inputs": {"v": 1},
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "schedule_enabled": True,
        },
    )
    assert updated["next_run_at"] is not None
    assert one["id"] in {t["id"] for t in call("tasks.list", {"limit": 1000})["items"]}
    whole = call("tasks.tree", {"task_id": kid["id"]})
    assert whole["id"] == root["id"] and whole["children"][0]["id"] == kid["id"]
    outcome = call("tasks.execute", {"task_id": one["id"], "wait": True})
    assert (outcome["status"], outcome["result"]) == ("completed", {"v": 1})
    started = call("tasks.execute", {"task_id": root["id"], "wait": False})
    assert started["status"] == "triggered"
    api.wait_run(root["id"])
    runs = call("tasks.runs.list", {"task_id": one["id"]})
    assert [r["id"] for r in runs["items"]] == [outcome["run_id"]]
    assert call("tasks.cancel", {"task_id": one["id"]}) == {
        "task_id": one["id"],
        "cancelled": False,
    }
    assert one["id"] in {t["id"] for t in call("tasks.scheduled.list", {"limit": 1000})["items"]}
    due = call("tasks.scheduled.due", {"before": "2100-01-01T00:00:00+00:00", "limit": 1000})
    assert one["id"] in {t["id"] for t in due["items"]}
    init = call(
        "tasks.scheduled.init", {"task_id": one["id"], "from_time": "2031-03-01T10:00:00+00:00"}
    )
    assert init["next_run_at"] == "2031-03-02T09:00:00+00:00"
    done = call(
        "tasks.scheduled.complete",
        {"task_id": one["id"], "success": True, "calculate_next_run": False},
    )
    assert done["status"] == "completed"
    paused = call("tasks.scheduled.pause", {"task_id": one["id"], "note": "live"})
    assert paused["schedule_paused"] is True and paused["schedule_pause_note"] == "live"
    assert (
        call("tasks.scheduled.skip", {"task_id": one["id"], "count": 2})["schedule_skip_count"] == 2
    )
    assert call("tasks.scheduled.resume", {"task_id": one["id"]})["schedule_paused"] is False
    preview = call(
        "tasks.scheduled.preview",
        {
            "schedule_type": "weekly",
            "schedule_expression": "1-5 08:30",
            "schedule_timezone": "Asia/Tokyo",
            "after": "2030-01-04T00:00:00+00:00",
            "count": 2,
        },
    )
    assert preview["fire_times"] == ["2030-01-06T23:30:00+00:00", "2030-01-07T23:30:00+00:00"]
    exported = call("tasks.scheduled.export-ical", {"calendar_name": "Live"})
    assert exported["task_count"] >= 1 and "BEGIN:VCALENDAR" in exported["ical_content"]
    fired = call("tasks.webhook.trigger", {"task_id": one["id"]})
    assert fired["status"] == "triggered"
    api.wait_run(one["id"], count=2)
    sync = call("tasks.webhook.trigger", {"task_id": root["id"], "async_execution": False})
    assert sync["status"] == "completed"
    assert [child["name"] for child in sync["children"]] == ["kid"]
    deleted = call("tasks.delete", {"task_id": tree2["tasks"][0]["id"]})
    assert len(deleted["deleted"]) == 2
    minutely = call(
        "tasks.create",
        {
            "name": "minutely",
            "params": {"executor_id": "echo_executor"},
            "schedule_type": "cron",
            "schedule_expression": "* * * * *",
        },
    )
    period = {"task_id": minutely["id"], "start": "2025-01-01T00:00:00Z"}
    period["end"] = "2025-01-01T00:05:00Z"
    dry = call("tasks.scheduled.backfill", {**period, "dry_run": True})
    assert (dry["queued"], dry["backfill_id"]) == (5, None)
    queued = call("tasks.scheduled.backfill", {**period, "max_concurrent": 2})
    cancelled = call("tasks.scheduled.backfill.cancel", {"backfill_id": queued["backfill_id"]})
    assert cancelled["id"] == queued["backfill_id"]
    beat = {"instance_id": "live", "host": "h", "pid": 1, "state": "running"}
    assert call("scheduler.heartbeat", {**beat, "heartbeat_interval": 5}) == {"recorded": True}
    endpoint = call(
        "notifications.endpoints.create",
        {"url": "http://127.0.0.1:9/hook", "events": ["run.failed"], "description": "live"},
    )
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["run.failed"]
    listed = call("notifications.endpoints.list")["items"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    changed = call("notifications.endpoints.update", {"id": endpoint["id"], "enabled": False})
    assert changed["enabled"] is False
    call("notifications.endpoints.update", {"id": endpoint["id"], "enabled": True})
    assert call("notifications.endpoints.test", {"id": endpoint["id"]})["queued"] == 1
    sent = call("notifications.deliveries.list", {"endpoint_id": endpoint["id"]})["items"]
    assert [d["event_type"] for d in sent] == ["ping"]
    assert call("notifications.endpoints.delete", {"id": endpoint["id"]})["deleted"] is True
    made = call("calendars.create", {"name": "live", "holidays": {"country": "US"}})
    assert made["holidays"] == {"country": "US"}
    assert call("calendars.get", {"name": "live"})["id"] == made["id"]
    assert [c["name"] for c in call("calendars.list")["items"]] == ["live"]
    july = {"name": "live", "start": "2027-07-05", "end": "2027-07-06"}
    assert call("calendars.days", july)["days"][0]["business_day"] is False  # observed 4th
    assert call("calendars.update", {"name": "live", "weekend": [7]})["version"] == 2
    assert call("calendars.delete", {"name": "live"})["deleted"] is True
    # Every change above is in the audit log, by the caller (the admin token's subject), with
    # the names of the fields it changed and never their values.
    entries = call("audit.list", {"limit": 1000})["items"]
    assert {entry["actor"] for entry in entries} == {"root"}
    assert {entry["action"] for entry in entries} >= {
        "task.create",
        "task.update",
        "task.delete",
        "task.run.api",
        "task.run.webhook",
        "schedule.init",
        "schedule.complete",
        "schedule.pause",
        "schedule.skip",
        "schedule.resume",
        "schedule.backfill",
        "backfill.cancel",
        "endpoint.create",
        "endpoint.update",
        "endpoint.test",
        "endpoint.delete",
        "calendar.create",
        "calendar.update",
        "calendar.delete",
    }
    created = [e for e in entries if e["action"] == "endpoint.create"]
    assert created[0]["fields"] == ["description", "events", "secret", "url"]
    assert endpoint["secret"] not in json.dumps(entries)
    one_task = call("audit.list", {"task_id": one["id"], "limit": 1000})["items"]
    assert {entry["target_id"] for entry in one_task} == {one["id"]}
    document = call("rpc.discover")
    assert {m["name"] for m in document["methods"]} == called
    assert called == {spec.name for spec in METHODS} | {"rpc.discover"}


def test_error_codes_over_a_real_server(api: Api) -> None:
    bad_cron = api.fail(
        "tasks.create", {"name": "x", "schedule_type": "cron", "schedule_expression": "* *"}
    )
    assert_field(bad_cron, INVALID, "schedule_expression")
    bad_zone = api.fail(
        "tasks.create",
        {
            "name": "x",
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "schedule_timezone": "Europe/Atlantis",
        },
    )
    assert_field(bad_zone, INVALID, "schedule_timezone")
    assert_field(api.fail("tasks.create", {"name": "x", "colour": "red"}), INVALID, "colour")
    assert_field(api.fail("tasks.list", {"limit": "many"}), INVALID, "limit")
    assert_field(api.fail("tasks.get", ["positional"]), INVALID, "params")
    assert_field(api.fail("tasks.get", {"task_id": "absent"}), NOT_FOUND)
    slow = api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    api.call("tasks.execute", {"task_id": slow["id"]})
    assert_field(api.fail("tasks.execute", {"task_id": slow["id"]}), CONFLICT)
    assert_field(api.fail("tasks.delete", {"task_id": slow["id"]}), CONFLICT)
    assert api.call("tasks.cancel", {"task_id": slow["id"]})["cancelled"] is True
    bobs = api.as_user(BOB).create(name="bob's")
    alice = api.as_user(ALICE)
    assert_field(alice.fail("tasks.get", {"task_id": bobs["id"]}), FORBIDDEN)
    assert_field(alice.fail("tasks.list", {"user_id": "bob"}), FORBIDDEN)
    assert bobs["id"] not in {t["id"] for t in alice.call("tasks.list", {})["items"]}


def test_authentication_over_a_real_server(live: tuple[ServerProcess, Api]) -> None:
    server, _ = live
    payload = {"jsonrpc": "2.0", "method": "tasks.list", "id": 1}
    anonymous = httpx.post(f"{server.url}/tasks/", json=payload)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == -32001
    forged = httpx.post(
        f"{server.url}/tasks/",
        json=payload,
        headers={"Authorization": f"Bearer {token('root', ['admin'], secret='x' * 64)}"},
    )
    assert forged.status_code == 401


def test_json_rpc_envelope_over_a_real_server(live: tuple[ServerProcess, Api]) -> None:
    server, api = live
    headers = {"Authorization": f"Bearer {admin_token()}", "Content-Type": "application/json"}
    url = f"{server.url}/tasks/"
    parse = httpx.post(url, content=b"{oops", headers=headers).json()
    assert (parse["error"]["code"], parse["id"]) == (-32700, None)
    latin = httpx.post(url, content='{"a": "é"}'.encode("latin-1"), headers=headers).json()
    assert latin["error"]["code"] == -32700
    assert httpx.post(url, content=b"[]", headers=headers).json()["error"]["code"] == -32600
    unknown = httpx.post(url, json={"jsonrpc": "2.0", "method": "x", "id": 9}, headers=headers)
    assert (unknown.json()["error"]["code"], unknown.json()["id"]) == (-32601, 9)
    batch = [
        {"jsonrpc": "2.0", "method": "tasks.list", "params": {"limit": 1}, "id": 1},
        {"jsonrpc": "2.0", "method": "tasks.get", "params": {"task_id": "gone"}, "id": 2},
        {"jsonrpc": "2.0", "method": "tasks.list"},
    ]
    answers = httpx.post(url, json=batch, headers=headers).json()
    assert sorted(a["id"] for a in answers) == [1, 2]
    assert {a["id"]: ("result" in a) for a in answers} == {1: True, 2: False}
    notes = [{"jsonrpc": "2.0", "method": "tasks.list"}] * 2
    silent = httpx.post(url, json=notes, headers=headers)
    assert (silent.status_code, silent.content) == (204, b"")
    big = json.dumps({"jsonrpc": "2.0", "method": "tasks.list", "id": 1}).encode()
    big += b" " * (1024 * 1024)
    refused = httpx.post(url, content=big, headers=headers)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == -32600

    def chunks() -> Iterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    chunked = httpx.post(url, content=chunks(), headers=headers)
    assert chunked.status_code == 413
    # the server is still fine afterwards
    assert api.call("tasks.list", {"limit": 1})["limit"] == 1


def test_webhook_over_a_real_server(live: tuple[ServerProcess, Api]) -> None:
    server, api = live
    task = api.create(inputs={"from": "webhook"})
    path = f"{server.url}/webhook/trigger/{task['id']}"
    body = b'{"event": "live"}'
    headers = signed_headers(task["id"], body)
    accepted = httpx.post(path, content=body, headers=headers)
    assert accepted.status_code == 202
    assert accepted.json()["status"] == "triggered"
    assert httpx.post(path, content=body, headers=headers).status_code == 401  # replay
    api.wait_run(task["id"])
    sync_body = b"{}"
    sync = httpx.post(
        f"{path}?async=false", content=sync_body, headers=signed_headers(task["id"], sync_body)
    )
    assert sync.status_code == 200
    assert sync.json()["result"] == {"from": "webhook"}
    assert httpx.post(path).status_code == 401
    auth = {"Authorization": f"Bearer {admin_token()}"}
    assert httpx.post(f"{server.url}/webhook/trigger/nope", headers=auth).status_code == 404
    assert httpx.post(f"{path}?async=maybe", headers=auth).status_code == 400
    slow = api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    slow_path = f"{server.url}/webhook/trigger/{slow['id']}"
    assert httpx.post(slow_path, headers=auth).status_code == 202
    assert httpx.post(slow_path, headers=auth).status_code == 409
    assert httpx.post(slow_path, headers={"Authorization": f"Bearer {ALICE}"}).status_code == 403
    api.call("tasks.cancel", {"task_id": slow["id"]})
    keyed = {**auth, "Idempotency-Key": "live-1"}
    first = httpx.post(f"{path}?async=false", headers=keyed).json()
    second = httpx.post(path, headers=keyed).json()
    assert first["run_id"] == second["run_id"]
    assert len(api.runs(task["id"])) == 3


def test_health_over_a_real_server(live: tuple[ServerProcess, Api]) -> None:
    server, _ = live
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "scheduler": "running"}
    httpx.post(f"{server.url}/webhook/trigger/whatever")  # a refusal, counted
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "apflow_runs_total",
        "apflow_firing_lateness_seconds_count",
        "apflow_active_runs",
        "apflow_due_backlog",
        'apflow_webhook_refusals_total{reason="',
    ):
        assert name in text, name


# ---------------------------------------------------------------------- addresses


def _server_with(tmp_path: Path, name: str, **variables: str) -> ServerProcess:
    home = tmp_path / name
    home.mkdir()
    return ServerProcess(server_env(home, **variables))


def test_ip_allowlist_and_forwarded_for_on_a_real_server(tmp_path: Path) -> None:
    """127.0.0.1 is the peer here. Allowed 127.0.0.0/8: accepted, and an X-Forwarded-For from
    this (untrusted) peer changes nothing. Allowed 10.0.0.0/8 only: refused, unless the peer is
    a trusted proxy forwarding for a 10.x client."""
    loopback = _server_with(tmp_path, "a", APFLOW_WEBHOOK_ALLOWED_IPS="127.0.0.0/8")
    tens = _server_with(
        tmp_path,
        "b",
        APFLOW_WEBHOOK_ALLOWED_IPS="10.0.0.0/8",
        APFLOW_TRUSTED_PROXIES="127.0.0.1/32",
    )
    try:
        loopback.wait_ready()
        tens.wait_ready()
        with client_for(loopback) as http:
            task = Api(http).create()
            hook = f"/webhook/trigger/{task['id']}?async=false"
            assert http.post(hook).status_code == 200
        with client_for(tens) as http:
            task = Api(http).create()
            hook = f"/webhook/trigger/{task['id']}?async=false"
            assert http.post(hook).status_code == 403
            via_proxy = http.post(hook, headers={"X-Forwarded-For": "10.1.1.1"})
            assert via_proxy.status_code == 200
            outside = http.post(hook, headers={"X-Forwarded-For": "10.1.1.1, 192.0.2.7"})
            assert outside.status_code == 403
    finally:
        assert_stopped_gracefully(loopback, loopback.stop())
        assert_stopped_gracefully(tens, tens.stop())


def test_forwarded_for_from_an_untrusted_loopback_peer_is_ignored(tmp_path: Path) -> None:
    server = _server_with(tmp_path, "c", APFLOW_WEBHOOK_ALLOWED_IPS="127.0.0.0/8")
    try:
        server.wait_ready()
        with client_for(server) as http:
            task = Api(http).create()
            hook = f"/webhook/trigger/{task['id']}"
            spoofed = http.post(hook, headers={"X-Forwarded-For": "203.0.113.9"})
            assert spoofed.status_code == 202, spoofed.text
    finally:
        server.stop()
