"""Hypothesis fuzz of every JSON-RPC method's params, of whole request bodies and of the webhook
route: whatever a client sends, the answer is never an HTTP 500 and is either a result or a
valid JSON-RPC error object (an int code, a string message).

Budget: APFLOW_FUZZ_EXAMPLES examples per method and database (default 30), on SQLite and on
PostgreSQL; raise it for a longer hunt (APFLOW_FUZZ_EXAMPLES=2000).

A -32603 answer fails the fuzz too (-32603 is a bug); the cases it found are pinned
in test_api_robustness.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from api_harness import FAST, Service, ServiceFactory, empty_tables, service_factory
from api_support import JWT_SECRET, WEBHOOK_SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apflow_server.api.methods import METHODS
from apflow_server.core.task_fields import SCHEDULE_FIELDS

EXAMPLES = int(os.environ.get("APFLOW_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis directory in the repository
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

SEEDED = ["fuzz-a", "fuzz-root", "fuzz-kid"]
TASK_FIELD_NAMES = [
    "id",
    "parent_id",
    "user_id",
    "name",
    "status",
    "priority",
    "inputs",
    "params",
    "schemas",
    "dependencies",
    "result",
    "error",
    "progress",
    "created_at",
    "next_run_at",
    "schedule_enabled",
    "schedule_misfire",
    "schedule_overlap",
    "schedule_jitter_seconds",
    *sorted(SCHEDULE_FIELDS),
]
NASTY_STRINGS = [
    "",
    " ",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "1e309",
    "-0",
    "null",
    "true",
    "0x10",
    "\u0000",
    "\ud7ff\ue000",
    "🙂" * 20,
    "Ω≈ç√∫",
    "ﷺ",
    "e\u0301",
    "\u202etxt.exe",
    "'; DROP TABLE tasks; --",
    "../../etc/passwd",
    "%s%n%x",
    "{}",
    "[]",
    "2025-01-15T09:00:00",
    "2025-01-15T09:00:00Z",
    "2025-01-15T09:00:00+99:00",
    "9999-12-31T23:59:59+00:00",
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "a\u0000b",
    "2025-02-30T00:00:00Z",
    "* * * * *",
    "*/0 * * * *",
    "0 0 31 2 *",
    "@yearly",
    "1d",
    "0s",
    "-5",
    "99999999999999999999",
    "1 09:00",
    "L 23:59",
    "09:00,25:00",
    "once",
    "interval",
    "cron",
    "daily",
    "weekly",
    "monthly",
    "Europe/Paris",
    "Mars/Olympus",
    "UTC",
    "admin",
    "pending",
    "in_progress",
    "echo_executor",
    "fuzz-cal",
    "skip",
    "next_business_day",
    "previous_business_day",
    "BD1 09:00",
    "BDL 17:00",
    "BD0 09:00",
    "BD24 09:00",
    "DE",
    "DE-BY",
    "XX",
    "BEGIN:VCALENDAR\r\nEND:VCALENDAR",
    "x" * 300,
    "é" * 5000,
    "a" * 100_000,
]


def _scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**31), max_value=2**31),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.sampled_from([2**63, 2**63 - 1, -(2**63), 2**64, 10**400]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.sampled_from(NASTY_STRINGS),
        st.sampled_from(SEEDED),
    )


JSON = st.recursive(
    _scalars(),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=12), st.sampled_from(["id", "required", "executor_id"])),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


# Mostly scalars (they reach the validators and the database), sometimes nested values.
VALUE = st.one_of(_scalars(), _scalars(), _scalars(), JSON)


def params_strategy(spec: Any) -> st.SearchStrategy[Any]:
    declared = [param.name for param in spec.params]
    names = declared + (TASK_FIELD_NAMES if spec.task_fields else [])
    keys = st.one_of(st.sampled_from(names), st.text(max_size=16)) if names else st.text()
    loose = st.dictionaries(keys, VALUE, max_size=6)
    # Well-formed envelopes with a real task id, so the handlers' deeper paths are reached.
    plausible = st.fixed_dictionaries(
        {"task_id": st.sampled_from(SEEDED)} if "task_id" in declared else {},
        optional={name: VALUE for name in names if name != "task_id"},
    )
    return st.one_of(
        plausible, plausible, plausible, loose, loose, st.lists(JSON, max_size=4), _scalars()
    )


def check_answer(status: int, text: str, request_id: int | None) -> None:
    assert status != 500, text
    assert status in {200, 204, 413}, (status, text)
    if status != 200:
        return
    body = json.loads(text)
    answers = body if isinstance(body, list) else [body]
    for answer in answers:
        assert isinstance(answer, dict), body
        assert answer.get("jsonrpc") == "2.0", answer
        assert ("result" in answer) != ("error" in answer), answer
        if "error" in answer:
            error = answer["error"]
            assert isinstance(error["code"], int) and not isinstance(error["code"], bool), error
            assert isinstance(error["message"], str), error
            assert error["code"] != -32603, f"internal error (a bug) for {text[:500]}"
    if request_id is not None and isinstance(body, dict):
        assert body["id"] in (request_id, None), body


@pytest.fixture(params=["sqlite", "postgresql"])
def fuzz_service(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str
) -> Iterator[Service]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        asyncio.run(empty_tables(url))
    else:
        url = sqlite_url
    for make in service_factory(url, tmp_path):
        service = make(run_scheduler=False, scheduler_config=FAST)
        service.api.call(
            "tasks.create",
            {"id": "fuzz-a", "name": "a", "params": {"executor_id": "echo_executor"}},
        )
        service.api.call(
            "tasks.create",
            [
                {"id": "fuzz-root", "name": "root"},
                {"id": "fuzz-kid", "name": "kid", "parent_id": "fuzz-root"},
            ],
        )
        # A calendar the fuzz can name (schedule_calendar, calendars.*).
        service.api.call("calendars.create", {"name": "fuzz-cal", "holidays": {"country": "DE"}})
        yield service


def _post(service: Service, payload: Any) -> tuple[int, str]:
    data = json.dumps(payload, allow_nan=True).encode()
    response = service.http.post(
        "/tasks/", content=data, headers={"content-type": "application/json"}
    )
    return response.status_code, response.text


ALL_METHODS = [spec.name for spec in METHODS]
SPECS = {spec.name: spec for spec in METHODS}


@pytest.mark.parametrize("method", [*ALL_METHODS, "rpc.discover"])
def test_fuzz_params(fuzz_service: Service, method: str) -> None:
    spec = SPECS.get(method)
    strategy = params_strategy(spec) if spec is not None else st.one_of(JSON, st.just({}))
    counter = iter(range(1, 10**9))

    @FUZZ
    @given(params=strategy)
    def run(params: Any) -> None:
        request_id = next(counter)
        payload = {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
        status, text = _post(fuzz_service, payload)
        check_answer(status, text, request_id)
        if status == 200 and not isinstance(params, dict | list):
            assert json.loads(text)["error"]["code"] == -32600

    run()


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode())))
def test_fuzz_whole_bodies(fuzz_service: Service, body: bytes) -> None:
    response = fuzz_service.http.post(
        "/tasks/", content=body, headers={"content-type": "application/json"}
    )
    check_answer(response.status_code, response.text, None)


@FUZZ
@given(
    envelope=st.dictionaries(
        st.sampled_from(["jsonrpc", "method", "params", "id", "extra"]),
        st.one_of(JSON, st.sampled_from(["2.0", "tasks.get", "tasks.list", "rpc.discover"])),
        max_size=5,
    )
)
def test_fuzz_envelopes(fuzz_service: Service, envelope: dict[str, Any]) -> None:
    status, text = _post(fuzz_service, envelope)
    check_answer(status, text, None)


def _check_webhook(response: Any) -> None:
    assert response.status_code != 500, response.text
    if response.status_code == 404 and not response.headers["content-type"].startswith(
        "application/json"
    ):
        return  # the router's own 404: the id made another path (e.g. it held a "/")
    assert response.status_code in {200, 202, 400, 401, 403, 404, 409, 413}, (
        response.status_code,
        response.text,
    )
    assert isinstance(response.json()["success"], bool)


@pytest.fixture
def locked_service(make_protocol_service: ServiceFactory) -> Service:
    """JWT and HMAC on (SQLite: these requests are refused before any storage)."""
    return make_protocol_service(jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET)


TASK_IDS = st.one_of(st.sampled_from(SEEDED), st.text(min_size=1, max_size=40)).filter(
    lambda value: value not in {".", ".."}
)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@FUZZ
@given(
    task_id=TASK_IDS,
    asynchronous=st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["true", "false"])),
    key=st.one_of(st.none(), HEADER_TEXT),
    body=st.binary(max_size=100),
)
def test_fuzz_webhook(
    fuzz_service: Service, task_id: str, asynchronous: str | None, key: str | None, body: bytes
) -> None:
    params = {} if asynchronous is None else {"async": asynchronous}
    headers = {} if key is None else {"Idempotency-Key": key}
    response = fuzz_service.http.post(
        f"/webhook/trigger/{quote(task_id, safe='')}", params=params, content=body, headers=headers
    )
    _check_webhook(response)


@FUZZ
@given(
    task_id=TASK_IDS,
    timestamp=st.one_of(
        HEADER_TEXT,
        st.integers(min_value=-(2**40), max_value=2**40).map(str),
        st.just(str(int(time.time()))),
    ),
    signature=st.one_of(HEADER_TEXT, st.text("0123456789abcdef", min_size=64, max_size=64)),
    authorization=st.one_of(st.none(), HEADER_TEXT.map(lambda t: f"Bearer {t}"), HEADER_TEXT),
    body=st.binary(max_size=100),
)
def test_fuzz_webhook_credentials(
    locked_service: Service,
    task_id: str,
    timestamp: str,
    signature: str,
    authorization: str | None,
    body: bytes,
) -> None:
    """Credentials of every shape against a server with JWT and HMAC on: refused, never 500."""
    service = locked_service
    headers = {"X-Webhook-Timestamp": timestamp, "X-Webhook-Signature": signature}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = service.http.post(
        f"/webhook/trigger/{quote(task_id, safe='')}", content=body, headers=headers
    )
    _check_webhook(response)
    assert response.status_code in {401, 404}, response.text
