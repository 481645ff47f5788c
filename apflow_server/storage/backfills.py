"""Backfills: occurrences of a past period, queued as history rows that schedulers claim.

A backfill writes, in one transaction, its own row and one `queued` run row per occurrence it
runs (status `queued`, trigger `backfill`, the occurrence as `scheduled_for`). The history's
unique key (task_id, scheduled_for) keeps one row per occurrence: an occurrence that already
has a row is either left alone (`reprocess: none`, or it did not fail) or its row is queued
again, keeping its earlier error and result visible until the new outcome replaces them.
Claiming those rows (storage/runs.py, `RunStore.claim_backfill`) is what makes each run once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apflow_server.core.types import RunStatus, RunTrigger
from apflow_server.storage.batches import insert_rows
from apflow_server.storage.database import Database
from apflow_server.storage.models import RUNS, Backfill, run_row
from apflow_server.storage.signals import schedule_write

ACTIVE, DONE, CANCELLED = "active", "done", "cancelled"
# Outcomes `reprocess: failed` runs again.
FAILED_OUTCOMES = frozenset(
    {
        RunStatus.FAILED.value,
        RunStatus.TIMEOUT.value,
        RunStatus.ABANDONED.value,
        RunStatus.CANCELLED.value,
        RunStatus.TERMINATED.value,
        RunStatus.MISSED.value,
    }
)
# Rows that are in flight: never queued again.
IN_FLIGHT = frozenset({RunStatus.RUNNING.value, RunStatus.QUEUED.value})


@dataclass(frozen=True)
class Plan:
    """What a backfill of these occurrences does: the ones it queues (new rows, or earlier
    rows run again) and the ones already done."""

    new: list[datetime]
    again: list[tuple[str, datetime]]  # (run id, occurrence)
    done: list[datetime]

    @property
    def queued(self) -> int:
        return len(self.new) + len(self.again)


async def plan(
    session: AsyncSession,
    task_id: str,
    occurrences: Sequence[datetime],
    start: datetime,
    end: datetime,
    reprocess: str,
) -> Plan:
    """Sort the occurrences by what their history rows say (one range read)."""
    rows = await session.execute(
        select(RUNS.c.id, RUNS.c.scheduled_for, RUNS.c.status).where(
            RUNS.c.task_id == task_id,
            RUNS.c.scheduled_for >= start,
            RUNS.c.scheduled_for < end,
        )
    )
    existing = {scheduled_for: (run_id, status) for run_id, scheduled_for, status in rows}
    new, again, done = [], [], []
    for occurrence in occurrences:
        found = existing.get(occurrence)
        if found is None:
            new.append(occurrence)
            continue
        run_id, status = found
        rerun = status not in IN_FLIGHT and (
            reprocess == "all" or (reprocess == "failed" and status in FAILED_OUTCOMES)
        )
        if rerun:
            again.append((run_id, occurrence))
        else:
            done.append(occurrence)
    return Plan(new, again, done)


async def create(
    database: Database,
    *,
    task_id: str,
    user_id: str | None,
    occurrences: Sequence[datetime],
    start: datetime,
    end: datetime,
    reprocess: str,
    order: str,
    max_concurrent: int,
    created_by: str | None,
    now: datetime,
    dry_run: bool,
) -> tuple[Backfill | None, Plan]:
    """Queue the backfill (or, dry, only say what it would queue)."""
    if dry_run:
        async with database.transaction() as session:
            return None, await plan(session, task_id, occurrences, start, end, reprocess)
    async with schedule_write(database) as session:  # schedulers wake to claim the queue
        decided = await plan(session, task_id, occurrences, start, end, reprocess)
        backfill = Backfill(
            id=str(uuid.uuid4()),
            task_id=task_id,
            user_id=user_id,
            start_at=start,
            end_at=end,
            reprocess=reprocess,
            order_by=order,
            max_concurrent=max_concurrent,
            status=ACTIVE if decided.queued else DONE,
            queued=decided.queued,
            created_by=created_by,
            created_at=now,
            finished_at=None if decided.queued else now,
        )
        session.add(backfill)
        await session.flush()
        rows = [
            run_row(
                task_id,
                user_id,
                RunTrigger.BACKFILL.value,
                occurrence,
                RunStatus.QUEUED.value,
                now,
                backfill_id=backfill.id,
            )
            for occurrence in decided.new
        ]
        # A row a scheduler wrote meanwhile wins (the unique key): that occurrence is done.
        await insert_rows(session, RUNS, rows, unique=("task_id", "scheduled_for"))
        for run_id, _ in decided.again:
            await session.execute(
                update(RUNS)
                .where(RUNS.c.id == run_id, RUNS.c.status.not_in(IN_FLIGHT))
                .values(
                    status=RunStatus.QUEUED.value,
                    trigger=RunTrigger.BACKFILL.value,
                    backfill_id=backfill.id,
                    reason=f"queued again by backfill {backfill.id}",
                    instance_id=None,
                    lease_expires_at=None,
                )
            )
    return backfill, decided


async def cancel(database: Database, backfill_id: str, now: datetime) -> Backfill | None:
    """Stop a backfill: its queued occurrences are recorded cancelled; running ones finish."""
    async with database.transaction(write=True) as session:
        backfill = await session.get(Backfill, backfill_id, with_for_update=True)
        if backfill is None:
            return None
        if backfill.status == ACTIVE:
            backfill.status = CANCELLED
            backfill.finished_at = now
            await session.execute(
                update(RUNS)
                .where(RUNS.c.backfill_id == backfill_id, RUNS.c.status == RunStatus.QUEUED.value)
                .values(
                    status=RunStatus.CANCELLED.value,
                    finished_at=now,
                    reason="backfill cancelled",
                )
            )
        return backfill


async def get(database: Database, backfill_id: str) -> Backfill | None:
    async with database.transaction() as session:
        return await session.get(Backfill, backfill_id)


def backfill_to_dict(backfill: Backfill) -> dict[str, Any]:
    return {
        "id": backfill.id,
        "task_id": backfill.task_id,
        "start": backfill.start_at.isoformat(),
        "end": backfill.end_at.isoformat(),
        "reprocess": backfill.reprocess,
        "order": backfill.order_by,
        "max_concurrent": backfill.max_concurrent,
        "status": backfill.status,
        "queued": backfill.queued,
        "created_by": backfill.created_by,
        "created_at": backfill.created_at.isoformat(),
        "finished_at": backfill.finished_at.isoformat() if backfill.finished_at else None,
    }
