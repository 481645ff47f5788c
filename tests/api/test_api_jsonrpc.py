"""JSON-RPC 2.0 conformance of POST /tasks/: the envelope, batches, notifications,
the body limit and the error codes, through the TestClient.

Protocol tests run on SQLite; the ones whose requests write tasks run on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_harness import Service, ServiceFactory
from api_support import Api, assert_field
from sqlalchemy.exc import OperationalError

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
MIB = 1024 * 1024


@pytest.fixture
def proto(make_protocol_service: ServiceFactory) -> Service:
    return make_protocol_service()


def post_raw(api: Api, content: bytes, path: str = "/tasks/") -> tuple[int, Any]:
    response = api.http.post(path, content=content, headers={"content-type": "application/json"})
    return response.status_code, (response.json() if response.content else None)


def single_error(body: Any, code: int) -> dict[str, Any]:
    assert isinstance(body, dict), body
    assert body["jsonrpc"] == "2.0", body
    assert "result" not in body, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    error: dict[str, Any] = body["error"]
    return error


def test_parse_error_has_a_null_id(proto: Service) -> None:
    status, body = post_raw(proto.api, b'{"jsonrpc": "2.0", "method": ')
    assert status == 200
    single_error(body, PARSE_ERROR)
    assert body["id"] is None


def test_a_non_utf8_body_is_a_parse_error(proto: Service) -> None:
    payload = '{"jsonrpc": "2.0", "method": "tasks.list", "id": 1, "x": "é"}'.encode("latin-1")
    status, body = post_raw(proto.api, payload)
    assert status == 200
    single_error(body, PARSE_ERROR)
    assert body["id"] is None
    status, body = post_raw(proto.api, b"\xff\xfe\x00{")
    assert status == 200
    single_error(body, PARSE_ERROR)


@pytest.mark.parametrize(
    "payload",
    [
        {"jsonrpc": "1.0", "method": "tasks.list", "id": 1},
        {"method": "tasks.list", "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "method": "tasks.list", "params": "limit=5", "id": 1},
        {"jsonrpc": "2.0", "method": "tasks.list", "params": 5, "id": 1},
        [],
        5,
        "tasks.list",
        None,
    ],
    ids=[
        "wrong-version",
        "no-version",
        "missing-method",
        "method-not-a-string",
        "params-a-string",
        "params-a-number",
        "empty-batch",
        "a-number",
        "a-string",
        "null",
    ],
)
def test_invalid_requests(proto: Service, payload: Any) -> None:
    status, body = post_raw(proto.api, json.dumps(payload).encode())
    assert status == 200
    error = single_error(body, INVALID_REQUEST)
    assert body["id"] in (None, 1), body
    assert error["message"]


def test_unknown_method_echoes_the_id(proto: Service) -> None:
    status, body = post_raw(
        proto.api, json.dumps({"jsonrpc": "2.0", "method": "tasks.nope", "id": "abc"}).encode()
    )
    assert status == 200
    single_error(body, METHOD_NOT_FOUND)
    assert body["id"] == "abc"


def test_string_and_null_ids_are_echoed(proto: Service) -> None:
    for request_id in ("req-1", 7, None):
        payload = {"jsonrpc": "2.0", "method": "tasks.list", "id": request_id}
        status, body = post_raw(proto.api, json.dumps(payload).encode())
        assert status == 200
        assert body["id"] == request_id
        assert body["result"]["total"] == 0


def test_invalid_params(proto: Service) -> None:
    assert_field(proto.api.fail("tasks.list", {"limit": "ten"}), INVALID_PARAMS, "limit")
    assert_field(proto.api.fail("tasks.get", {"task": "x"}), INVALID_PARAMS, "task")


def test_positional_params_on_a_by_name_method(proto: Service) -> None:
    for method, params in [
        ("tasks.get", ["some-id"]),
        ("tasks.list", [10, 0]),
        ("rpc.discover", [1]),
    ]:
        error = proto.api.fail(method, params)
        assert_field(error, INVALID_PARAMS, "params")


def test_the_route_without_a_slash(proto: Service) -> None:
    payload = {"jsonrpc": "2.0", "method": "tasks.list", "id": 1}
    status, body = post_raw(proto.api, json.dumps(payload).encode(), path="/tasks")
    assert status == 200
    assert body["result"]["total"] == 0
    assert proto.http.get("/tasks/").status_code == 405


def test_a_batch_mixing_successes_and_errors(service: Service) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "tasks.create", "params": {"name": "a"}, "id": 1},
        {"jsonrpc": "2.0", "method": "tasks.nope", "id": 2},
        {"jsonrpc": "2.0", "method": "tasks.get", "params": {"task_id": "missing"}, "id": 3},
        {"jsonrpc": "2.0", "method": "tasks.list", "params": {"limit": -1}, "id": 4},
        {"jsonrpc": "2.0", "method": "tasks.create", "params": {"name": "quiet"}},
        {"jsonrpc": "2.0", "method": "tasks.list", "id": 5},
    ]
    status, body = post_raw(service.api, json.dumps(batch).encode())
    assert status == 200
    assert isinstance(body, list)
    by_id = {answer["id"]: answer for answer in body if answer["id"] is not None}
    assert set(by_id) == {1, 2, 3, 4, 5}
    assert len(body) == 5  # one per request with an id, none for the notification
    assert by_id[1]["result"]["name"] == "a"
    assert by_id[2]["error"]["code"] == METHOD_NOT_FOUND
    assert by_id[3]["error"]["code"] == -32004
    assert by_id[4]["error"]["code"] == INVALID_PARAMS
    assert by_id[4]["error"]["data"]["field"] == "limit"
    assert "result" in by_id[5]
    # The notification ran, though it got no answer.
    names = {task["name"] for task in service.api.call("tasks.list", {})["items"]}
    assert names == {"a", "quiet"}


def test_an_invalid_member_of_a_batch_gets_its_own_error(proto: Service) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "tasks.list", "id": 1},
        {"foo": "bar"},
        1,
    ]
    status, body = post_raw(proto.api, json.dumps(batch).encode())
    assert status == 200
    assert isinstance(body, list), body
    assert len(body) == 3
    assert body[0]["id"] == 1 and "result" in body[0]
    assert [answer["error"]["code"] for answer in body[1:]] == [INVALID_REQUEST] * 2
    assert all(answer["id"] is None for answer in body[1:])


def test_a_notification_gets_no_answer(service: Service) -> None:
    note = {"jsonrpc": "2.0", "method": "tasks.create", "params": {"name": "silent"}}
    status, body = post_raw(service.api, json.dumps(note).encode())
    assert status == 204
    assert body is None
    assert [t["name"] for t in service.api.call("tasks.list", {})["items"]] == ["silent"]


def test_a_batch_of_notifications_is_204(service: Service) -> None:
    notes = [
        {"jsonrpc": "2.0", "method": "tasks.create", "params": {"name": "n1"}},
        {"jsonrpc": "2.0", "method": "tasks.create", "params": {"name": "n2"}},
        {"jsonrpc": "2.0", "method": "tasks.nope"},
        {"jsonrpc": "2.0", "method": "tasks.get", "params": {"task_id": "missing"}},
    ]
    response = service.http.post(
        "/tasks/", content=json.dumps(notes).encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 204
    assert response.content == b""
    assert service.api.call("tasks.list", {})["total"] == 2


def test_a_body_over_one_mib_is_refused_with_413(proto: Service) -> None:
    payload = json.dumps({"jsonrpc": "2.0", "method": "tasks.list", "id": 1}).encode()
    padded = payload + b" " * (MIB - len(payload))
    assert len(padded) == MIB
    status, body = post_raw(proto.api, padded)
    assert status == 200  # exactly the limit is fine
    assert body["result"]["total"] == 0
    status, body = post_raw(proto.api, padded + b" ")
    assert status == 413
    single_error(body, INVALID_REQUEST)


def test_a_chunked_body_over_one_mib_is_refused_with_413(proto: Service) -> None:
    """Without a Content-Length the limit is enforced while reading."""

    def chunks() -> Iterator[bytes]:
        yield b'{"jsonrpc": "2.0", "method": "tasks.list", "id": 1, "pad": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    response = proto.http.post(
        "/tasks/", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    single_error(response.json(), INVALID_REQUEST)


def test_a_huge_create_is_refused_not_a_crash(proto: Service) -> None:
    payload = {
        "jsonrpc": "2.0",
        "method": "tasks.create",
        "params": {"name": "big", "inputs": {"blob": "x" * (2 * MIB)}},
        "id": 1,
    }
    status, _ = post_raw(proto.api, json.dumps(payload).encode())
    assert status == 413
    assert proto.api.call("tasks.list", {})["total"] == 0


def test_nan_and_infinity_literals_are_not_a_crash(proto: Service) -> None:
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        payload = (
            b'{"jsonrpc": "2.0", "method": "tasks.create", "params": {"name": "n", '
            b'"inputs": {"v": ' + literal + b'}}, "id": 1}'
        )
        status, body = post_raw(proto.api, payload)
        assert status == 200
        assert isinstance(body, dict)
        if "error" in body:
            assert body["error"]["code"] in (PARSE_ERROR, INVALID_PARAMS), body


def test_method_names_are_exact(proto: Service) -> None:
    for name in ("TASKS.LIST", "tasks.list ", "tasks", "rpc.discover.x", ""):
        payload = {"jsonrpc": "2.0", "method": name, "id": 1}
        status, body = post_raw(proto.api, json.dumps(payload).encode())
        assert status == 200
        single_error(body, METHOD_NOT_FOUND)


def test_an_internal_error_is_a_bare_32603_logged_with_its_traceback(
    proto: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a handler: the client sees -32603 and nothing of it; the log has it all."""
    repository = proto.http.app.state.services.repository

    async def broken(**_: Any) -> Any:
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(repository, "list_tasks", broken)
    with caplog.at_level("ERROR"):
        reply = proto.api.rpc("tasks.list", {})
    assert reply.status == 200
    error = single_error(reply.body, -32603)
    assert "secret detail" not in json.dumps(reply.body)
    assert "RuntimeError" not in json.dumps(reply.body)
    assert error.get("data") is None
    assert any(
        record.exc_info and "secret detail of a bug" in str(record.exc_info[1])
        for record in caplog.records
    )
    # the other methods still work
    assert proto.api.call("tasks.scheduled.list", {})["total"] == 0


def test_a_database_outage_is_a_32603_saying_so_logged_in_one_line(
    proto: Service, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a bug: no traceback, and neither the SQL nor its parameters in the log."""
    repository = proto.http.app.state.services.repository

    async def unreachable(**_: Any) -> Any:
        raise OperationalError(
            "SELECT secret_column FROM tasks", {"token": "hunter2"}, ConnectionRefusedError(111)
        )

    monkeypatch.setattr(repository, "list_tasks", unreachable)
    with caplog.at_level("WARNING"):
        reply = proto.api.rpc("tasks.list", {})
    error = single_error(reply.body, -32603)
    assert error.get("data") == {"reason": "database unavailable"}
    logged = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is None
    assert "hunter2" not in caplog.text and "secret_column" not in caplog.text
    assert "hunter2" not in json.dumps(reply.body)


DISCOVER = {"jsonrpc": "2.0", "method": "rpc.discover", "id": 0}


def test_a_reply_stops_growing_at_the_size_limit(make_protocol_service: ServiceFactory) -> None:
    one = len(make_protocol_service().http.post("/tasks/", json=DISCOVER).content)
    limit = int(one * 2.5)  # room for two of the six answers
    service = make_protocol_service(max_response_bytes=limit)
    batch = [{"jsonrpc": "2.0", "method": "rpc.discover", "id": i} for i in range(6)]
    response = service.http.post(
        "/tasks/", json=batch, headers={"content-type": "application/json"}
    )
    answers = response.json()
    assert [answer["id"] for answer in answers] == list(range(6))
    fitted = [answer for answer in answers if "result" in answer]
    refused = [answer for answer in answers if "error" in answer]
    assert fitted and refused
    assert all(answer["error"]["code"] == -32602 for answer in refused)
    assert len(fitted) == 2
    assert len(response.content) <= limit + 1_000  # the refusals are small


def test_a_batch_over_the_cap_is_refused_and_runs_nothing(
    make_protocol_service: ServiceFactory,
) -> None:
    service = make_protocol_service(max_batch=3)
    batch = [
        {"jsonrpc": "2.0", "method": "tasks.create", "params": {"name": f"t{i}"}, "id": i}
        for i in range(4)
    ]
    reply = service.api.post(batch)
    assert reply.body["error"]["code"] == -32600
    assert reply.body["error"]["data"] == {"max_batch": 3}
    assert service.api.call("tasks.list", {})["total"] == 0
    assert len(service.api.post(batch[:3]).body) == 3
