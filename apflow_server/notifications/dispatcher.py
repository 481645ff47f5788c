"""Delivering the outbox: claim due deliveries, sign them, POST them, record what happened.

Runs beside the scheduler's claim loop as a task of its own, with its own HTTP connections:
a slow or dead receiver delays only its own deliveries, never a claim. Any number of instances
may run one; the outbox's claim (storage/notifications.py) gives each attempt to one of them.

Retries follow the Standard Webhooks specification's suggested schedule (5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 10 h after the failed attempts; APFLOW_NOTIFY_RETRY_SECONDS), every attempt with
the same webhook-id and a fresh timestamp and signature. An endpoint whose every attempt has
failed for APFLOW_NOTIFY_DISABLE_AFTER is disabled, with the reason, and what waits for it is
cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.execution.rest.transport import GuardedTransport, NonPublicAddressError
from apflow_server.notifications import signing
from apflow_server.notifications.secret_box import SecretBox, SecretUnreadable
from apflow_server.storage import notifications as outbox
from apflow_server.storage.database import Database

logger = logging.getLogger(__name__)

BATCH = 100  # deliveries claimed at once
IDLE_POLL = 1.0  # seconds between looks when nothing signals new events
MAX_CONNECTIONS = 50


class Dispatcher:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.clock = clock
        self.on_outcome = on_outcome  # "delivered", "retrying", "failed", per attempt
        self.box = SecretBox.for_settings(settings)
        # One POST, connecting included, may take this long (APFLOW_NOTIFY_TIMEOUT_SECONDS);
        # a claimed attempt is held for twice that, then another instance may try again.
        self.timeout = float(settings.notify_timeout_seconds)
        self.hold = timedelta(seconds=self.timeout * 2)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._transport: GuardedTransport | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="apflow-notifications")

    async def stop(self) -> None:
        """Let the round in flight finish (its attempts are bounded by the timeout), so what
        was delivered is recorded as delivered rather than sent again; then stop."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), self.timeout + 1)
            except TimeoutError:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    def wake(self) -> None:
        """Something may have been queued (a change signal, or this process's own write)."""
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                busy = await self.deliver_due()
            except Exception as exc:  # the database went away: try again shortly
                logger.warning("notification delivery failed: %s", exc)
                busy = 0
            if busy >= BATCH or self._stopping:
                continue  # more may be due (or stop now)
            try:
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
            except TimeoutError:
                pass

    async def deliver_due(self) -> int:
        """One round: claim a batch of due deliveries, attempt them all concurrently, record
        the outcomes in one transaction. Returns how many were attempted."""
        claimed = await outbox.claim(self.database, BATCH, self.clock(), self.hold)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        disabled = await outbox.record(
            self.database,
            outcomes,
            self.clock(),
            timedelta(seconds=self.settings.notify_disable_after),
        )
        for endpoint_id in disabled:
            logger.warning("notification endpoint %s disabled: every delivery failed", endpoint_id)
        return len(claimed)

    async def _attempt(self, delivery: outbox.ClaimedDelivery) -> outbox.AttemptOutcome:
        status_code: int | None = None
        try:
            secret = self.box.open(delivery.secret_encrypted)
            status_code = await self._post(delivery, secret)
            error = None if 200 <= status_code < 300 else f"the receiver answered {status_code}"
        except SecretUnreadable as exc:
            error = str(exc)
        except NonPublicAddressError as exc:
            error = (
                f"{exc.host} resolves to the non-public address {exc.address}; "
                "set APFLOW_NOTIFY_ALLOW_PRIVATE_URLS=1 to allow it"
            )
        except (httpx.TimeoutException, TimeoutError):
            error = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"cannot reach the receiver: {exc}"
        delivered = error is None
        retry_at = None
        if not delivered:
            retry_at = self._retry_at(delivery.attempt)
        outcome = "delivered" if delivered else ("retrying" if retry_at else "failed")
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if not delivered:
            logger.info(
                "notification %s attempt %d: %s (%s)",
                delivery.id,
                delivery.attempt,
                error,
                f"retry at {retry_at.isoformat()}" if retry_at else "giving up",
            )
        return outbox.AttemptOutcome(
            delivery.id, delivery.endpoint_id, delivered, status_code, error, retry_at
        )

    def _retry_at(self, attempt: int) -> datetime | None:
        schedule = self.settings.notify_retry_seconds
        if attempt > len(schedule):
            return None
        return self.clock() + timedelta(seconds=schedule[attempt - 1])

    async def _post(self, delivery: outbox.ClaimedDelivery, secret: str) -> int:
        timestamp = int(self.clock().timestamp())
        request = httpx.Request(
            "POST",
            delivery.url,
            content=delivery.body.encode(),
            headers={
                **signing.headers(secret, delivery.id, timestamp, delivery.body),
                "user-agent": "apflow-server-notifications",
            },
            extensions={"timeout": httpx.Timeout(self.timeout).as_dict()},
        )
        async with asyncio.timeout(self.timeout):
            response = await self._client().handle_async_request(request)
            await response.aclose()  # the status is the answer; the body is not read
        return response.status_code

    def _client(self) -> GuardedTransport:
        """The dispatcher's own pooled connections, through the private-address guard (the
        address actually connected to is checked, not a second resolution)."""
        if self._transport is None:
            self._transport = GuardedTransport(
                allow_private=self.settings.notify_allow_private_urls,
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS,
                    max_keepalive_connections=MAX_CONNECTIONS,
                    keepalive_expiry=30.0,
                ),
                ssl_context=httpx.create_ssl_context(),
            )
        return self._transport
