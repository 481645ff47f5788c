"""The clock: what time it is, as every layer asks it (and tests replace it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware: what is stored and compared everywhere."""
    return datetime.now(UTC)


def iso_utc(value: datetime | None) -> str | None:
    """An instant as every reply and payload spells it: ISO 8601 in UTC with a Z. A naive
    value is UTC (SQLite gives stored instants back without their zone)."""
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
