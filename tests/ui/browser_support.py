"""Helpers for the dashboard's browser tests: Debian's Chromium found (or the tests skipped,
outside CI), a real `apflow serve` process on a free port, tokens made by the real
`apflow config gen-token`, a JSON-RPC client, and a record of what went wrong in a page
(uncaught errors, console errors, failed sub-resources) for the tests to assert empty."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

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
