"""The scheduler's API mode: no database here; a server claims and runs.

It asks the server which schedules are due (`tasks.scheduled.due`) and fires each due
occurrence with `tasks.webhook.trigger(task_id, scheduled_for=...)`. The server claims that
occurrence under the same unique key as its own scheduler, so any number of API-mode schedulers
(and the server's own) fire each occurrence at most once.

Its token: `admin_auth_token` from config.cli.yaml when set, else an admin JWT it signs with
the config's `jwt_secret` (created when missing) and keeps for the session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.core.errors import ApflowError
from apflow_server.core.tokens import issue_token
from apflow_server.scheduler.base import SchedulerConfig, SchedulerState, SchedulerStats
from apflow_server.scheduler.internal import new_instance_id

logger = logging.getLogger("apflow_server.scheduler")

TOKEN_LIFETIME = 7 * 86400


class ApiError(ApflowError):
    """The server refused a call or could not be reached."""


@dataclass(frozen=True)
class ApiToken:
    value: str
    subject: str
    source: str  # config (admin_auth_token) or generated (signed with jwt_secret)
    # A generated token is signed again before it expires (monotonic seconds), by `renew`.
    renew_at: float | None = None
    renew: Callable[[], ApiToken] | None = field(default=None, repr=False, compare=False)


def resolve_token(settings: Settings, jwt_secret: str | None) -> ApiToken:
    if settings.admin_auth_token:
        return ApiToken(settings.admin_auth_token, _subject_of(settings.admin_auth_token), "config")
    if not jwt_secret:
        raise ApiError("API mode needs admin_auth_token or jwt_secret in config.cli.yaml")
    subject = f"scheduler@{socket.gethostname()}"
    token = issue_token(
        jwt_secret,
        subject,
        roles=["admin"],
        expires_in=TOKEN_LIFETIME,
        algorithm=settings.jwt_algorithm,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    # Signed again a day before it expires: a scheduler runs for longer than a token lives.
    renew_at = time.monotonic() + TOKEN_LIFETIME - 86400
    return ApiToken(
        token, subject, "generated", renew_at, lambda: resolve_token(settings, jwt_secret)
    )


def _subject_of(token: str) -> str:
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return "(opaque token)"
    return str(claims.get("sub", "(no subject)"))


class ApiScheduler:
    """Fires due occurrences through a server's JSON-RPC API."""

    mode = "api"

    def __init__(self, config: SchedulerConfig, settings: Settings, token: ApiToken) -> None:
        if not settings.api_server_url:
            raise ApiError("no api_server_url configured")
        self.config = config
        self.settings = settings
        self.token = token
        self.url = settings.api_server_url.rstrip("/") + "/tasks/"
        self.instance_id = new_instance_id()
        self.stats = SchedulerStats(instance_id=self.instance_id)
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ids = 0

    @property
    def heartbeat_interval(self) -> int:
        return max(1, round(self.config.heartbeat_interval or self.settings.heartbeat_seconds))

    @property
    def state(self) -> SchedulerState:
        return self.stats.state

    async def start(self) -> None:
        self.stats.state = SchedulerState.STARTING
        self._client = httpx.AsyncClient(
            timeout=30, headers={"Authorization": f"Bearer {self.token.value}"}
        )
        try:
            await self.call("tasks.scheduled.due", {"limit": 1})
        except Exception:
            self.stats.state = SchedulerState.ERROR
            await self._client.aclose()
            raise
        self.stats.started_at = utcnow()
        self.stats.state = SchedulerState.RUNNING
        logger.info(
            "scheduler %s started: host=%s pid=%s mode=api server=%s user=%s "
            "token subject=%s source=%s",
            self.instance_id,
            socket.gethostname(),
            os.getpid(),
            self.settings.api_server_url,
            self.config.user_id or "*",
            self.token.subject,
            self.token.source,
        )
        await self._beat()
        self._task = asyncio.create_task(self._loop(), name="apflow-api-scheduler")
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="apflow-heartbeat")

    async def stop(self, grace: float | None = None) -> None:
        if self.state in {SchedulerState.STOPPED, SchedulerState.STOPPING}:
            return
        self.stats.state = SchedulerState.STOPPING
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        self.stats.state = SchedulerState.STOPPED
        await self._beat()
        if self._client is not None:
            await self._client.aclose()
        logger.info("scheduler %s stopped", self.instance_id)

    async def get_status(self) -> SchedulerStats:
        return self.stats

    async def _heartbeats(self) -> None:
        """Beat every heartbeat interval, whatever the poll interval, so `scheduler status`
        on any host sees this scheduler (the server writes its instance row)."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._beat()

    async def _beat(self) -> None:
        try:
            await self.call(
                "scheduler.heartbeat",
                {
                    "instance_id": self.instance_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "state": self.state.value,
                    "user_filter": self.config.user_id,
                    "started_at": (self.stats.started_at or utcnow()).isoformat(),
                    "stats": {
                        key: value
                        for key, value in self.stats.to_dict().items()
                        if key not in {"extra", "instance_id"}
                    },
                    "heartbeat_interval": self.heartbeat_interval,
                },
            )
        except ApiError as exc:
            logger.warning("heartbeat not recorded: %s", exc)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        assert self._client is not None
        token = self.token
        if token.renew is not None and token.renew_at is not None:
            if time.monotonic() >= token.renew_at:
                self.token = token.renew()
                self._client.headers["Authorization"] = f"Bearer {self.token.value}"
                logger.info("scheduler %s signed a fresh API token", self.instance_id)
        self._ids += 1
        request = {"jsonrpc": "2.0", "method": method, "params": params, "id": self._ids}
        try:
            response = await self._client.post(self.url, json=request)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise ApiError(f"{self.url} answered HTTP {response.status_code}") from None
        if not isinstance(body, dict):
            raise ApiError(f"{self.url} answered an unexpected body")
        if "error" in body:
            error = body["error"] or {}
            raise ApiError(f"{method}: {error.get('message')} ({error.get('code')})")
        return body.get("result")

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                delay = await self._poll_once()
                failures = 0
            except ApiError as exc:
                failures += 1
                delay = min(0.5 * 2**failures, 30.0)
                logger.warning("%s; retrying in %.1f s", exc, delay)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    async def _poll_once(self) -> float:
        self.stats.last_poll_at = utcnow()
        params: dict[str, Any] = {"limit": self.config.max_concurrent_tasks}
        if self.config.user_id:
            params["user_id"] = self.config.user_id
        due = await self.call("tasks.scheduled.due", params)
        for task in due.get("items", []):
            outcome = await self.call(
                "tasks.webhook.trigger",
                {"task_id": task["id"], "scheduled_for": task["next_run_at"]},
            )
            if outcome.get("status") == "triggered":
                self.stats.tasks_executed += 1
        if due.get("items"):
            return 0.0
        return await self._sleep_until_next()

    async def _sleep_until_next(self) -> float:
        params: dict[str, Any] = {"limit": 1}
        if self.config.user_id:
            params["user_id"] = self.config.user_id
        upcoming = await self.call("tasks.scheduled.list", params)
        items = upcoming.get("items", [])
        if not items or not items[0].get("next_run_at"):
            return self.config.poll_interval
        next_at = datetime.fromisoformat(items[0]["next_run_at"])
        self.stats.next_wake_at = next_at
        seconds = (next_at - utcnow()).total_seconds()
        if seconds <= 0:  # running past its occurrence: the server settles it when done
            return 1.0
        return min(seconds, self.config.poll_interval)
