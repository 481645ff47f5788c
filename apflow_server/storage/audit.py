"""The audit log: appended to, listed, never changed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from apflow_server.storage.batches import insert_rows
from apflow_server.storage.database import Database
from apflow_server.storage.models import AUDIT, AuditEntry
from apflow_server.storage.pages import Page


async def append(database: Database, entries: Sequence[dict[str, Any]]) -> None:
    """Write entries (rows of audit_log) in one transaction."""
    async with database.transaction(write=True) as session:
        await insert_rows(session, AUDIT, entries, unique=("id",))


async def listing(
    database: Database,
    *,
    user_id: str | None,
    target_id: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
) -> Page:
    """Entries, newest first; `user_id` None: everyone's."""
    query = select(AuditEntry)
    if user_id is not None:
        query = query.where(AuditEntry.user_id == user_id)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    async with database.transaction() as session:
        total = await session.scalar(select(func.count()).select_from(query.subquery()))
        ordered = query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        rows = await session.scalars(ordered.limit(limit).offset(offset))
        return Page(list(rows), int(total or 0))
