"""The webhook signature replay store: a signature is accepted once, by whichever instance
sees it first. The primary key decides, so instances sharing the database agree."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from apflow_server.storage.database import Database
from apflow_server.storage.models import WebhookReplay


async def first_use(
    database: Database, signature: str, task_id: str, expires_at: datetime, now: datetime
) -> bool:
    """Record the signature; False when it was already recorded (a replay)."""
    key = hashlib.sha256(signature.strip().lower().encode()).hexdigest()
    dialect = postgresql if database.dialect == "postgresql" else sqlite
    statement = (
        dialect.insert(WebhookReplay)
        .values(signature_hash=key, task_id=task_id, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["signature_hash"])
        .returning(WebhookReplay.signature_hash)
    )
    async with database.transaction(write=True) as session:
        await session.execute(delete(WebhookReplay).where(WebhookReplay.expires_at < now))
        return await session.scalar(statement) is not None
