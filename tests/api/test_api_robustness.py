"""Inputs that reached the database or the clock unchecked and came back as -32603 (a bug,
a bug) or as HTTP 500 ("nothing a client sends produces an HTTP 500"). Found by the fuzz
(test_api_fuzz.py with APFLOW_FUZZ_STRICT=1) and by hand; each case is pinned here so that it
stays fixed once fixed.

All of them were fixed; they stay here so that they stay fixed.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from api_harness import ServiceFactory
from api_support import JWT_SECRET, WEBHOOK_SECRET, admin_token, signature, token

BIG = 2**63  # one past the largest BIGINT
NUL = "a\u0000b"


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return {"deep": value}


# (method, params, what used to go wrong)
RPC_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("tasks.list", {"offset": BIG}, "offset beyond BIGINT reaches the database"),
    ("tasks.runs.list", {"offset": BIG}, "offset beyond BIGINT reaches the database"),
    ("tasks.scheduled.list", {"offset": BIG}, "offset beyond BIGINT reaches the database"),
    ("tasks.create", {"name": "x", "max_runs": 2**40}, "max_runs beyond INTEGER"),
    ("tasks.create", {"name": NUL}, "a NUL character in a text column"),
    ("tasks.create", {"name": "x", "user_id": NUL}, "a NUL character in a text column"),
    ("tasks.get", {"task_id": NUL}, "a NUL character in a query parameter"),
    ("tasks.list", {"user_id": NUL}, "a NUL character in a query parameter"),
    ("tasks.list", {"parent_id": NUL}, "a NUL character in a query parameter"),
    (
        "tasks.scheduled.preview",
        {
            "schedule_type": "interval",
            "schedule_expression": "60",
            "after": "9999-12-31T23:59:00+00:00",
        },
        "OverflowError past year 9999",
    ),
    (
        "tasks.scheduled.preview",
        {
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "after": "9999-12-31T23:59:00+00:00",
        },
        "OverflowError past year 9999",
    ),
    (
        "tasks.scheduled.due",
        {"before": "0001-01-01T00:00:00+23:59"},
        "OverflowError: an instant before year 1 in UTC",
    ),
    (
        "tasks.scheduled.due",
        {"before": "9999-12-31T23:59:59-23:59"},
        "OverflowError: an instant after year 9999 in UTC",
    ),
    (
        "tasks.create",
        {
            "name": "x",
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "schedule_start_at": "0001-01-01T00:00:00+23:59",
            "schedule_enabled": True,
        },
        "OverflowError: a start bound before year 1 in UTC",
    ),
    (
        "tasks.create",
        {
            "name": "x",
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "schedule_end_at": "9999-12-31T23:59:59-23:59",
        },
        "OverflowError: an end bound after year 9999 in UTC",
    ),
    (
        "tasks.scheduled.init",
        {"task_id": "x", "from_time": "0001-01-01T00:00:00+23:59"},
        "OverflowError: from_time before year 1 in UTC",
    ),
    (
        "tasks.scheduled.preview",
        {
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "after": "0001-01-01T00:00:00+23:59",
        },
        "OverflowError: after before year 1 in UTC",
    ),
    ("tasks.create", {"name": "\ud800"}, "UnicodeEncodeError: a lone surrogate in a name"),
    (
        "tasks.create",
        {"name": "x", "inputs": {"k\udfff": "v"}},
        "a lone surrogate in a JSON key",
    ),
    ("tasks.create", {"name": "x", "inputs": {"k": "\ud83d"}}, "a lone surrogate in a value"),
    ("tasks.list", {"user_id": "\ud800"}, "a lone surrogate in a query parameter"),
    ("tasks.create", {"name": "x", "inputs": {"k": "a\u0000b"}}, "NUL inside JSON (jsonb)"),
    ("tasks.create", {"name": "x", "inputs": {"k": float("inf")}}, "Infinity in JSON (jsonb)"),
    ("tasks.create", {"name": "x", "inputs": {"k": float("nan")}}, "NaN in JSON (jsonb)"),
    (
        "tasks.scheduled.preview",
        {"schedule_type": "once", "schedule_expression": "9999-12-31T23:59:59-23:59"},
        "OverflowError: a once instant after year 9999 in UTC",
    ),
    (
        "tasks.create",
        {
            "name": "x",
            "schedule_type": "once",
            "schedule_expression": "0001-01-01T00:00:00",
            "schedule_timezone": "Etc/GMT-14",
        },
        "OverflowError: a wall-clock once instant before year 1 in UTC (disabled)",
    ),
    (
        "tasks.create",
        {
            "name": "x",
            "schedule_type": "once",
            "schedule_expression": "9999-12-31T23:59:59",
            "schedule_timezone": "Etc/GMT+12",
            "schedule_enabled": True,
        },
        "OverflowError: a wall-clock once instant after year 9999 in UTC (enabled)",
    ),
    ("tasks.create", {"name": "ok", "max_runs": 5}, "control: a valid request"),
]


def database_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


@pytest.mark.parametrize(
    ("method", "params", "why"),
    RPC_CASES,
    ids=[f"{case[0]}-{sorted(case[1])[0]}-{index}" for index, case in enumerate(RPC_CASES)],
)
def test_no_internal_error_for_a_client_input(
    make_service: ServiceFactory, method: str, params: dict[str, Any], why: str
) -> None:
    service = make_service(run_scheduler=False)
    reply = service.api.rpc(method, params)
    assert reply.status == 200
    if "error" in reply.body:
        assert reply.error["code"] in {-32602, -32004}, reply.body


def test_inputs_nested_950_deep_are_not_an_internal_error(make_service: ServiceFactory) -> None:
    """They parsed, but used to fail when written (RecursionError). The body is written as text:
    encoding it here would recurse in the test's own stack, which is deeper under a parallel
    test runner than in a client."""
    service = make_service(run_scheduler=False)
    deep = "[" * 950 + '"bottom"' + "]" * 950
    body = (
        '{"jsonrpc":"2.0","method":"tasks.create","id":1,'
        f'"params":{{"name":"x","inputs":{{"deep":{deep}}}}}}}'
    )
    response = service.http.post(
        "/tasks/", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    # Read without parsing the echo of the inputs, for the same reason.
    assert "-32603" not in response.text
    assert '"result"' in response.text or re.search(r'"code":\s*-32(602|004)', response.text)


def test_a_nul_in_the_webhook_task_id_is_not_a_500(make_service: ServiceFactory) -> None:
    service = make_service(run_scheduler=False)
    response = service.http.post("/webhook/trigger/a%00b")
    assert response.status_code == 404, response.text


def test_a_nul_in_the_webhook_task_id_with_a_jwt_is_not_a_500(
    make_service: ServiceFactory,
) -> None:
    service = make_service(run_scheduler=False, jwt_secret=JWT_SECRET)
    response = service.http.post(
        "/webhook/trigger/a%00b", headers={"Authorization": f"Bearer {admin_token()}"}
    )
    assert response.status_code == 404, response.text


def test_a_huge_webhook_timestamp_is_401_not_500(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(run_scheduler=False, webhook_secret=WEBHOOK_SECRET)
    stamp = "1" * 400
    response = service.http.post(
        "/webhook/trigger/some-task",
        headers={
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": signature(WEBHOOK_SECRET, stamp, "some-task"),
        },
    )
    assert response.status_code == 401, response.text


def test_a_slightly_wrong_timestamp_is_401(make_protocol_service: ServiceFactory) -> None:
    """Control for the case above: ordinary bad timestamps are refused cleanly."""
    service = make_protocol_service(run_scheduler=False, webhook_secret=WEBHOOK_SECRET)
    for stamp in ("nan", "-1", "1e9", str(int(time.time()) * 1000), ""):
        response = service.http.post(
            "/webhook/trigger/some-task",
            headers={"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": "00"},
        )
        assert response.status_code == 401, (stamp, response.text)


def test_a_jwt_subject_with_a_nul_is_not_an_internal_error(make_service: ServiceFactory) -> None:
    service = make_service(run_scheduler=False, jwt_secret=JWT_SECRET)
    reply = service.api.rpc("tasks.list", {}, auth=token(NUL))
    assert reply.status in {200, 401}
    if reply.status == 200:
        assert "error" not in reply.body or reply.error["code"] != -32603, reply.body


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"name": "\ud800"}, "name"),
        ({"name": "x", "inputs": {"deep": ["ok", {"k": "\udfff"}]}}, "inputs.deep[1].k"),
        ({"name": "x", "inputs": {"\ud800": 1}}, "inputs"),
        ([{"name": "root"}, {"name": "\ud800", "parent_id": "root"}], "tasks[1].name"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(
    make_service: ServiceFactory, params: Any, field: str
) -> None:
    service = make_service(run_scheduler=False)
    error = service.api.fail("tasks.create", params)
    assert error["code"] == -32602
    assert error["data"]["field"] == field
    assert service.api.call("tasks.list", {})["total"] == 0


@pytest.mark.parametrize(("levels", "accepted"), [(63, True), (64, False), (500, False)])
def test_json_fields_nest_at_most_64_levels(
    make_service: ServiceFactory, levels: int, accepted: bool
) -> None:
    service = make_service(run_scheduler=False)
    reply = service.api.rpc("tasks.create", {"name": "deep", "inputs": nested(levels)})
    if accepted:
        task = reply.result
        assert service.api.call("tasks.get", {"task_id": task["id"]})["inputs"] == nested(levels)
    else:
        assert (reply.error["code"], reply.error["data"]["field"]) == (-32602, "inputs")
        assert service.api.call("tasks.list", {})["total"] == 0


@pytest.mark.parametrize("subject", ["\ud800", "x" * 256, "   "])
def test_a_jwt_subject_that_is_no_user_id_is_401(
    make_service: ServiceFactory, subject: str
) -> None:
    service = make_service(run_scheduler=False, jwt_secret=JWT_SECRET)
    reply = service.api.rpc("tasks.list", {}, auth=token(subject))
    assert reply.status == 401, reply.body
    assert "sub" in reply.body["error"]["message"]
