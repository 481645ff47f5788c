"""Mapping between local wall-clock times and UTC instants.

RFC 5545 §3.3.5 decides what a wall-clock time means on a transition day, so the scheduler
fires exactly when a calendar app shows the event:

* a local time inside a spring-forward gap is read with the offset *before* the gap
  (02:30 in a 02:00→03:00 gap becomes 03:30 new time);
* a local time that occurs twice at fall-back means its *first* occurrence.

PEP 495's ``fold=0`` has exactly these semantics, so ``zoneinfo`` does the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from zoneinfo import ZoneInfo

from apflow_server.core.errors import ValidationError
from apflow_server.core.zones import get_zone as get_zone


class LocalKind(Enum):
    REGULAR = "regular"  # occurs exactly once
    GAP = "gap"  # skipped by a spring-forward transition
    AMBIGUOUS = "ambiguous"  # occurs twice around a fall-back transition


@dataclass(frozen=True)
class ResolvedLocal:
    kind: LocalKind
    first: datetime  # the RFC 5545 instant (UTC)
    second: datetime | None  # the later instant of an ambiguous time, else None


def resolve_local(naive: datetime, zone: ZoneInfo) -> ResolvedLocal:
    """Classify a naive wall-clock time in `zone` and give its UTC instant(s)."""
    earlier = naive.replace(tzinfo=zone, fold=0)
    later = naive.replace(tzinfo=zone, fold=1)
    if earlier.utcoffset() == later.utcoffset():
        return ResolvedLocal(LocalKind.REGULAR, earlier.astimezone(UTC), None)
    first = earlier.astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) != naive:
        return ResolvedLocal(LocalKind.GAP, first, None)
    return ResolvedLocal(LocalKind.AMBIGUOUS, first, later.astimezone(UTC))


def to_local_naive(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def ensure_utc(value: datetime, field: str) -> datetime:
    """An aware datetime in UTC; naive values are refused because their meaning is a guess."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "must carry a UTC offset, e.g. 2025-01-15T09:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(field, "must lie between the years 1 and 9999 in UTC") from None
