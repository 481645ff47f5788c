"""Notification endpoints and the outbox of deliveries.

Why events are never lost, and who sends each:

* Written with their cause. `enqueue` runs inside the transaction that records the change (a
  run's outcome, a missed occurrence, a pause): both commit or neither does. It writes one
  delivery per (event, endpoint that asked for its type), with the body already rendered, so
  what is sent does not depend on what the endpoint or task look like later.
* Taken by one instance at a time. `claim` selects due deliveries `FOR UPDATE SKIP LOCKED`
  (on SQLite the write transaction serialises claimers) and moves each one's next_attempt_at
  past the attempt's timeout: it stays `pending`, nobody else takes it meanwhile, and if the
  delivering process dies it is due again then. Delivery is therefore at least once, and a
  repeat carries the same id (the webhook-id) so receivers can drop it.
* An attempt's outcome is recorded only while the delivery is still pending: a delivery that
  another instance finished after this one's claim expired is left as it is.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apflow_server.core.clock import iso_utc
from apflow_server.core.events import Event
from apflow_server.storage.batches import among, insert_rows
from apflow_server.storage.database import Database
from apflow_server.storage.models import (
    DELIVERIES,
    ENDPOINTS,
    NotificationDelivery,
    NotificationEndpoint,
)
from apflow_server.storage.pages import Page
from apflow_server.storage.signals import notify_in_transaction

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"  # given up: out of attempts
CANCELLED = "cancelled"  # its endpoint was disabled or deleted
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED, CANCELLED)


def new_endpoint_id() -> str:
    return "ep_" + secrets.token_hex(8)


def new_webhook_id() -> str:
    return "msg_" + secrets.token_hex(12)


# ---------------------------------------------------------------------- endpoints


async def create_endpoint(database: Database, endpoint: NotificationEndpoint) -> None:
    async with database.transaction(write=True) as session:
        session.add(endpoint)


async def get_endpoint(database: Database, endpoint_id: str) -> NotificationEndpoint | None:
    async with database.transaction() as session:
        return await session.get(NotificationEndpoint, endpoint_id)


async def list_endpoints(database: Database, user_id: str | None) -> list[NotificationEndpoint]:
    """One user's endpoints (every user's for None), oldest first."""
    async with database.transaction() as session:
        query = select(NotificationEndpoint).order_by(NotificationEndpoint.created_at)
        if user_id is not None:
            query = query.where(NotificationEndpoint.user_id == user_id)
        return list(await session.scalars(query))


async def update_endpoint(
    database: Database, endpoint_id: str, values: dict[str, Any], now: datetime
) -> NotificationEndpoint | None:
    """Change an endpoint; disabling it cancels what waits for it, enabling it clears why it
    was disabled and starts its failure clock again."""
    async with database.transaction(write=True) as session:
        endpoint = await session.get(NotificationEndpoint, endpoint_id, with_for_update=True)
        if endpoint is None:
            return None
        for name, value in values.items():
            setattr(endpoint, name, value)
        if values.get("enabled") is True:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        if values.get("enabled") is False:
            await _cancel_pending(session, endpoint_id, "the endpoint was disabled")
        endpoint.updated_at = now
        return endpoint


async def delete_endpoint(database: Database, endpoint_id: str) -> bool:
    async with database.transaction(write=True) as session:
        endpoint = await session.get(NotificationEndpoint, endpoint_id)
        if endpoint is None:
            return False
        await session.execute(DELIVERIES.delete().where(DELIVERIES.c.endpoint_id == endpoint_id))
        await session.delete(endpoint)
        return True


async def _cancel_pending(session: AsyncSession, endpoint_id: str, reason: str) -> None:
    await session.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.endpoint_id == endpoint_id, DELIVERIES.c.status == PENDING)
        .values(status=CANCELLED, last_error=reason)
    )


# ---------------------------------------------------------------------- the outbox


def owner_has_endpoint(user_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether the owner in `user_id` (a column of the enclosing query) has an enabled
    endpoint: `enqueue` writes nothing for the events of one who has none."""
    return exists().where(
        ENDPOINTS.c.enabled.is_(True),
        or_(
            ENDPOINTS.c.user_id == user_id,
            and_(ENDPOINTS.c.user_id.is_(None), user_id.is_(None)),
        ),
    )


async def enqueue(session: AsyncSession, events: Sequence[Event], now: datetime) -> int:
    """Write the deliveries of `events`, in the caller's transaction: one per event and
    enabled endpoint of its user that asked for its type. Returns how many were written."""
    if not events:
        return 0
    dialect = (await session.connection()).dialect.name
    users = {event.user_id for event in events}
    known = [user for user in users if user is not None]
    whose = [among(ENDPOINTS.c.user_id, known, dialect)] if known else []
    if None in users:  # tasks without a user (authentication off): the operator's endpoints
        whose.append(ENDPOINTS.c.user_id.is_(None))
    query = select(ENDPOINTS.c.id, ENDPOINTS.c.user_id, ENDPOINTS.c.events).where(
        ENDPOINTS.c.enabled.is_(True), or_(*whose)
    )
    endpoints = list(await session.execute(query))
    if not endpoints:
        return 0
    stamp = iso_utc(now)
    rows = []
    for event in events:
        body: str | None = None
        for endpoint_id, user_id, wanted in endpoints:
            if user_id != event.user_id:
                continue
            if event.endpoint_id is not None:  # for one endpoint (a test ping), asked or not
                if event.endpoint_id != endpoint_id:
                    continue
            elif event.type not in (wanted or ()):
                continue
            if body is None:  # the same bytes for every endpoint of the event
                body = json.dumps(
                    {"type": event.type, "timestamp": stamp, "data": event.data},
                    separators=(",", ":"),
                    default=str,
                )
            rows.append(
                {
                    "id": new_webhook_id(),
                    "endpoint_id": endpoint_id,
                    "user_id": event.user_id,
                    "event_type": event.type,
                    "body": body,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_status_code": None,
                    "last_error": None,
                    "created_at": now,
                    "delivered_at": None,
                }
            )
    if rows:
        await insert_rows(session, DELIVERIES, rows, unique=("id",))
        await notify_in_transaction(session)
    return len(rows)


async def any_due(database: Database, now: datetime) -> bool:
    """Whether some delivery is due: a plain read, so that looking costs no write lock."""
    async with database.transaction() as session:
        found = await session.scalar(
            select(DELIVERIES.c.id)
            .where(DELIVERIES.c.status == PENDING, DELIVERIES.c.next_attempt_at <= now)
            .limit(1)
        )
    return found is not None


@dataclass(frozen=True)
class ClaimedDelivery:
    id: str
    endpoint_id: str
    url: str
    secret_encrypted: str
    body: str
    attempt: int  # 1 for the first
    created_at: datetime


async def claim(
    database: Database, limit: int, now: datetime, hold: timedelta
) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries for one attempt each, holding them for `hold`."""
    async with database.transaction(write=True) as session:
        due = (
            select(DELIVERIES.c.id)
            .where(DELIVERIES.c.status == PENDING, DELIVERIES.c.next_attempt_at <= now)
            .order_by(DELIVERIES.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(await session.scalars(due))
        if not ids:
            return []
        dialect = database.dialect
        await session.execute(
            update(DELIVERIES)
            .where(among(DELIVERIES.c.id, ids, dialect))
            .values(next_attempt_at=now + hold, attempts=DELIVERIES.c.attempts + 1)
        )
        rows = await session.execute(
            select(
                DELIVERIES.c.id,
                DELIVERIES.c.endpoint_id,
                ENDPOINTS.c.url,
                ENDPOINTS.c.secret_encrypted,
                DELIVERIES.c.body,
                DELIVERIES.c.attempts,
                DELIVERIES.c.created_at,
            )
            .join(ENDPOINTS, ENDPOINTS.c.id == DELIVERIES.c.endpoint_id)
            .where(among(DELIVERIES.c.id, ids, dialect))
        )
        return [ClaimedDelivery(*row) for row in rows]


@dataclass(frozen=True)
class AttemptOutcome:
    delivery_id: str
    endpoint_id: str
    delivered: bool
    status_code: int | None
    error: str | None
    # When to try again (None: give up, the delivery is failed).
    retry_at: datetime | None


async def record(
    database: Database, outcomes: Sequence[AttemptOutcome], now: datetime, disable_after: timedelta
) -> list[str]:
    """Record attempts' outcomes; returns the endpoints disabled for failing since longer
    than `disable_after` (their pending deliveries are cancelled)."""
    disabled: list[str] = []
    if not outcomes:
        return disabled
    async with database.transaction(write=True) as session:
        # Deliveries (the common case) in one statement; failures one by one (each its own
        # answer and retry time).
        by_code: dict[int | None, list[str]] = {}  # one statement per answer (200, 204...)
        for outcome in outcomes:
            if outcome.delivered:
                by_code.setdefault(outcome.status_code, []).append(outcome.delivery_id)
        for code, ids in by_code.items():
            await session.execute(
                update(DELIVERIES)
                .where(among(DELIVERIES.c.id, ids, database.dialect))
                .where(DELIVERIES.c.status == PENDING)
                .values(status=DELIVERED, delivered_at=now, last_error=None, last_status_code=code)
            )
        for outcome in outcomes:
            if outcome.delivered:
                continue
            values: dict[str, Any] = {
                "last_status_code": outcome.status_code,
                "last_error": outcome.error,
            }
            if outcome.retry_at is None:
                values.update(status=FAILED)
            else:
                values.update(next_attempt_at=outcome.retry_at)
            await session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == outcome.delivery_id, DELIVERIES.c.status == PENDING)
                .values(**values)
            )
        # Endpoints in id order (the lock order), each judged by its latest attempt here.
        latest = {outcome.endpoint_id: outcome for outcome in outcomes}
        for endpoint_id in sorted(latest):
            endpoint = await session.get(NotificationEndpoint, endpoint_id, with_for_update=True)
            if endpoint is None:
                continue
            if latest[endpoint_id].delivered:
                endpoint.failing_since = None
                continue
            if endpoint.failing_since is None:
                endpoint.failing_since = now
            elif endpoint.enabled and now - endpoint.failing_since >= disable_after:
                reason = (
                    f"every delivery failed for {_duration(now - endpoint.failing_since)} "
                    f"(last: {latest[endpoint_id].error})"
                )
                endpoint.enabled = False
                endpoint.disabled_reason = reason
                endpoint.updated_at = now
                await _cancel_pending(session, endpoint_id, "the endpoint was disabled")
                disabled.append(endpoint_id)
    return disabled


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds} s"


async def list_deliveries(
    database: Database,
    *,
    user_id: str | None,
    endpoint_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
) -> Page:
    async with database.transaction() as session:
        query = select(NotificationDelivery)
        if user_id is not None:
            query = query.where(NotificationDelivery.user_id == user_id)
        if endpoint_id is not None:
            query = query.where(NotificationDelivery.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(NotificationDelivery.status == status)
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        page = query.order_by(NotificationDelivery.created_at.desc()).limit(limit).offset(offset)
        return Page(list(await session.scalars(page)), int(total or 0))


async def backlog(database: Database, now: datetime) -> tuple[int, float]:
    """Pending deliveries and the age in seconds of the oldest (0 when none)."""
    async with database.transaction() as session:
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(DELIVERIES.c.created_at)).where(
                    DELIVERIES.c.status == PENDING
                )
            )
        ).one()
    if not count or oldest is None:
        return 0, 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return int(count), max((now - oldest).total_seconds(), 0.0)
