"""The audit log of the service: every change a caller makes, recorded once here.

Each operation that changes something calls `record` after the change has committed, with the
names of the fields it touched (never their values). Concurrent records share one transaction
(a group commit), so a burst of webhook triggers costs one audit write per batch, not one per
trigger; `record` returns once its entry is committed.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from apflow_server.core.clock import Clock, iso_utc, utcnow
from apflow_server.core.errors import ValidationError
from apflow_server.core.task_fields import parse_utc_instant
from apflow_server.service.caller import Principal, user_scope
from apflow_server.storage import audit as store
from apflow_server.storage.database import Database
from apflow_server.storage.group_commit import GroupCommit
from apflow_server.storage.models import AuditEntry
from apflow_server.storage.pages import Page


@dataclass(frozen=True)
class Change:
    action: str  # e.g. task.update, schedule.pause, endpoint.create
    target_type: str  # task, backfill, feed_key, endpoint
    target_id: str
    owner: str | None  # whose object: its owner sees the entry
    fields: tuple[str, ...] = ()


class Audit:
    def __init__(self, database: Database, local_actor: str, clock: Clock = utcnow) -> None:
        self.database = database
        # Who the local operator (no principal) is: `cli:<os user>` for the CLI, `local` for
        # a server with authentication off.
        self.local_actor = local_actor
        self.clock = clock
        self._writes: GroupCommit[dict[str, Any], None] = GroupCommit(self._append)

    def actor(self, caller: Principal | None) -> str:
        if caller is None:
            return self.local_actor
        if caller.subject is None:  # a verify hook or an HMAC signature that named no user
            return caller.source
        return caller.subject

    async def record(self, caller: Principal | None, change: Change) -> None:
        await self.record_many(caller, [change])

    async def record_many(self, caller: Principal | None, changes: Iterable[Change]) -> None:
        actor, now = self.actor(caller), self.clock()
        rows = [
            {
                "id": secrets.token_hex(12),
                "at": now,
                "actor": actor,
                "user_id": change.owner,
                "action": change.action,
                "target_type": change.target_type,
                "target_id": change.target_id,
                "fields": sorted(set(change.fields)),
            }
            for change in changes
        ]
        await asyncio.gather(*(self._writes.submit(row) for row in rows))

    async def _append(self, rows: Sequence[dict[str, Any]]) -> list[None]:
        await store.append(self.database, rows)
        return [None] * len(rows)

    async def listing(
        self,
        caller: Principal | None,
        *,
        task_id: Any = None,
        actor: Any = None,
        since: Any = None,
        until: Any = None,
        user_id: Any = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page:
        """Entries, newest first: a user's own objects'; an admin's (and the local
        operator's) anyone's."""
        for name, value in (("task_id", task_id), ("actor", actor)):
            if value is not None and not isinstance(value, str):
                raise ValidationError(name, "must be a string")
        return await store.listing(
            self.database,
            user_id=user_scope(caller, user_id),
            target_id=task_id,
            actor=actor,
            since=parse_utc_instant("since", since),
            until=parse_utc_instant("until", until),
            limit=limit,
            offset=offset,
        )


def entry_to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso_utc(entry.at),
        "actor": entry.actor,
        "user_id": entry.user_id,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "fields": list(entry.fields or []),
    }
