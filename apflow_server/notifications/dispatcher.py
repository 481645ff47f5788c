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
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.execution.rest.connection import TransportError, TransportTimeout
from apflow_server.execution.rest.transport import GuardedClient, NonPublicAddressError
from apflow_server.notifications import signing
from apflow_server.notifications.secret_box import SecretBox, SecretUnreadable
from apflow_server.storage import notifications as outbox
from apflow_server.storage.database import Database

logger = logging.getLogger(__name__)

BATCH = 100  # deliveries claimed at once
IDLE_POLL = 1.0  # seconds between looks when nothing signals new events
WAKE_GAP = 0.05  # seconds: signals arriving within this are answered by one look
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
        self._http: GuardedClient | None = None

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
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

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
            if self._stopping:
                break
            if busy >= BATCH:
                continue  # more may be due
            try:
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
                # Change signals come with every commit of a busy scheduler: one look per
                # WAKE_GAP answers them all.
                await asyncio.sleep(WAKE_GAP)
            except TimeoutError:
                pass

    async def deliver_due(self) -> int:
        """One round: claim a batch of due deliveries, attempt them all concurrently, record
        the outcomes in one transaction. Returns how many were attempted."""
        now = self.clock()
        if not await outbox.any_due(self.database, now):  # a read; the claim writes
            return 0
        claimed = await outbox.claim(self.database, BATCH, now, self.hold)
        if not claimed:
            return 0
        secrets: dict[str, str | SecretUnreadable] = {}  # decrypted once per endpoint
        outcomes = await asyncio.gather(*(self._attempt(delivery, secrets) for delivery in claimed))
        disabled = await outbox.record(
            self.database,
            outcomes,
            self.clock(),
            timedelta(seconds=self.settings.notify_disable_after),
        )
        for endpoint_id in disabled:
            logger.warning("notification endpoint %s disabled: every delivery failed", endpoint_id)
        if self.on_outcome is not None:  # counted once recorded: a count never runs ahead
            for outcome in outcomes:
                self.on_outcome(_outcome_name(outcome))
        return len(claimed)

    async def _attempt(
        self, delivery: outbox.ClaimedDelivery, secrets: dict[str, str | SecretUnreadable]
    ) -> outbox.AttemptOutcome:
        status_code: int | None = None
        try:
            secret = secrets.get(delivery.endpoint_id)
            if secret is None:
                try:
                    secret = self.box.open(delivery.secret_encrypted)
                except SecretUnreadable as unreadable:
                    secret = unreadable
                secrets[delivery.endpoint_id] = secret
            if isinstance(secret, SecretUnreadable):
                raise secret
            status_code = await self._post(delivery, secret)
            error = None if 200 <= status_code < 300 else f"the receiver answered {status_code}"
        except SecretUnreadable as exc:
            error = str(exc)
        except NonPublicAddressError as exc:
            error = (
                f"{exc.host} resolves to the non-public address {exc.address}; "
                "set APFLOW_NOTIFY_ALLOW_PRIVATE_URLS=1 to allow it"
            )
        except (TransportTimeout, TimeoutError):
            error = f"no answer within {self.timeout:g} s"
        except TransportError as exc:
            error = f"cannot reach the receiver: {exc}"
        delivered = error is None
        retry_at = None
        if not delivered:
            retry_at = self._retry_at(delivery.attempt)
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
        headers = {
            **signing.headers(secret, delivery.id, timestamp, delivery.body),
            "user-agent": "apflow-server-notifications",
        }
        async with asyncio.timeout(self.timeout):
            response = await self._client().request(
                "POST",
                httpx.URL(delivery.url),
                headers=headers,
                body=delivery.body.encode(),
                timeout=self.timeout,
            )
            response.close()  # the status is the answer; the body is not read
        return response.status

    def _client(self) -> GuardedClient:
        """The dispatcher's own pooled connections, through the private-address guard (the
        address actually connected to is checked, not a second resolution)."""
        if self._http is None:
            self._http = GuardedClient(
                allow_private=self.settings.notify_allow_private_urls,
                ssl_context=httpx.create_ssl_context(),
                max_connections=MAX_CONNECTIONS,
                max_keepalive=MAX_CONNECTIONS,
                keepalive_expiry=30.0,
            )
        return self._http


def _outcome_name(outcome: outbox.AttemptOutcome) -> str:
    if outcome.delivered:
        return "delivered"
    return "retrying" if outcome.retry_at is not None else "failed"


class DispatcherThread:
    """A Dispatcher on an event loop of its own, in a thread, with its own connections.

    Delivering is CPU work for the process (building, signing and sending requests, recording
    outcomes): on the scheduler's event loop a burst of deliveries delayed the timers that
    start runs at their instant (p99 lateness 45-60 ms against 2 ms idle). On its own loop it
    competes only for the interpreter, which switches threads every few milliseconds."""

    def __init__(
        self,
        database_url: str,
        settings: Settings,
        *,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.database_url = database_url
        self.settings = settings
        self.on_outcome = on_outcome
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher: Dispatcher | None = None
        self._done: asyncio.Event | None = None
        self._ready = threading.Event()
        self._wake_pending = threading.Event()  # one cross-thread wake at a time
        self._thread = threading.Thread(target=self._run, name="apflow-notifications", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def wake(self) -> None:
        loop, dispatcher = self._loop, self._dispatcher
        if loop is None or dispatcher is None or loop.is_closed():
            return
        if self._wake_pending.is_set():
            return  # already on its way
        self._wake_pending.set()

        def deliver() -> None:
            self._wake_pending.clear()
            dispatcher.wake()

        loop.call_soon_threadsafe(deliver)

    async def stop(self) -> None:
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            loop.call_soon_threadsafe(done.set)
        await asyncio.to_thread(self._thread.join, self.settings.notify_timeout_seconds + 5)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        database = Database(
            self.database_url,
            pool_size=2,
            pooler=self.settings.database_pooler,
            listen_url=self.settings.database_listen_url,
        )
        self._dispatcher = Dispatcher(database, self.settings, on_outcome=self.on_outcome)
        self._done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._dispatcher.start()
        self._ready.set()
        try:
            await self._done.wait()
        finally:
            await self._dispatcher.stop()
            await database.dispose()
