"""Calendar feed keys: issue one for a user, list them, revoke one, and find whose calendar a
presented key opens. A user manages their own keys; an admin (and the local operator) anyone's.
"""

from __future__ import annotations

from typing import Any

from apflow_server.core.clock import utcnow
from apflow_server.core.errors import NotFoundError, UnauthenticatedError
from apflow_server.service.audit import Audit, Change
from apflow_server.service.caller import Principal, check_owner, user_scope
from apflow_server.storage import feed_keys
from apflow_server.storage.database import Database
from apflow_server.storage.feed_keys import IssuedKey
from apflow_server.storage.models import FeedKey


class Feeds:
    def __init__(self, database: Database, audit: Audit) -> None:
        self.database = database
        self.audit = audit

    async def issue(
        self, caller: Principal | None, user_id: str, label: str | None = None
    ) -> IssuedKey:
        """A new key (its secret is in the answer only; the database keeps its hash)."""
        check_owner(caller, user_id, "calendar")
        issued = await feed_keys.issue(self.database, user_id, utcnow(), label)
        change = Change("feed_key.issue", "feed_key", issued.record.id, user_id, ("label",))
        await self.audit.record(caller, change)
        return issued

    async def listing(self, caller: Principal | None, user_id: Any = None) -> list[FeedKey]:
        return await feed_keys.listing(self.database, user_scope(caller, user_id))

    async def revoke(self, caller: Principal | None, key_id: str) -> FeedKey:
        """Revoke the key (revoking a revoked key changes nothing). Another user's key is
        'not found', so key ids cannot be probed."""
        record = await feed_keys.get(self.database, key_id)
        if record is None or (caller is not None and not caller.may_act_for(record.user_id)):
            raise NotFoundError(f"no feed key {key_id!r}")
        revoked = await feed_keys.revoke(self.database, key_id, utcnow())
        if revoked is None:  # deleted meanwhile
            raise NotFoundError(f"no feed key {key_id!r}")
        change = Change("feed_key.revoke", "feed_key", key_id, record.user_id, ("revoked_at",))
        await self.audit.record(caller, change)
        return revoked

    async def user_of(self, key: str) -> str | None:
        """The user whose calendar a presented feed key opens."""
        record = await feed_keys.resolve(self.database, key)
        if record is None:
            raise UnauthenticatedError("unknown or revoked feed key")
        return record.user_id


def looks_like_feed_key(value: str) -> bool:
    return feed_keys.looks_like_feed_key(value)
