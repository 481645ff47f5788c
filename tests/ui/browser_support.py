"""Helpers for the dashboard's browser tests: Debian's Chromium found (or the tests skipped,
outside CI), a real `apflow serve` process on a free port, tokens made by the real
`apflow config gen-token`, a JSON-RPC client, and a record of what went wrong in a page
(uncaught errors, console errors, failed sub-resources) for the tests to assert empty."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import free_port

APFLOW = Path(sys.executable).parent / "apflow"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"


def chromium_path() -> str:
    """Debian's Chromium (never a browser downloaded by `playwright install`). Without one the
    caller's tests are skipped, except in CI (CI=true), where a missing browser fails them:
    .ci/run installs it."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None
    )
    if found:
        return found
    reason = (
        "browser tests need Debian's Chromium: apt-get install chromium "
        "(.ci/run installs it; CI=true makes its absence a failure)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no chromium on PATH: {reason}", pytrace=False)
    pytest.skip(reason)


def gen_token(env: Mapping[str, str], subject: str, *roles: str) -> str:
    """A JWT for `subject` with `roles`, signed by the real CLI with the server's secret."""
    granted = [arg for role in roles for arg in ("--role", role)]
    done = subprocess.run(
        [str(APFLOW), "config", "gen-token", "--subject", subject, *granted],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Server:
    """`apflow serve --port <free>` (scheduler on) in its own process; its stdout and stderr
    go to one log file in APFLOW_HOME."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.log = Path(env["APFLOW_HOME"]) / f"server-{self.port}.log"
        self._handle = self.log.open("w")
        self.process = subprocess.Popen(
            [str(APFLOW), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=dict(env),
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited {self.process.returncode}: {self.output}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the server did not come up: {self.output}")

    @property
    def output(self) -> str:
        if not self._handle.closed:
            self._handle.flush()
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = -9
        self._handle.close()
        return code


class Rpc:
    """JSON-RPC at /tasks/ as one user."""

    def __init__(self, http: httpx.Client, token: str) -> None:
        self.http = http
        self.token = token
        self._ids = 0

    def call(self, method: str, params: Any = None) -> Any:
        self._ids += 1
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if params is not None:
            payload["params"] = params
        response = self.http.post(
            "/tasks/", json=payload, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.status_code == 200, (response.status_code, response.text)
        body = response.json()
        assert "error" not in body, (method, params, body)
        return body["result"]

    def task(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self.call("tasks.get", {"task_id": task_id})
        return task

    def runs(self, task_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call(
            "tasks.runs.list", {"task_id": task_id, "limit": 100}
        )["items"]
        return items


@dataclass
class PageProblems:
    """What went wrong in the pages a test opened: uncaught script errors, console errors
    (a Content-Security-Policy refusal is one) and responses of 400 or more, except those
    the test expects (`allow`)."""

    errors: list[str] = field(default_factory=list)
    allowed: set[tuple[str, int]] = field(default_factory=set)

    def allow(self, path: str, status: int) -> None:
        self.allowed.add((path, status))

    def watch(self, page: Any) -> None:
        def on_console(message: Any) -> None:
            # A failed load is reported once more, with its URL, by on_response.
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                self.errors.append(f"console error on {page.url}: {message.text}")

        def on_response(response: Any) -> None:
            path = httpx.URL(response.url).path
            if response.status >= 400 and (path, response.status) not in self.allowed:
                self.errors.append(f"{response.status} for {response.request.method} {path}")

        page.on("pageerror", lambda error: self.errors.append(f"uncaught on {page.url}: {error}"))
        page.on("console", on_console)
        page.on("response", on_response)
