"""Validation of the task fields a client may write. Pure: no database, no clock.

Every write goes through `validate_task_fields`, so the API, the CLI and the Python API refuse
the same input with the same message naming the same field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from apflow_server.core.errors import ValidationError
from apflow_server.core.types import (
    CalendarRule,
    MisfirePolicy,
    OverlapPolicy,
    ScheduleMode,
    ScheduleType,
    parse_schedule_type,
)
from apflow_server.core.zones import get_zone

SCHEDULE_FIELDS = frozenset(
    {
        "schedule_type",
        "schedule_expression",
        "schedule_timezone",
        "schedule_enabled",
        "schedule_start_at",
        "schedule_end_at",
        "max_runs",
        "schedule_misfire",
        "schedule_overlap",
        "schedule_jitter_seconds",
        "pause_after_failures",
        "schedule_mode",
        "trigger_grace_seconds",
        "schedule_calendar",
        "schedule_calendar_rule",
    }
)
DEFINITION_FIELDS = frozenset(
    {
        "name",
        "user_id",
        "priority",
        "inputs",
        "params",
        "schemas",
        "dependencies",
        "alert_late_after_seconds",
        "alert_max_duration_seconds",
    }
)
CREATE_ONLY_FIELDS = frozenset({"id", "parent_id"})
WRITABLE_ON_CREATE = DEFINITION_FIELDS | SCHEDULE_FIELDS | CREATE_ONLY_FIELDS
WRITABLE_ON_UPDATE = DEFINITION_FIELDS | SCHEDULE_FIELDS
READ_ONLY_FIELDS = frozenset(
    {
        "status",
        "result",
        "error",
        "progress",
        "created_at",
        "updated_at",
        "started_at",
        "completed_at",
        "run_count",
        "next_run_at",
        "last_run_at",
        # Written by tasks.scheduled.pause / resume / skip and by the run lifecycle.
        "schedule_paused",
        "schedule_pause_note",
        "schedule_paused_until",
        "consecutive_failures",
        "schedule_skip_count",
    }
)
MAX_PAUSE_AFTER_FAILURES = 1000
MAX_ALERT_SECONDS = 7 * 86400
MAX_TRIGGER_GRACE_SECONDS = 86400

MAX_JITTER_SECONDS = 86_400
MAX_INT32 = 2_147_483_647  # the columns are INTEGER
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


def validate_task_fields(data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Check and normalise the fields of one task write; refuse unknown and read-only fields."""
    if not isinstance(data, Mapping):
        raise ValidationError("task", "must be a JSON object")
    allowed = WRITABLE_ON_CREATE if creating else WRITABLE_ON_UPDATE
    clean: dict[str, Any] = {}
    for field, value in data.items():
        if field in READ_ONLY_FIELDS:
            raise ValidationError(field, "is computed by the service and cannot be written")
        if field in CREATE_ONLY_FIELDS and not creating:
            raise ValidationError(field, "cannot be changed after the task is created")
        if field not in allowed:
            raise ValidationError(str(field), "unknown field")
        clean[field] = _CHECKS[field](field, value)
    if creating and "name" not in clean:
        raise ValidationError("name", "is required")
    return clean


def parse_instant(field: str, value: Any) -> datetime | None:
    """A datetime or ISO 8601 text; naive results are read later in the task's zone."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValidationError(field, "must be an ISO 8601 datetime")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(
            field, f"{value!r} is not an ISO 8601 datetime (e.g. 2025-01-15T09:00:00Z)"
        ) from None
    return within_range(field, parsed)


def parse_utc_instant(field: str, value: Any) -> datetime | None:
    """An instant given with its UTC offset (a bound of a query, not a wall-clock time in a
    task's zone), in UTC."""
    parsed = parse_instant(field, value)
    if parsed is not None and parsed.tzinfo is None:
        raise ValidationError(field, "must carry a UTC offset, e.g. 2025-01-15T09:00:00Z")
    return parsed.astimezone(UTC) if parsed else None


# A wall-clock time this close to the ends of the datetime range has no UTC instant in some
# zone (UTC+14 at 0001-01-01T00:00 is in year 0).
_FIRST_LOCAL = datetime(1, 1, 2)
_LAST_LOCAL = datetime(9999, 12, 30)


def within_range(field: str, value: datetime) -> datetime:
    """`value`, if it and its UTC reading lie within years 1-9999 (an instant outside them
    cannot be stored or compared)."""
    outside = ValidationError(field, "must lie between the years 1 and 9999 in UTC")
    if value.tzinfo is None:
        if not _FIRST_LOCAL <= value <= _LAST_LOCAL:
            raise outside
        return value
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise outside from None
    return value


def find_invalid_text(value: Any, path: str) -> str | None:
    """The path of the first string (or key) in a JSON value that is not valid Unicode: a
    lone UTF-16 surrogate such as "\\ud800", which JSON can spell but no UTF-8 text, column
    or document can hold. None when there is none."""
    if isinstance(value, str):
        return None if is_valid_unicode(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if not is_valid_unicode(key):
                return path or "params"
            found = find_invalid_text(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_invalid_text(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def no_nul(field: str, value: str) -> str:
    """Text columns cannot hold NUL (PostgreSQL refuses it); say so instead of failing."""
    if "\x00" in value:
        raise ValidationError(field, "must not contain NUL characters")
    return value


def _identifier(field: str, value: Any) -> str | None:
    if value is None and field != "id":
        return None
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValidationError(
            field, "must be 1-64 characters: letters, digits and _ . : - (not starting with one)"
        )
    return value


def check_user_id(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise ValidationError(field, "must be a non-empty string of at most 255 characters")
    return no_nul(field, value.strip())


def _name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a non-empty string")
    name: str = no_nul(field, value.strip())
    if len(name) > 200:
        raise ValidationError(field, "must be at most 200 characters")
    return name


def _int_in(low: int, high: int | None) -> Any:
    def check(field: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(field, "must be a whole number")
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f"at least {low}"
            raise ValidationError(field, f"must be {bound}")
        return value

    return check


def _optional(check: Any) -> Any:
    def optional(field: str, value: Any) -> Any:
        return None if value is None else check(field, value)

    return optional


def _json_object(field: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a JSON object")
    for key in ("executor_id", "method"):  # how an executor is named (params / schemas)
        if key in value and not isinstance(value[key], str):
            raise ValidationError(f"{field}.{key}", "must be the name of an executor")
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValidationError(field, f"must nest at most {MAX_JSON_DEPTH} levels deep")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValidationError(field, "must contain only JSON values") from None
    return dict(value)


# Stored JSON (inputs, params, schemas, results) nests at most this deep: reading and writing
# JSON recurses, and a value nested a thousand levels deep could be stored but never read back.
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How many levels of objects and arrays `value` nests (0 for a scalar), counted without
    recursion, so any depth can be measured."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _dependencies(field: str, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(field, 'must be a list of {"id": ..., "required": true}')
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, dict):
            raise ValidationError(where, 'must be {"id": ..., "required": true} or an id')
        unknown = set(item) - {"id", "required"}
        if unknown:
            raise ValidationError(f"{where}.{sorted(unknown)[0]}", "unknown field")
        ref = item.get("id")
        if not isinstance(ref, str) or not ref.strip():
            raise ValidationError(f"{where}.id", "must name a sibling task by id or name")
        no_nul(f"{where}.id", ref)
        required = item.get("required", True)
        if not isinstance(required, bool):
            raise ValidationError(f"{where}.required", "must be true or false")
        if ref in seen:
            raise ValidationError(f"{where}.id", f"{ref!r} is listed twice")
        seen.add(ref)
        result.append({"id": ref.strip(), "required": required})
    return result


def _schedule_type(field: str, value: Any) -> str | None:
    return None if value is None else parse_schedule_type(value).value


def _expression(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 255:
        raise ValidationError(field, "must be a string of at most 255 characters")
    return no_nul(field, value).strip() or None


def _timezone(field: str, value: Any) -> str:
    return str(get_zone(value, field).key)


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, "must be true or false")
    return value


def _calendar_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise ValidationError(field, "must be a calendar's name (1-100 characters)")
    return no_nul(field, value.strip())


def _choice(enum: Any) -> Any:
    def check(field: str, value: Any) -> str:
        try:
            return str(enum(value).value)
        except ValueError:
            names = ", ".join(member.value for member in enum)
            raise ValidationError(field, f"must be one of {names}") from None

    return check


_CHECKS: dict[str, Any] = {
    "id": _identifier,
    "parent_id": _identifier,
    "user_id": check_user_id,
    "name": _name,
    "priority": _int_in(0, 3),
    "inputs": _json_object,
    "params": _json_object,
    "schemas": _json_object,
    "dependencies": _dependencies,
    "schedule_type": _schedule_type,
    "schedule_expression": _expression,
    "schedule_timezone": _timezone,
    "schedule_enabled": _bool,
    "schedule_start_at": parse_instant,
    "schedule_end_at": parse_instant,
    "max_runs": _optional(_int_in(1, MAX_INT32)),
    "schedule_misfire": _choice(MisfirePolicy),
    "schedule_overlap": _choice(OverlapPolicy),
    "schedule_jitter_seconds": _int_in(0, MAX_JITTER_SECONDS),
    "pause_after_failures": _optional(_int_in(1, MAX_PAUSE_AFTER_FAILURES)),
    "schedule_mode": _choice(ScheduleMode),
    "trigger_grace_seconds": _optional(_int_in(1, MAX_TRIGGER_GRACE_SECONDS)),
    "schedule_calendar": _optional(_calendar_name),
    "schedule_calendar_rule": _optional(_choice(CalendarRule)),
    "alert_late_after_seconds": _optional(_int_in(1, MAX_ALERT_SECONDS)),
    "alert_max_duration_seconds": _optional(_int_in(1, MAX_ALERT_SECONDS)),
}

_DATETIME = {"type": ["string", "null"], "format": "date-time"}
# What each writable field accepts, as JSON Schema: published by `rpc.discover`, beside the
# checks above that enforce it (a test holds the two lists to the same fields).
FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "pattern": _ID_RE.pattern, "description": "uuid4 unless given"},
    "parent_id": {
        "type": ["string", "null"],
        "description": "the parent: an existing task's id, or a task of the same request",
    },
    "user_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "priority": {"type": "integer", "minimum": 0, "maximum": 3, "description": "0 urgent"},
    "inputs": {"type": "object", "description": "what the executor receives"},
    "params": {"type": "object", "description": "executor_id names the executor"},
    "schemas": {"type": "object", "description": "method may name the executor"},
    "dependencies": {
        "type": "array",
        "items": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "required": {"type": "boolean"}},
                    "required": ["id"],
                },
            ]
        },
        "description": "siblings (by id or name) that must finish first",
    },
    "schedule_type": {
        "type": ["string", "null"],
        "enum": [kind.value for kind in ScheduleType] + [None],
    },
    "schedule_expression": {"type": ["string", "null"], "maxLength": 255},
    "schedule_timezone": {"type": "string", "description": "an IANA time zone name"},
    "schedule_enabled": {"type": "boolean"},
    "schedule_start_at": _DATETIME,
    "schedule_end_at": _DATETIME,
    "max_runs": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_INT32},
    "schedule_misfire": {"type": "string", "enum": [policy.value for policy in MisfirePolicy]},
    "schedule_overlap": {"type": "string", "enum": [policy.value for policy in OverlapPolicy]},
    "schedule_jitter_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_JITTER_SECONDS},
    "pause_after_failures": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": MAX_PAUSE_AFTER_FAILURES,
        "description": "pause the schedule after this many failed runs in a row",
    },
    "schedule_mode": {
        "type": "string",
        "enum": [mode.value for mode in ScheduleMode],
        "description": "internal: fired here; external: an outside scheduler calls the "
        "webhook and a missing call is recorded missed (trigger.overdue)",
    },
    "trigger_grace_seconds": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": MAX_TRIGGER_GRACE_SECONDS,
        "description": "external: how late a trigger may arrive (default 300)",
    },
    "schedule_calendar": {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 100,
        "description": "a business calendar of the task's user (calendars.create), by name",
    },
    "schedule_calendar_rule": {
        "type": ["string", "null"],
        "enum": [rule.value for rule in CalendarRule] + [None],
        "description": "an occurrence on a closed day: skip (default: recorded skipped), "
        "next_business_day or previous_business_day (moved there, same local time)",
    },
    "alert_late_after_seconds": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": MAX_ALERT_SECONDS,
        "description": "run.late when a run starts more than this after its occurrence",
    },
    "alert_max_duration_seconds": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": MAX_ALERT_SECONDS,
        "description": "run.too_long when a run is still running this long after its start",
    },
}
