"""Business calendars: a user's named sets of closed days (weekends, public holidays, explicit
dates, dates from an ICS file) that schedules follow. A user sees and changes only their own
calendars (another user's is "not found"); admins and the local operator anyone's, naming the
user. What a calendar closes is computed in schedules/calendars.py."""

from __future__ import annotations

from datetime import date
from typing import Any

from apflow_server.core.clock import Clock, iso_utc, utcnow
from apflow_server.core.errors import NotFoundError, ValidationError
from apflow_server.core.task_fields import is_valid_unicode
from apflow_server.core.zones import get_zone
from apflow_server.schedules.calendars import build_calendar
from apflow_server.service.audit import Audit, Change
from apflow_server.service.caller import Principal, user_scope
from apflow_server.storage import calendars as store
from apflow_server.storage.database import Database
from apflow_server.storage.models import BusinessCalendar

MAX_NAME = 100
MAX_CALENDARS_PER_USER = 100
MAX_DAYS = 3660  # one `days` listing: ten years
DEFINITION = ("timezone", "weekend", "holidays", "dates", "ics")


class Calendars:
    def __init__(self, database: Database, audit: Audit, clock: Clock = utcnow) -> None:
        self.database = database
        self.audit = audit
        self.clock = clock

    async def create(
        self,
        caller: Principal | None,
        *,
        name: Any,
        timezone: Any = None,
        weekend: Any = None,
        holidays: Any = None,
        dates: Any = None,
        ics: Any = None,
        user_id: Any = None,
    ) -> BusinessCalendar:
        owner = _owner(caller, user_id)
        fields = _definition(
            {"timezone": timezone, "weekend": weekend, "holidays": holidays, "dates": dates}
            | {"ics": ics}
        )
        if await store.count_of(self.database, owner) >= MAX_CALENDARS_PER_USER:
            raise ValidationError("name", f"at most {MAX_CALENDARS_PER_USER} calendars per user")
        now = self.clock()
        calendar = BusinessCalendar(
            id=store.new_calendar_id(),
            user_id=owner,
            name=_name(name),
            version=1,
            created_at=now,
            updated_at=now,
            **fields,
        )
        if not await store.create(self.database, calendar):
            raise ValidationError("name", f"you already have a calendar named {calendar.name!r}")
        await self.audit.record(
            caller, Change("calendar.create", "calendar", calendar.id, owner, ("name",))
        )
        return calendar

    async def get(
        self, caller: Principal | None, name: Any, user_id: Any = None
    ) -> BusinessCalendar:
        owner = _owner(caller, user_id)
        found = await store.get(self.database, owner, _name(name))
        if found is None:
            raise NotFoundError(f"no calendar named {_name(name)!r}")
        return found

    async def listing(self, caller: Principal | None, user_id: Any = None) -> list[Any]:
        scope = user_scope(caller, user_id)
        everyone = scope is None and user_id is None and _sees_all(caller)
        return await store.listing(self.database, scope, everyone=everyone)

    async def update(
        self, caller: Principal | None, name: Any, changes: dict[str, Any], user_id: Any = None
    ) -> BusinessCalendar:
        """Change what the calendar closes. The whole definition is checked again as it will
        stand, so a change cannot leave a calendar that never opens."""
        unknown = sorted(set(changes) - set(DEFINITION))
        if unknown:
            raise ValidationError(unknown[0], "is not a calendar field")
        current = await self.get(caller, name, user_id)
        merged = {
            "timezone": current.timezone,
            "weekend": current.weekend,
            "holidays": _holidays_of(current),
            "dates": current.dates,
            "ics": current.ics,
        } | {key: value for key, value in changes.items()}
        fields = _definition(merged)
        changed = await store.update(self.database, current.id, fields, self.clock())
        if changed is None:
            raise NotFoundError(f"no calendar named {current.name!r}")
        updated, _moved = changed
        await self.audit.record(
            caller,
            Change("calendar.update", "calendar", updated.id, updated.user_id, tuple(changes)),
        )
        return updated

    async def delete(self, caller: Principal | None, name: Any, user_id: Any = None) -> None:
        current = await self.get(caller, name, user_id)
        using = await store.delete(self.database, current.id)
        if using is not None:
            raise ValidationError(
                "name", f"calendar {current.name!r} is in use by task {using}; change its schedule"
            )
        await self.audit.record(
            caller, Change("calendar.delete", "calendar", current.id, current.user_id, ())
        )

    async def days(
        self, caller: Principal | None, name: Any, start: Any, end: Any, user_id: Any = None
    ) -> list[dict[str, Any]]:
        """Every day in [start, end): open, or closed and why."""
        first, last = _day("start", start), _day("end", end)
        if last <= first:
            raise ValidationError("end", "must be after start")
        if (last - first).days > MAX_DAYS:
            raise ValidationError("end", f"at most {MAX_DAYS} days at once")
        closed = store.closed_days(await self.get(caller, name, user_id))
        return [
            {"date": day.isoformat(), "business_day": reason is None, "reason": reason}
            for day, reason in closed.days(first, last)
        ]


def calendar_to_dict(calendar: BusinessCalendar) -> dict[str, Any]:
    return {
        "id": calendar.id,
        "user_id": calendar.user_id,
        "name": calendar.name,
        "timezone": calendar.timezone,
        "weekend": list(calendar.weekend),
        "holidays": _holidays_of(calendar),
        "dates": list(calendar.dates),
        "ics": calendar.ics is not None,
        "version": calendar.version,
        "created_at": iso_utc(calendar.created_at),
        "updated_at": iso_utc(calendar.updated_at),
    }


def _definition(values: dict[str, Any]) -> dict[str, Any]:
    """The stored columns of a calendar definition, checked by building it."""
    timezone = values.get("timezone")
    if timezone is not None:
        if not isinstance(timezone, str):
            raise ValidationError("timezone", "must be an IANA time zone name")
        get_zone(timezone, "timezone")
    holidays = values.get("holidays")
    if holidays is not None and not isinstance(holidays, dict):
        raise ValidationError("holidays", 'must be {"country": "DE", "subdivision": "BY"}')
    holidays = holidays or {}
    unknown = sorted(set(holidays) - {"country", "subdivision", "categories"})
    if unknown:
        raise ValidationError(f"holidays.{unknown[0]}", "is not a holidays field")
    calendar = build_calendar(
        weekend=values.get("weekend"),
        country=holidays.get("country"),
        subdivision=holidays.get("subdivision"),
        categories=holidays.get("categories"),
        dates=values.get("dates"),
        ics=values.get("ics"),
    )
    return {
        "timezone": timezone,
        "weekend": sorted(calendar.weekend),
        "country": calendar.country,
        "subdivision": calendar.subdivision,
        "categories": list(calendar.categories) if calendar.categories else None,
        "dates": _dates(values.get("dates")),
        "ics": values.get("ics"),
    }


def _dates(dates: Any) -> list[dict[str, str]]:
    """Explicit dates as stored: [{"date": "YYYY-MM-DD", "reason": ...}] (already checked)."""
    stored = []
    for item in dates or []:
        if isinstance(item, str):
            stored.append({"date": item, "reason": "closed"})
        else:
            stored.append({"date": item["date"], "reason": item.get("reason") or "closed"})
    return stored


def _holidays_of(calendar: BusinessCalendar) -> dict[str, Any] | None:
    if calendar.country is None:
        return None
    found: dict[str, Any] = {"country": calendar.country}
    if calendar.subdivision is not None:
        found["subdivision"] = calendar.subdivision
    if calendar.categories:
        found["categories"] = list(calendar.categories)
    return found


def _name(name: Any) -> str:
    if (
        not isinstance(name, str)
        or not name.strip()
        or len(name) > MAX_NAME
        or "\x00" in name
        or not is_valid_unicode(name)
    ):
        raise ValidationError("name", f"must be a name of 1-{MAX_NAME} characters")
    return name.strip()


def _day(field: str, value: Any) -> date:
    if not isinstance(value, str):
        raise ValidationError(field, "must be a date, YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, "must be a date, YYYY-MM-DD") from None


def _owner(caller: Principal | None, user_id: Any) -> str | None:
    """Whose calendar: the caller's own, or (admins, the local operator) the one named."""
    if user_id is not None and not isinstance(user_id, str):
        raise ValidationError("user_id", "must be a string")
    if caller is None or caller.is_admin:
        return user_id if user_id is not None else (caller.subject if caller else None)
    if user_id not in (None, caller.subject):
        raise NotFoundError("no such calendar")
    return caller.subject


def _sees_all(caller: Principal | None) -> bool:
    return caller is None or caller.is_admin
