"""Helpers for the HTTP tests: a JSON-RPC client over any httpx-like client (starlette's
TestClient or a real httpx.Client), tokens made by hand, webhook signatures computed from the
documented format (not with the server's own helper), and real server processes on real
ports."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import postgres_server

from apflow_server.storage.database import Database

TESTS_DIR = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "server_process.py"
SCHEDULER_SCRIPT = HERE / "api_scheduler_process.py"

# 64+ bytes: PyJWT warns about shorter HMAC keys (HS512 wants 64).
JWT_SECRET = "jwt-secret-for-the-api-tests-" + "0123456789abcdef" * 3
OTHER_SECRET = "another-secret-nobody-configured-" + "fedcba9876543210" * 3
WEBHOOK_SECRET = "webhook-secret-for-the-api-tests-0123456789"


# Variables that would leak the developer's own setup into a server process.
CLEARED = (
    "APFLOW_DATABASE_URL",
    "APFLOW_HOME",
    "APFLOW_JWT_SECRET",
    "APFLOW_JWT_ALGORITHM",
    "APFLOW_JWT_AUDIENCE",
    "APFLOW_JWT_ISSUER",
    "APFLOW_PUBLIC_URL",
    "APFLOW_RATE_LIMIT_STORAGE",
    "APFLOW_ADMIN_AUTH_TOKEN",
    "APFLOW_API_SERVER_URL",
    "APFLOW_WEBHOOK_SECRET",
    "APFLOW_WEBHOOK_ALLOWED_IPS",
    "APFLOW_TRUSTED_PROXIES",
    "APFLOW_WEBHOOK_RATE_LIMIT",
    "APFLOW_ALLOWED_HOSTS",
    "APFLOW_CORS_ORIGINS",
    "APFLOW_DEBUG",
    "APFLOW_REST_ALLOW_PRIVATE_URLS",
    "APFLOW_REST_MAX_CONNECTIONS",
    "APFLOW_REST_MAX_KEEPALIVE",
    "APFLOW_REST_MAX_RESPONSE_BYTES",
    "APFLOW_NOTIFY_ALLOW_PRIVATE_URLS",
    "APFLOW_NOTIFY_DISABLE_AFTER",
    "APFLOW_NOTIFY_RETRY_SECONDS",
    "APFLOW_SECRET_KEY",
)


# ---------------------------------------------------------------------- tokens


def token(
    sub: str = "alice",
    roles: list[str] | None = None,
    *,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    expires_in: int | None = 3600,
    audience: str | list[str] | None = None,
    issuer: str | None = None,
) -> str:
    claims: dict[str, Any] = {"sub": sub, "roles": roles or [], "iat": int(time.time())}
    if expires_in is not None:
        claims["exp"] = int(time.time()) + expires_in
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)


def admin_token(sub: str = "root", **kwargs: Any) -> str:
    return token(sub, ["admin"], **kwargs)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alg_none_token(sub: str = "root", roles: list[str] | None = None) -> str:
    """An unsigned token, made by hand: header {"alg": "none"}, empty signature."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = {"sub": sub, "roles": roles or ["admin"], "exp": int(time.time()) + 3600}
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# ---------------------------------------------------------------------- HMAC


def signature(secret: str, timestamp: int | str, task_id: str, body: bytes = b"") -> str:
    """Lowercase hex HMAC-SHA256(secret, "{timestamp}.{task_id}.{raw body}"), where a task
    id that holds a dot is written with each "." as "%2E" (ids never hold "%")."""
    message = f"{timestamp}.{task_id.replace('.', '%2E')}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    task_id: str,
    body: bytes = b"",
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> dict[str, str]:
    moment = int(time.time()) if timestamp is None else timestamp
    return {
        "X-Webhook-Timestamp": str(moment),
        "X-Webhook-Signature": signature(secret, moment, task_id, body),
    }


# ---------------------------------------------------------------------- JSON-RPC


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def result(self) -> Any:
        assert isinstance(self.body, dict), self.body
        assert "error" not in self.body, self.body
        return self.body["result"]

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict), self.body
        assert "result" not in self.body, self.body
        error: dict[str, Any] = self.body["error"]
        return error


class Api:
    """JSON-RPC and webhook calls over `http` (a TestClient or an httpx.Client)."""

    def __init__(self, http: Any, auth: str | None = None) -> None:
        self.http = http
        self.auth = auth  # default bearer token, if any
        self._ids = 0

    def as_user(self, auth: str | None) -> Api:
        return Api(self.http, auth)

    def _headers(self, auth: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = bearer(auth) if auth else {}
        headers.update(extra or {})
        return headers

    def post(
        self,
        payload: Any = None,
        *,
        content: bytes | None = None,
        auth: str | None = None,
        headers: Mapping[str, str] | None = None,
        path: str = "/tasks/",
    ) -> Reply:
        data = json.dumps(payload).encode() if content is None else content
        response = self.http.post(
            path,
            content=data,
            headers={
                "content-type": "application/json",
                **self._headers(auth or self.auth, headers),
            },
        )
        body = response.json() if response.content else None
        return Reply(response.status_code, body, response.headers)

    def rpc(self, method: str, params: Any = None, *, auth: str | None = None) -> Reply:
        self._ids += 1
        payload: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self._ids}
        if params is not None:
            payload["params"] = params
        reply = self.post(payload, auth=auth)
        if reply.status == 200:
            assert reply.body["id"] == self._ids, reply.body
            assert reply.body["jsonrpc"] == "2.0", reply.body
        return reply

    def call(self, method: str, params: Any = None, *, auth: str | None = None) -> Any:
        reply = self.rpc(method, params, auth=auth)
        assert reply.status == 200, (reply.status, reply.body)
        return reply.result

    def fail(self, method: str, params: Any = None, *, auth: str | None = None) -> dict[str, Any]:
        reply = self.rpc(method, params, auth=auth)
        assert reply.status == 200, (reply.status, reply.body)
        return reply.error

    def create(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", f"task-{uuid.uuid4().hex[:6]}")
        fields.setdefault("params", {"executor_id": "echo_executor"})
        task: dict[str, Any] = self.call("tasks.create", fields)
        return task

    def runs(self, task_id: str, *, auth: str | None = None) -> list[dict[str, Any]]:
        page = self.call("tasks.runs.list", {"task_id": task_id, "limit": 1000}, auth=auth)
        items: list[dict[str, Any]] = page["items"]
        return items

    def wait_run(
        self, task_id: str, *, count: int = 1, timeout: float = 10, auth: str | None = None
    ) -> list[dict[str, Any]]:
        """Wait until `count` runs of the task have finished; returns the history."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(task_id, auth=auth)
            done = [run for run in runs if run["status"] != "running"]
            if len(done) >= count:
                return runs
            if time.monotonic() > deadline:
                raise AssertionError(f"runs of {task_id} did not finish: {runs}")
            time.sleep(0.05)

    def wait_status(
        self, task_id: str, statuses: set[str], *, timeout: float = 10, auth: str | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task: dict[str, Any] = self.call("tasks.get", {"task_id": task_id}, auth=auth)
            if task["status"] in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task stayed {task['status']}, wanted {statuses}")
            time.sleep(0.05)

    def webhook(
        self,
        task_id: str,
        *,
        query: str = "",
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        auth: str | None = None,
    ) -> Reply:
        response = self.http.post(
            f"/webhook/trigger/{task_id}{query}",
            content=body,
            headers=self._headers(auth, headers),
        )
        content = response.json() if response.content else None
        return Reply(response.status_code, content, response.headers)


def assert_field(error: dict[str, Any], code: int, field_name: str | None = None) -> None:
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    if field_name is not None:
        assert error.get("data", {}).get("field") == field_name, error


# ---------------------------------------------------------------------- databases


async def _create_pg_database() -> str:
    url = postgres_server.database_url(await postgres_server.create_database("apflow_api"))
    database = Database(url)
    try:
        await database.upgrade()
    finally:
        await database.dispose()
    return url


def create_pg_database() -> str:
    """A migrated PostgreSQL database of its own."""
    return asyncio.run(_create_pg_database())


def drop_pg_database(url: str) -> None:
    asyncio.run(postgres_server.drop_database(url.rpartition("/")[2]))


# ---------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(home: Path, **variables: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CLEARED}
    env["APFLOW_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env.update(variables)
    return env


class ServerProcess:
    """`apflow serve` in its own process (through tests/api/server_process.py, which imports
    the test executors first), on a real port."""

    def __init__(
        self, env: Mapping[str, str], *args: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.log = Path(env["APFLOW_HOME"]) / f"server-{self.port}.log"
        self._log_handle = self.log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(SERVER_SCRIPT),
                "serve",
                "--host",
                host,
                "--port",
                str(self.port),
                *args,
            ],
            env=dict(env),
            stdout=self._log_handle,
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
        if not self._log_handle.closed:
            self._log_handle.flush()
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
        self._log_handle.close()
        return code


def assert_stopped_gracefully(server: ServerProcess, code: int) -> None:
    """Stopped by SIGTERM after a clean shutdown. The exit status is 0 or, because uvicorn
    re-raises the signal it caught after shutting down, -SIGTERM: `apflow serve` exiting 0 on
    SIGTERM is checked on its own (test_api_cli.py)."""
    output = server.output
    assert code in {0, -signal.SIGTERM}, (code, output)
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output, output


def client_for(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
