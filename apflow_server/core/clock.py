"""The clock: what time it is, as every layer asks it (and tests replace it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware: what is stored and compared everywhere."""
    return datetime.now(UTC)
