"""IANA time zones by name, validated: the one lookup every layer uses."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apflow_server.core.errors import ValidationError


@lru_cache(maxsize=512)
def _load_zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def get_zone(name: str, field: str = "schedule_timezone") -> ZoneInfo:
    """The IANA zone called `name`, or a ValidationError naming `field`."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(field, "must be an IANA time zone name such as 'Europe/Berlin'")
    try:
        return _load_zone(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(field, f"unknown time zone {name!r}") from None
