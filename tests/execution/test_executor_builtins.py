"""The built-in executors and their safety switches: echo, aggregate, command (off by
default, argv without a shell, allowlist, exit codes, timeouts) and REST (private and loopback
targets refused by default; a real local HTTP server with the switch on)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from execution_support import Harness

from apflow_server.config import Settings
from apflow_server.core.types import RunStatus
from apflow_server.execution import ExecutionContext, ExecutionError, ExecutorServices
from apflow_server.execution.builtins import (
    aggregate_results_executor,
    command_executor,
    echo_executor,
    rest_executor,
)
from apflow_server.execution.context import GRACEFUL_CANCEL

CONTEXT = ExecutionContext(
    task_id="t1", task_name="t", run_id="r1", user_id=None, params={}, attempt=1
)
PY = sys.executable
DISABLED = "command_executor is disabled; set APFLOW_ALLOW_COMMAND_EXECUTOR=1"


@pytest.fixture(autouse=True)
def switches_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "APFLOW_ALLOW_COMMAND_EXECUTOR",
        "APFLOW_COMMAND_ALLOWLIST",
        "APFLOW_COMMAND_ENV_ALLOWLIST",
        "APFLOW_REST_ALLOW_PRIVATE_URLS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def commands_on(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """On for direct calls (the environment) and for the harness's schedulers (their
    settings, which runs carry in their context)."""
    monkeypatch.setenv("APFLOW_ALLOW_COMMAND_EXECUTOR", "1")
    if "harness" in request.fixturenames:
        request.getfixturevalue("harness").use_settings(allow_command_executor=True)


@pytest.fixture
def private_urls_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APFLOW_REST_ALLOW_PRIVATE_URLS", "1")


@pytest.fixture
async def rest_context(tmp_path: Path) -> AsyncIterator[ExecutionContext]:
    """CONTEXT as a scheduler started now would hand it to rest_executor: with services made
    from the environment (after the switch fixtures ran), closed after the test."""
    services = ExecutorServices(Settings.from_env({**os.environ, "APFLOW_HOME": str(tmp_path)}))
    try:
        yield replace(CONTEXT, services=services)
    finally:
        await services.aclose()


def gone(pid: int, seconds: float = 5) -> bool:
    """Whether the process (a `time.sleep` of these tests) ends within `seconds`: no longer
    there, a zombie (dead, waiting for a parent that is not ours to reap it), or its pid
    already taken by another program. A SIGKILL takes effect a moment after it is sent: on a
    loaded machine the process can still be listed just after the run has ended."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            ours = b"time.sleep" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ProcessLookupError, OSError):
            return True
        if state == "Z" or not ours:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def wait_for_file(path: Path, seconds: float = 5) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


# ---------------------------------------------------------------------- echo and aggregate


async def test_echo_returns_a_copy_of_its_inputs() -> None:
    inputs = {"a": 1, "nested": {"b": [1, 2]}}
    result = await echo_executor(inputs, CONTEXT)
    assert result == {"a": 1, "nested": {"b": [1, 2]}}
    assert result is not inputs


async def test_aggregate_keys_dependencies_and_children_by_id() -> None:
    context = ExecutionContext(
        task_id="p",
        task_name="p",
        run_id="r",
        user_id=None,
        params={},
        attempt=1,
        child_results={"c1": {"x": 1}, "c2": [2]},
        dependency_results={"d1": None},
    )
    assert await aggregate_results_executor({"ignored": True}, context) == {
        "d1": None,
        "c1": {"x": 1},
        "c2": [2],
    }


# ---------------------------------------------------------------------- command


async def test_command_executor_is_disabled_by_default() -> None:
    with pytest.raises(ExecutionError) as refused:
        await command_executor({"command": [PY, "-c", "print(1)"]}, CONTEXT)
    assert str(refused.value) == DISABLED


@pytest.mark.parametrize("value", ["0", "no", "", "false"])
async def test_command_executor_needs_a_true_switch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("APFLOW_ALLOW_COMMAND_EXECUTOR", value)
    marker = tmp_path / "ran"
    with pytest.raises(ExecutionError) as refused:
        await command_executor({"command": ["touch", str(marker)]}, CONTEXT)
    assert str(refused.value) == DISABLED
    assert not marker.exists()


@pytest.mark.usefixtures("commands_on")
async def test_command_runs_an_argv_list() -> None:
    result = await command_executor(
        {"command": [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]},
        CONTEXT,
    )
    assert result == {"returncode": 0, "stdout": "out\n", "stderr": "err\n"}


@pytest.mark.usefixtures("commands_on")
async def test_command_never_uses_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    argument = f"$(touch {marker}); touch {marker} && echo `id` | cat"
    result = await command_executor(
        {"command": [PY, "-c", "import sys; print(sys.argv[1])", argument]}, CONTEXT
    )
    assert result["stdout"] == argument + "\n"
    assert not marker.exists()


@pytest.mark.usefixtures("commands_on")
@pytest.mark.parametrize(
    "command",
    ["echo hi", [], ["echo", 1], None, "rm -rf /tmp/x; echo"],
    ids=["string", "empty", "non-string", "missing", "shell-line"],
)
async def test_command_must_be_a_list_of_strings(command: Any) -> None:
    with pytest.raises(ExecutionError) as refused:
        await command_executor({"command": command}, CONTEXT)
    assert str(refused.value) == "inputs.command must be a non-empty list of strings (no shell)"


@pytest.mark.usefixtures("commands_on")
async def test_command_env_is_added_and_cwd_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APFLOW_COMMAND_ENV_ALLOWLIST", "APFLOW_T_X")  # none is allowed unlisted
    result = await command_executor(
        {
            "command": [PY, "-c", "import os; print(os.environ['APFLOW_T_X'], os.getcwd())"],
            "env": {"APFLOW_T_X": 42},
            "cwd": str(tmp_path),
        },
        CONTEXT,
    )
    assert result["stdout"] == f"42 {tmp_path}\n"


@pytest.mark.usefixtures("commands_on")
async def test_command_non_zero_exit_fails() -> None:
    script = "import sys; sys.stderr.write('first\\nbad thing\\n'); sys.exit(3)"
    with pytest.raises(ExecutionError) as failed:
        await command_executor({"command": [PY, "-c", script]}, CONTEXT)
    assert str(failed.value) == f"{PY} exited with 3: bad thing"

    with pytest.raises(ExecutionError) as silent:
        await command_executor({"command": [PY, "-c", "raise SystemExit(4)"]}, CONTEXT)
    assert str(silent.value) == f"{PY} exited with 4"


@pytest.mark.usefixtures("commands_on")
async def test_command_that_cannot_start_fails() -> None:
    with pytest.raises(ExecutionError) as failed:
        await command_executor({"command": ["/nonexistent/apflow-cmd"]}, CONTEXT)
    assert str(failed.value) == "cannot find the program '/nonexistent/apflow-cmd'"


@pytest.mark.usefixtures("commands_on")
async def test_command_timeout_kills_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(30)"
    )
    started = time.monotonic()
    with pytest.raises((TimeoutError, ExecutionError)):
        await command_executor({"command": [PY, "-c", script], "timeout": 0.5}, CONTEXT)
    assert time.monotonic() - started < 5
    assert gone(int(wait_for_file(pid_file)))


@pytest.mark.usefixtures("commands_on")
async def test_a_stopped_command_takes_what_it_started_with_it(tmp_path: Path) -> None:
    """A command that started a child of its own holding its output open: a timeout kills
    its whole process group, so the run ends at once (it waited 60 s for the child) and
    no child outlives it."""
    pid_file = tmp_path / "pid"
    child = "import time; time.sleep(60)"
    script = (
        f"import os, subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {child!r}]); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); p.wait()"
    )
    started = time.monotonic()
    with pytest.raises(ExecutionError):
        await command_executor({"command": [PY, "-c", script], "timeout": 0.5}, CONTEXT)
    assert time.monotonic() - started < 5
    assert gone(int(wait_for_file(pid_file)))


@pytest.mark.usefixtures("commands_on")
async def test_a_command_asked_to_end_gets_sigterm_first(tmp_path: Path) -> None:
    """Asked to end (cancel_other), a command receives SIGTERM and may clean up; stopped
    any other way, it is killed at once."""
    marker = tmp_path / "cleaned"
    script = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').write('yes'), "
        "sys.exit(3)))\n"
        f"open({str(marker)!r} + '.ready', 'w').write('ready')\n"
        "time.sleep(30)\n"
    )
    ready = f"{marker}.ready"
    for graceful, expected in ((True, True), (False, False)):
        for stale in (str(marker), ready):
            if os.path.exists(stale):
                os.unlink(stale)
        run = asyncio.create_task(command_executor({"command": [PY, "-c", script]}, CONTEXT))
        for _ in range(500):
            if os.path.exists(ready):
                break
            await asyncio.sleep(0.01)
        run.cancel(GRACEFUL_CANCEL if graceful else None)
        with pytest.raises(asyncio.CancelledError):
            await run
        assert os.path.exists(marker) is expected


async def test_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APFLOW_ALLOW_COMMAND_EXECUTOR", "1")
    monkeypatch.setenv("APFLOW_COMMAND_ALLOWLIST", "true, echo")
    with pytest.raises(ExecutionError) as refused:
        await command_executor({"command": [PY, "-c", "print(1)"]}, CONTEXT)
    assert str(refused.value) == f"{PY!r} is not in APFLOW_COMMAND_ALLOWLIST"

    result = await command_executor({"command": ["echo", "listed"]}, CONTEXT)
    assert result["stdout"] == "listed\n"

    monkeypatch.setenv("APFLOW_COMMAND_ALLOWLIST", f"true,{PY}")
    result = await command_executor({"command": [PY, "-c", "print('full path')"]}, CONTEXT)
    assert result["stdout"] == "full path\n"


def plant_fake_command(folder: Path, name: str, marker: Path) -> Path:
    folder.mkdir()
    fake = folder / name
    fake.write_text(f"#!/bin/sh\necho planted > {marker}\n")  # no PATH needed
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake


async def test_allowlist_cannot_be_bypassed_through_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APFLOW_ALLOW_COMMAND_EXECUTOR", "1")
    monkeypatch.setenv("APFLOW_COMMAND_ALLOWLIST", "true")
    marker = tmp_path / "planted-ran"
    folder = tmp_path / "planted"
    plant_fake_command(folder, "true", marker)
    try:
        await command_executor({"command": ["true"], "env": {"PATH": str(folder)}}, CONTEXT)
    except ExecutionError:
        pass
    assert not marker.exists()


async def test_allowlist_does_not_match_other_binaries_of_the_same_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APFLOW_ALLOW_COMMAND_EXECUTOR", "1")
    monkeypatch.setenv("APFLOW_COMMAND_ALLOWLIST", "true")
    marker = tmp_path / "planted-ran"
    fake = plant_fake_command(tmp_path / "planted", "true", marker)
    try:
        await command_executor({"command": [str(fake)]}, CONTEXT)
    except ExecutionError:
        pass
    assert not marker.exists()


# ---------------------------------------------------------------------- REST: refusals


@pytest.mark.parametrize(
    ("url", "host", "address"),
    [
        ("http://127.0.0.1:9/x", "127.0.0.1", "127.0.0.1"),
        ("http://localhost:9/", "localhost", "127.0.0.1"),
        ("https://10.1.2.3/", "10.1.2.3", "10.1.2.3"),
        ("http://192.168.0.10:8080/", "192.168.0.10", "192.168.0.10"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254", "169.254.169.254"),
        ("http://0.0.0.0:9/", "0.0.0.0", "0.0.0.0"),
        ("http://2130706433:9/", "2130706433", "127.0.0.1"),
        ("http://[::1]:9/", "::1", "::1"),
        ("http://[::ffff:127.0.0.1]:9/", "::ffff:127.0.0.1", "::ffff:7f00:1"),
    ],
)
async def test_rest_refuses_private_and_loopback_targets(
    url: str, host: str, address: str, rest_context: ExecutionContext
) -> None:
    with pytest.raises(ExecutionError) as refused:
        await rest_executor({"url": url}, rest_context)
    assert str(refused.value) == (
        f"{host} resolves to the non-public address {address}; "
        "set APFLOW_REST_ALLOW_PRIVATE_URLS=1 to allow it"
    )


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "http:///nohost"])
async def test_rest_needs_an_http_url(url: str, rest_context: ExecutionContext) -> None:
    with pytest.raises(ExecutionError) as refused:
        await rest_executor({"url": url}, rest_context)
    assert str(refused.value) == f"inputs.url must be an http(s) URL, got {url!r}"


async def test_rest_needs_a_url(rest_context: ExecutionContext) -> None:
    with pytest.raises(ExecutionError) as refused:
        await rest_executor({"method": "GET"}, rest_context)
    assert str(refused.value) == "inputs.url is missing or of the wrong type"


# ---------------------------------------------------------------------- REST: a real server


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        if self.path.startswith("/status/"):
            code = int(self.path.rsplit("/", 1)[1])
            self._reply(code, json.dumps({"code": code}).encode())
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/text":
            self._reply(200, b"plain words", "text/plain")
        elif self.path == "/slow":
            time.sleep(1.5)
            self._reply(200, b"{}")
        else:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = {
                "method": self.command,
                "path": self.path,
                "x_test": self.headers.get("X-Test"),
                "json": json.loads(raw) if raw else None,
            }
            self._reply(200, json.dumps(body).encode())

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_rest_refuses_the_local_server_without_the_switch(
    server: str, rest_context: ExecutionContext
) -> None:
    with pytest.raises(ExecutionError) as refused:
        await rest_executor({"url": f"{server}/echo"}, rest_context)
    assert "non-public address 127.0.0.1" in str(refused.value)


@pytest.mark.usefixtures("private_urls_on")
async def test_rest_get(server: str, rest_context: ExecutionContext) -> None:
    result = await rest_executor(
        {"url": f"{server}/echo", "params": {"q": "a b"}, "headers": {"X-Test": "yes"}},
        rest_context,
    )
    assert result["status_code"] == 200
    assert result["headers"]["content-type"] == "application/json"
    assert result["body"] == {"method": "GET", "path": "/echo?q=a+b", "x_test": "yes", "json": None}


@pytest.mark.usefixtures("private_urls_on")
async def test_rest_post_json(server: str, rest_context: ExecutionContext) -> None:
    result = await rest_executor(
        {"url": f"{server}/echo", "method": "post", "json": {"n": [1, 2]}}, rest_context
    )
    assert result["body"] == {
        "method": "POST",
        "path": "/echo",
        "x_test": None,
        "json": {"n": [1, 2]},
    }


@pytest.mark.usefixtures("private_urls_on")
async def test_rest_text_body(server: str, rest_context: ExecutionContext) -> None:
    result = await rest_executor({"url": f"{server}/text"}, rest_context)
    assert (result["status_code"], result["body"]) == (200, "plain words")


@pytest.mark.usefixtures("private_urls_on")
@pytest.mark.parametrize("code", [404, 500, 302])
async def test_rest_non_2xx_fails(server: str, code: int, rest_context: ExecutionContext) -> None:
    url = f"{server}/status/{code}"
    with pytest.raises(ExecutionError) as failed:
        await rest_executor({"url": url}, rest_context)
    assert str(failed.value) == f"GET {url} answered HTTP {code}"


@pytest.mark.usefixtures("private_urls_on")
async def test_rest_does_not_follow_redirects(server: str, rest_context: ExecutionContext) -> None:
    url = f"{server}/redirect"
    with pytest.raises(ExecutionError) as failed:
        await rest_executor({"url": url}, rest_context)
    assert str(failed.value) == f"GET {url} answered HTTP 302"


@pytest.mark.usefixtures("private_urls_on")
async def test_rest_timeout_and_connection_errors(
    server: str, rest_context: ExecutionContext
) -> None:
    url = f"{server}/slow"
    with pytest.raises(ExecutionError) as slow:
        await rest_executor({"url": url, "timeout": 0.2}, rest_context)
    assert str(slow.value).startswith(f"GET {url} failed: ReadTimeout")

    # A port nobody listens on (bound, never listening).
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}/"
        with pytest.raises(ExecutionError) as refused:
            await rest_executor({"url": closed}, rest_context)
    assert str(refused.value).startswith(f"GET {closed} failed: ConnectError")


# ---------------------------------------------------------------------- through a tree run


async def test_a_disabled_command_fails_its_task(harness: Harness, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ids = await harness.tree(
        {
            "name": "cmd",
            "params": {"executor_id": "command_executor"},
            "inputs": {"command": ["touch", str(marker)]},
        }
    )
    _, outcome = await harness.run(ids["cmd"])

    assert (outcome.status, outcome.error) == (RunStatus.FAILED, DISABLED)
    task = await harness.task(ids["cmd"])
    assert (task.status, task.error) == ("failed", DISABLED)
    assert not marker.exists()


@pytest.mark.usefixtures("commands_on")
async def test_a_run_timeout_kills_a_running_command(harness: Harness, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(30)"
    )
    ids = await harness.tree(
        {"name": "root"},
        {
            "name": "cmd",
            "parent_id": "root",
            "params": {"executor_id": "command_executor"},
            "inputs": {"command": [PY, "-c", script]},
        },
    )
    _, outcome = await harness.run(ids["root"], task_timeout=1.0)

    assert outcome.status is RunStatus.TIMEOUT
    assert gone(int(wait_for_file(pid_file)))
    task = await harness.task(ids["cmd"])
    assert (task.status, task.error) == ("failed", "timed out after 1 s (attempt 1)")


@pytest.mark.usefixtures("commands_on")
async def test_a_command_timeout_gives_a_clear_error(harness: Harness) -> None:
    ids = await harness.tree(
        {
            "name": "cmd",
            "params": {"executor_id": "command_executor"},
            "inputs": {"command": [PY, "-c", "import time; time.sleep(30)"], "timeout": 0.3},
        }
    )
    _, outcome = await harness.run(ids["cmd"])

    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None and "timed out" in outcome.error


async def test_rest_refusal_and_http_errors_fail_their_tasks(
    harness: Harness, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await harness.tree(
        {
            "name": "call",
            "params": {"executor_id": "rest_executor"},
            "inputs": {"url": f"{server}/echo"},
        }
    )
    _, refused = await harness.run(ids["call"])
    assert refused.status is RunStatus.FAILED
    assert refused.error == (
        "127.0.0.1 resolves to the non-public address 127.0.0.1; "
        "set APFLOW_REST_ALLOW_PRIVATE_URLS=1 to allow it"
    )

    harness.settings = replace(harness.settings, rest_allow_private_urls=True)
    scheduler = await harness.scheduler()
    _, ok = await harness.run(ids["call"], scheduler)
    assert ok.status is RunStatus.COMPLETED
    assert ok.result["body"] == {"method": "GET", "path": "/echo", "x_test": None, "json": None}
    assert (await harness.task(ids["call"])).result == ok.result

    await harness.repo.update_task(ids["call"], inputs={"url": f"{server}/status/503"})
    _, failed = await harness.run(ids["call"], scheduler)
    assert (failed.status, failed.error) == (
        RunStatus.FAILED,
        f"GET {server}/status/503 answered HTTP 503",
    )
    task = await harness.task(ids["call"])
    assert (task.status, task.result, task.error) == ("failed", None, failed.error)
