"""Scheduler instances: one heartbeat row per process, so `apflow scheduler status` can show
every live scheduler and its stats, whichever machine it runs on."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from apflow_server.storage.database import Database
from apflow_server.storage.models import SchedulerInstance

# Rows of instances silent for this long are removed by any beating instance.
FORGET_AFTER = timedelta(days=1)
# The beat interval assumed for a row that does not say its own.
DEFAULT_HEARTBEAT = 5.0


async def beat(database: Database, row: dict[str, Any]) -> None:
    """Insert or refresh this instance's row."""
    dialect = postgresql if database.dialect == "postgresql" else sqlite
    statement = dialect.insert(SchedulerInstance).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={key: statement.excluded[key] for key in row if key != "id"},
    )
    async with database.transaction(write=True) as session:
        await session.execute(statement)
        await session.execute(
            delete(SchedulerInstance).where(
                SchedulerInstance.heartbeat_at < row["heartbeat_at"] - FORGET_AFTER
            )
        )


async def instances(database: Database) -> list[SchedulerInstance]:
    async with database.transaction() as session:
        query = select(SchedulerInstance).order_by(SchedulerInstance.started_at)
        return list(await session.scalars(query))


def is_live(instance: SchedulerInstance, now: datetime, interval: float) -> bool:
    """Live: beating recently (three missed beats make it stale) and not stopped."""
    fresh = now - instance.heartbeat_at <= timedelta(seconds=max(3 * interval, 15))
    return fresh and instance.state not in {"stopped", "error"}


def heartbeat_interval(instance: SchedulerInstance) -> float:
    """How often the instance said it beats (its stats carry it)."""
    value = (instance.stats or {}).get("heartbeat_interval", DEFAULT_HEARTBEAT)
    return float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_HEARTBEAT


async def live_instances(database: Database, now: datetime) -> list[SchedulerInstance]:
    """The instances alive at `now`, oldest first."""
    return [row for row in await instances(database) if is_live(row, now, heartbeat_interval(row))]
