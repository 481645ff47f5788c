"""rest_executor hardened: the private-address guard holds on the address actually connected
to (no second resolution, no DNS rebinding, no environment proxy, no address hidden in an
IPv6 form), inputs are validated, the body is capped and has a deadline, and one pooled
client serves every run of a scheduler, obeying that scheduler's own settings and closed when
it stops."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from execution_support import Harness
from rest_support import (
    PUBLIC,
    RecordingHandler,
    RecordingServer,
    Resolver,
    install_resolver,
    record_connects,
    recording_server,
)

from apflow_server.config import Settings
from apflow_server.core.types import RunStatus
from apflow_server.execution import ExecutionContext, ExecutionError, ExecutorServices
from apflow_server.execution.builtins import rest_executor
from apflow_server.execution.rest.transport import GuardedClient

CONTEXT = ExecutionContext(
    task_id="t1", task_name="t", run_id="r1", user_id=None, params={}, attempt=1
)
LIFT = "set APFLOW_REST_ALLOW_PRIVATE_URLS=1 to allow it"
TIMEOUT = "inputs.timeout must be a number of seconds, more than 0 and at most 3600; got "

Rest = Callable[..., Awaitable[dict[str, Any]]]


# ---------------------------------------------------------------------- plumbing


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[Rest]:
    """Calls rest_executor as a scheduler with the given settings would
    (rest_allow_private_urls=..., rest_max_response_bytes=...): one ExecutorServices per set
    of settings, closed after the test."""
    made: dict[tuple[tuple[str, Any], ...], ExecutorServices] = {}

    async def call(inputs: dict[str, Any], **settings: Any) -> dict[str, Any]:
        key = tuple(sorted(settings.items()))
        if key not in made:
            made[key] = ExecutorServices(
                Settings(home=tmp_path, database_url="sqlite+aiosqlite://", **settings)
            )
        return await rest_executor(inputs, replace(CONTEXT, services=made[key]))

    try:
        yield call
    finally:
        for services in made.values():
            await services.aclose()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    return install_resolver(monkeypatch)


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return record_connects(monkeypatch)


async def refusal(rest: Rest, url: str, **settings: Any) -> str:
    with pytest.raises(ExecutionError) as refused:
        await rest({"url": url, "timeout": 2}, **settings)
    return str(refused.value)


# ---------------------------------------------------------------------- the guard


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://[64:ff9b::7f00:1]:9/", "64:ff9b::7f00:1"),
        ("http://[64:ff9b:1::a00:1]:9/", "64:ff9b:1::a00:1"),
        ("http://[2002:7f00:1::1]:9/", "2002:7f00:1::1"),
        ("http://[::127.0.0.1]:9/", "::127.0.0.1"),
        ("http://224.0.0.1:9/", "224.0.0.1"),
        ("http://[ff02::1]:9/", "ff02::1"),
        ("http://[fec0::1]:9/", "fec0::1"),
        ("http://[::ffff:127.0.0.1]:9/", "::ffff:127.0.0.1"),
        ("http://[::ffff:224.0.0.1]:9/", "::ffff:224.0.0.1"),
        ("http://100.64.0.1:9/", "100.64.0.1"),
        ("http://192.0.0.9:9/", "192.0.0.9"),
    ],
)
async def test_addresses_that_lead_back_inside_are_refused(
    rest: Rest, connects: list[str], url: str, host: str
) -> None:
    """NAT64, 6to4, IPv4-compatible, multicast and site-local addresses were all "global" to
    the old check, so the request went out."""
    assert await refusal(rest, url) == (
        f"{host} resolves to the non-public address {ip_address(host)}; {LIFT}"
    )
    assert connects == []


@pytest.mark.parametrize(
    "hidden", ["64:ff9b::7f00:1", "2002:a00:1::1", "::10.0.0.1", "239.1.1.1", "fd00::1"]
)
async def test_names_that_resolve_to_hidden_private_addresses_are_refused(
    rest: Rest, resolver: Resolver, connects: list[str], hidden: str
) -> None:
    resolver.answer("hidden.test", [hidden])
    assert await refusal(rest, "http://hidden.test/") == (
        f"hidden.test resolves to the non-public address {ip_address(hidden)}; {LIFT}"
    )
    assert connects == []


async def test_one_private_answer_among_public_ones_refuses_the_name(
    rest: Rest, resolver: Resolver, connects: list[str]
) -> None:
    resolver.answer("mixed.test", [PUBLIC, "10.0.0.7"])
    assert await refusal(rest, "http://mixed.test/") == (
        f"mixed.test resolves to the non-public address 10.0.0.7; {LIFT}"
    )
    assert connects == []


async def test_dns_rebinding_cannot_reach_loopback(
    rest: Rest, resolver: Resolver, connects: list[str], server: RecordingServer
) -> None:
    """The name answers a public address first and 127.0.0.1 after: the old check resolved it,
    then httpx resolved it again and connected to loopback. The name is now resolved once and
    the checked address is the one connected to."""
    resolver.answer("rebind.test", [PUBLIC], ["127.0.0.1"])
    url = f"http://rebind.test:{server.port}/secret"
    with pytest.raises(ExecutionError) as failed:
        await rest({"url": url, "timeout": 2})
    assert str(failed.value).startswith(f"GET {url} failed: ConnectError")
    assert server.connections == {}
    assert server.requests == []
    assert resolver.calls == ["rebind.test"]
    assert connects == [PUBLIC]


async def test_an_environment_proxy_is_not_used(
    rest: Rest,
    resolver: Resolver,
    connects: list[str],
    server: RecordingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy connects on our behalf to an address we never see: a proxy named in the
    environment (here a loopback one) is ignored and the checked address is connected to."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    resolver.answer("public.test", [PUBLIC])
    with pytest.raises(ExecutionError) as failed:
        await rest({"url": "http://public.test/x", "timeout": 2})
    assert str(failed.value).startswith("GET http://public.test/x failed: ConnectError")
    assert server.requests == []
    assert connects == [PUBLIC]


async def test_the_switch_lifts_the_guard(rest: Rest, server: RecordingServer) -> None:
    result = await rest({"url": f"{server.url}/echo"}, rest_allow_private_urls=True)
    assert (result["status_code"], result["body"]["path"]) == (200, "/echo")


# ---------------------------------------------------------------------- one client


async def test_runs_share_one_pool_and_one_tls_context(
    rest: Rest, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client and its TLS context (tens of milliseconds of CPU) were made for every run."""
    made = {"pools": 0, "tls": 0, "clients": 0}
    pool_init, tls_context = GuardedClient.__init__, ssl.create_default_context
    client_init = httpx.AsyncClient.__init__

    def counting_pool(self: GuardedClient, *args: Any, **kwargs: Any) -> None:
        made["pools"] += 1
        pool_init(self, *args, **kwargs)

    def counting_client(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        made["clients"] += 1
        client_init(self, *args, **kwargs)

    def counting_tls(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made["tls"] += 1
        return tls_context(*args, **kwargs)

    monkeypatch.setattr(GuardedClient, "__init__", counting_pool)
    monkeypatch.setattr(httpx.AsyncClient, "__init__", counting_client)
    monkeypatch.setattr(ssl, "create_default_context", counting_tls)
    for _ in range(3):
        await rest({"url": f"{server.url}/c"}, rest_allow_private_urls=True)
    assert made == {"pools": 1, "tls": 1, "clients": 0}
    assert len(server.connections) == 1


async def test_a_cookie_one_task_received_is_not_sent_by_another(
    rest: Rest, server: RecordingServer
) -> None:
    """Runs share one pool of connections, never a cookie jar: a session cookie set in
    answer to one user's task must not go out with another user's request."""
    await rest({"url": f"{server.url}/set-cookie/alice-session"}, rest_allow_private_urls=True)
    later = await rest({"url": f"{server.url}/echo"}, rest_allow_private_urls=True)
    assert "Cookie" not in later["body"]["headers"]
    assert "alice-session" not in json.dumps(later["body"])


# ---------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"method": "FETCH"},
            "inputs.method must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT; "
            "got 'FETCH'",
        ),
        (
            {"method": 7},
            "inputs.method must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT; got 7",
        ),
        ({"headers": "X-A: 1"}, "inputs.headers must be an object of strings"),
        ({"headers": {"X-A": 1}}, "inputs.headers must be an object of strings"),
        (
            {"headers": {"X-A": "a\r\nX-Injected: 1"}},
            "inputs.headers['X-A'] must be printable ASCII text",
        ),
        ({"headers": {"X-A": "caf\u00e9"}}, "inputs.headers['X-A'] must be printable ASCII text"),
        ({"headers": {"Bad Name": "v"}}, "inputs.headers: 'Bad Name' is not a header name"),
        ({"headers": {"": "v"}}, "inputs.headers: '' is not a header name"),
        (
            {"headers": {"Transfer-Encoding": "chunked"}},
            "inputs.headers: Transfer-Encoding is set by the executor itself and cannot be given",
        ),
        (
            {"headers": {"content-length": "5"}},
            "inputs.headers: content-length is set by the executor itself and cannot be given",
        ),
        (
            {"params": ["a", "b"]},
            "inputs.params must be an object of strings, numbers or lists of them",
        ),
        (
            {"params": {"a": {"b": 1}}},
            "inputs.params must be an object of strings, numbers or lists of them",
        ),
        ({"json": float("nan")}, "inputs.json must be a JSON value"),
        ({"json": {"a": {1, 2}}}, "inputs.json must be a JSON value"),
        ({"timeout": "soon"}, TIMEOUT + "'soon'"),
        ({"timeout": 0}, TIMEOUT + "0"),
        ({"timeout": -1}, TIMEOUT + "-1"),
        ({"timeout": 3601}, TIMEOUT + "3601"),
        ({"timeout": float("inf")}, TIMEOUT + "inf"),
        ({"timeout": True}, TIMEOUT + "True"),
    ],
)
async def test_bad_inputs_fail_with_a_clear_error(
    rest: Rest, server: RecordingServer, inputs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ExecutionError) as failed:
        await rest({"url": f"{server.url}/echo", **inputs}, rest_allow_private_urls=True)
    assert str(failed.value) == message
    assert server.requests == []


@pytest.mark.parametrize(
    "url", ["http://exa mple.com/", "http://[::1/", "https://", "//example.com/x", "example.com"]
)
async def test_malformed_urls_fail_with_a_clear_error(rest: Rest, url: str) -> None:
    with pytest.raises(ExecutionError) as failed:
        await rest({"url": url})
    assert str(failed.value) == f"inputs.url must be an http(s) URL, got {url!r}"


@pytest.mark.parametrize("method", ["get", "HEAD", "Post", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_known_method_is_sent(rest: Rest, server: RecordingServer, method: str) -> None:
    result = await rest({"url": f"{server.url}/m", "method": method}, rest_allow_private_urls=True)
    assert result["status_code"] == 200
    assert server.requests[-1][1:] == (method.upper(), "/m")


async def test_good_inputs_reach_the_server(rest: Rest, server: RecordingServer) -> None:
    result = await rest(
        {
            "url": f"{server.url}/e",
            "method": "POST",
            "headers": {"X-Test": "yes"},
            "params": {"q": "a b", "n": 2, "many": [1, "two"], "flag": True},
            "json": {"n": [1, 2]},
            "timeout": 5,
        },
        rest_allow_private_urls=True,
    )
    body = result["body"]
    assert body["path"] == "/e?q=a+b&n=2&many=1&many=two&flag=true"
    assert body["headers"]["X-Test"] == "yes"
    assert body["json"] == {"n": [1, 2]}


async def test_null_optional_inputs_take_their_defaults(
    rest: Rest, server: RecordingServer
) -> None:
    inputs = {"method": None, "headers": None, "params": None, "json": None, "timeout": None}
    result = await rest({"url": f"{server.url}/d", **inputs}, rest_allow_private_urls=True)
    assert (result["body"]["method"], result["body"]["path"]) == ("GET", "/d")


# ---------------------------------------------------------------------- the body


async def test_a_body_at_the_cap_is_kept(rest: Rest, server: RecordingServer) -> None:
    result = await rest(
        {"url": f"{server.url}/bytes/1000"},
        rest_allow_private_urls=True,
        rest_max_response_bytes=1000,
    )
    assert result["body"] == "x" * 1000


@pytest.mark.parametrize("path", ["bytes", "chunked"])
async def test_a_body_over_the_cap_fails_the_run(
    rest: Rest, server: RecordingServer, path: str
) -> None:
    url = f"{server.url}/{path}/1001"
    with pytest.raises(ExecutionError) as failed:
        await rest({"url": url}, rest_allow_private_urls=True, rest_max_response_bytes=1000)
    assert str(failed.value) == f"GET {url}: the response body exceeds 1000 bytes"


async def test_a_head_request_is_not_judged_by_the_length_it_declares(
    rest: Rest, server: RecordingServer
) -> None:
    result = await rest(
        {"url": f"{server.url}/bytes/5000", "method": "HEAD"},
        rest_allow_private_urls=True,
        rest_max_response_bytes=1000,
    )
    assert (result["status_code"], result["headers"]["content-length"]) == (200, "5000")
    assert result["body"] == ""


async def test_the_default_cap_is_one_mebibyte(rest: Rest, server: RecordingServer) -> None:
    """A body up to the cap is kept whole (text bodies were cut at 64,000 characters)."""
    ok = await rest({"url": f"{server.url}/chunked/1048576"}, rest_allow_private_urls=True)
    assert ok["body"] == "x" * 1048576
    url = f"{server.url}/chunked/1048577"
    with pytest.raises(ExecutionError) as failed:
        await rest({"url": url}, rest_allow_private_urls=True)
    assert str(failed.value) == f"GET {url}: the response body exceeds 1048576 bytes"


async def test_a_body_nested_too_deep_for_json_is_kept_as_text(
    rest: Rest, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    monkeypatch.setattr(RecordingHandler, "body_for_tests", deep.encode(), raising=False)
    result = await rest({"url": f"{server.url}/fixed"}, rest_allow_private_urls=True)
    assert result["body"] == deep


async def test_without_services_rest_executor_says_what_is_missing() -> None:
    with pytest.raises(ExecutionError) as failed:
        await rest_executor({"url": "http://example.com/"}, CONTEXT)
    assert str(failed.value) == (
        "rest_executor needs the settings of the service running it: "
        "its ExecutionContext has no services"
    )


async def test_a_body_trickling_in_is_cut_at_the_timeout(
    rest: Rest, server: RecordingServer
) -> None:
    """Every byte comes well within the read timeout, but the whole body would take 4 s: the
    body must arrive within `timeout` seconds of the response starting."""
    url = f"{server.url}/drip/20/0.2"
    started = time.monotonic()
    with pytest.raises(ExecutionError) as failed:
        await rest({"url": url, "timeout": 0.8}, rest_allow_private_urls=True)
    assert str(failed.value) == f"GET {url} failed: the body took longer than 0.8 s"
    assert time.monotonic() - started < 3


# ---------------------------------------------------------------------- TLS


async def test_tls_verifies_the_hostname_not_the_address(tmp_path: Path) -> None:
    """The socket goes to a checked address, but TLS still sends the URL's name as SNI and
    verifies the certificate against that name: a certificate for "localhost" is accepted
    at https://localhost and refused at https://127.0.0.1."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    names: list[str | None] = []
    server_tls.sni_callback = lambda _socket, name, _context: names.append(name)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    settings = Settings(home=tmp_path, database_url="sqlite://", rest_allow_private_urls=True)
    services = ExecutorServices(settings, ssl_context=client_tls)
    context = replace(CONTEXT, services=services)
    try:
        with recording_server(tls=server_tls) as server:
            result = await rest_executor({"url": f"https://localhost:{server.port}/tls"}, context)
            assert (result["status_code"], result["body"]["path"]) == (200, "/tls")
            assert names == ["localhost"]

            url = f"https://127.0.0.1:{server.port}/tls"
            with pytest.raises(ExecutionError) as failed:
                await rest_executor({"url": url}, context)
            assert str(failed.value).startswith(f"GET {url} failed: ConnectError")
            assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    finally:
        await services.aclose()


# ---------------------------------------------------------------------- pooling and settings


def rest_task(url: str) -> dict[str, Any]:
    return {"name": "call", "params": {"executor_id": "rest_executor"}, "inputs": {"url": url}}


async def test_runs_share_one_connection_closed_when_the_scheduler_stops(
    harness: Harness, server: RecordingServer
) -> None:
    harness.settings = replace(harness.settings, rest_allow_private_urls=True)
    ids = await harness.tree(rest_task(f"{server.url}/one"))
    scheduler = await harness.scheduler()
    for _ in range(3):
        _, outcome = await harness.run(ids["call"], scheduler)
        assert outcome.status is RunStatus.COMPLETED, outcome.error
    assert [path for _, _, path in server.requests] == ["/one"] * 3
    assert len({port for port, _, _ in server.requests}) == 1
    assert len(server.connections) == 1
    assert server.open_connections() == [server.requests[0][0]]

    await scheduler.stop()
    assert await asyncio.to_thread(server.wait_all_closed)


async def test_two_schedulers_in_one_process_obey_their_own_settings(
    harness: Harness, server: RecordingServer
) -> None:
    ids = await harness.tree(rest_task(f"{server.url}/two"))
    guarded = await harness.scheduler()
    harness.settings = replace(harness.settings, rest_allow_private_urls=True)
    open_ = await harness.scheduler()
    for _ in range(2):
        _, allowed = await harness.run(ids["call"], open_)
        _, refused = await harness.run(ids["call"], guarded)
        assert allowed.status is RunStatus.COMPLETED, allowed.error
        assert (refused.status, refused.error) == (
            RunStatus.FAILED,
            f"127.0.0.1 resolves to the non-public address 127.0.0.1; {LIFT}",
        )
    assert len(server.requests) == 2


async def test_settings_are_read_once_per_scheduler_not_per_run(
    harness: Harness, server: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.settings = replace(harness.settings, rest_allow_private_urls=True)
    ids = await harness.tree(rest_task(f"{server.url}/once"))
    scheduler = await harness.scheduler()

    def no_reading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Settings.from_env() called during a run")

    from apflow_server.config import Settings

    monkeypatch.setattr(Settings, "from_env", classmethod(no_reading))
    _, outcome = await harness.run(ids["call"], scheduler)
    assert outcome.status is RunStatus.COMPLETED, outcome.error


async def test_a_bad_input_fails_its_task_without_a_traceback(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await harness.tree(
        {
            "name": "call",
            "params": {"executor_id": "rest_executor"},
            "inputs": {"url": "http://example.com/", "timeout": "soon"},
        }
    )
    _, outcome = await harness.run(ids["call"])
    assert (outcome.status, outcome.error) == (RunStatus.FAILED, TIMEOUT + "'soon'")
    assert not [r for r in caplog.records if r.exc_info]
