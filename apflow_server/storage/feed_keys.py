"""Calendar feed keys: issued per user, stored as SHA-256 only, revocable.

A key is 32 random bytes (URL-safe). Looking it up by its hash is safe against timing: an
attacker learns at most a prefix of a hash of a secret they do not know.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from apflow_server.storage.database import Database
from apflow_server.storage.models import FeedKey

KEY_PREFIX = "afk_"


@dataclass(frozen=True)
class IssuedKey:
    key: str  # shown once, never stored
    record: FeedKey


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_feed_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


async def issue(
    database: Database, user_id: str | None, now: datetime, label: str | None = None
) -> IssuedKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = FeedKey(
        id=secrets.token_hex(8),
        user_id=user_id,
        key_hash=_digest(key),
        label=label,
        created_at=now,
        revoked_at=None,
    )
    async with database.transaction(write=True) as session:
        session.add(record)
    return IssuedKey(key, record)


async def resolve(database: Database, key: str) -> FeedKey | None:
    """The live record of a presented key, or None (unknown or revoked)."""
    async with database.transaction() as session:
        record = await session.scalar(select(FeedKey).where(FeedKey.key_hash == _digest(key)))
    if record is None or record.revoked_at is not None:
        return None
    return record


async def get(database: Database, key_id: str) -> FeedKey | None:
    async with database.transaction() as session:
        return await session.get(FeedKey, key_id)


async def revoke(database: Database, key_id: str, now: datetime) -> FeedKey | None:
    async with database.transaction(write=True) as session:
        record = await session.get(FeedKey, key_id)
        if record is not None and record.revoked_at is None:
            record.revoked_at = now
        return record


async def listing(database: Database, user_id: str | None = None) -> list[FeedKey]:
    async with database.transaction() as session:
        query = select(FeedKey).order_by(FeedKey.created_at)
        if user_id is not None:
            query = query.where(FeedKey.user_id == user_id)
        return list(await session.scalars(query))
