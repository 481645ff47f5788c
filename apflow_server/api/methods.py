"""The JSON-RPC methods, each declared once: its parameters (validated here and
published by `rpc.discover`), its result schema and its handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apflow_server.api.services import Services
from apflow_server.core.compute import UNLIMITED, Budget
from apflow_server.core.errors import ApflowError, RateLimitedError, ValidationError
from apflow_server.core.events import EVENT_TYPES
from apflow_server.core.task_fields import (
    FIELD_SCHEMAS,
    SCHEDULE_FIELDS,
    WRITABLE_ON_CREATE,
    WRITABLE_ON_UPDATE,
    parse_instant,
)
from apflow_server.core.types import OverlapPolicy, RunTrigger
from apflow_server.service import Principal, Service
from apflow_server.service.audit import entry_to_dict
from apflow_server.service.calendars import calendar_to_dict
from apflow_server.service.notifications import delivery_to_dict, endpoint_to_dict
from apflow_server.storage.models import run_to_dict, task_to_dict
from apflow_server.storage.repository import Page

# ---------------------------------------------------------------------- declarations

STRING = {"type": "string"}
ID = {"type": "string", "minLength": 1, "maxLength": 64}
BOOLEAN = {"type": "boolean"}
OBJECT = {"type": "object"}
DATETIME = {"type": "string", "format": "date-time"}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}
OFFSET = {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}
NOTE = {"type": "string", "maxLength": 1000}
TASK = {"type": "object", "description": "a task: its fields, as README.md lists them"}
TASK_OBJECT = {
    "type": "object",
    "properties": FIELD_SCHEMAS,
    "required": ["name"],
    "additionalProperties": False,
}
PAGE = {
    "type": "object",
    "properties": {"items": {"type": "array"}, "total": {"type": "integer"}},
}


@dataclass(frozen=True)
class Param:
    name: str
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""


@dataclass
class CallContext:
    services: Services
    principal: Principal | None  # None: authentication is off (the local operator)
    # The compute time this HTTP request may use, shared by the calls of a batch.
    budget: Budget = UNLIMITED
    # The webhook route's rate limit and IP allowlist, for tasks.webhook.trigger.
    admit_webhook: Callable[[], Awaitable[ApflowError | None]] | None = None

    @property
    def service(self) -> Service:
        return self.services.service


Handler = Callable[[CallContext, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class RpcMethod:
    name: str
    summary: str
    handler: Handler
    params: tuple[Param, ...] = ()
    result: Mapping[str, Any] = field(default_factory=lambda: OBJECT)
    # The task fields it also accepts (validated by core/task_fields.py, through the service,
    # which names a bad one; published from the same file's FIELD_SCHEMAS).
    task_fields: frozenset[str] = frozenset()
    # Error codes beyond the ones every method may answer.
    errors: tuple[int, ...] = ()
    # The params may be a JSON array (tasks.create: a tree).
    array_param: str | None = None

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Named parameters checked against the declaration; -32602 names the bad one."""
        if args:
            if self.array_param is None or kwargs:
                raise ValidationError("params", "must be an object of named parameters")
            return {self.array_param: list(args)}
        declared = {param.name: param for param in self.params}
        values: dict[str, Any] = {}
        for name, value in kwargs.items():
            param = declared.get(name)
            if param is None:
                if not self.task_fields:
                    raise ValidationError(name, "unknown parameter")
                values[name] = value
                continue
            values[name] = _check(name, param.schema, value)
        for param in self.params:
            if param.required and param.name not in values:
                raise ValidationError(param.name, "is required")
        return values


def _check(name: str, schema: Mapping[str, Any], value: Any) -> Any:
    if value is None:
        if schema.get("nullable", True) is False:
            raise ValidationError(name, "must not be null")
        return None
    kind = schema.get("type")
    if kind == "string":
        if not isinstance(value, str):
            raise ValidationError(name, "must be a string")
        if "\x00" in value:
            raise ValidationError(name, "must not contain NUL characters")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10_000):
            raise ValidationError(name, "has an invalid length")
        if schema.get("format") == "date-time":
            parsed = parse_instant(name, value)
            if parsed is None or parsed.tzinfo is None:
                raise ValidationError(name, "must carry a UTC offset, e.g. 2025-01-15T09:00:00Z")
            return parsed
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(name, "must be a whole number")
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            raise ValidationError(
                name, f"must be in {schema.get('minimum', '')}..{schema.get('maximum', '')}"
            )
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ValidationError(name, "must be true or false")
    elif kind == "object" and not isinstance(value, dict):
        raise ValidationError(name, "must be a JSON object")
    elif kind == "array" and not isinstance(value, list):
        raise ValidationError(name, "must be a JSON array")
    return value


def _page(
    page: Page, to_dict: Callable[[Any], dict[str, Any]], limit: int, offset: int
) -> dict[str, Any]:
    return {
        "items": [to_dict(item) for item in page.items],
        "total": page.total,
        "limit": limit,
        "offset": offset,
    }


# ---------------------------------------------------------------------- tasks


async def create(ctx: CallContext, params: dict[str, Any]) -> Any:
    batch = params.pop("tasks", None)
    if batch is not None and params:
        raise ValidationError(sorted(params)[0], "give either a task or a list of tasks")
    specs = batch if batch is not None else [params]
    if not isinstance(specs, list):
        raise ValidationError("tasks", "must be a non-empty list of task objects")
    tasks = await ctx.service.tasks.create(ctx.principal, specs, batch=batch is not None)
    if batch is None:
        return task_to_dict(tasks[0])
    return {"tasks": [task_to_dict(task) for task in tasks]}


async def get(ctx: CallContext, params: dict[str, Any]) -> Any:
    return task_to_dict(await ctx.service.tasks.get(ctx.principal, params["task_id"]))


async def update(ctx: CallContext, params: dict[str, Any]) -> Any:
    task_id = params.pop("task_id")
    return task_to_dict(await ctx.service.tasks.update(ctx.principal, task_id, params))


async def delete(ctx: CallContext, params: dict[str, Any]) -> Any:
    return {"deleted": await ctx.service.tasks.delete(ctx.principal, params["task_id"])}


async def list_tasks(ctx: CallContext, params: dict[str, Any]) -> Any:
    limit, offset = params.get("limit", 50), params.get("offset", 0)
    page = await ctx.service.tasks.list_tasks(
        ctx.principal,
        user_id=params.get("user_id"),
        status=params.get("status"),
        parent_id=params.get("parent_id"),
        roots_only=params.get("roots_only") or False,
        limit=limit,
        offset=offset,
    )
    return _page(page, task_to_dict, limit, offset)


async def tree(ctx: CallContext, params: dict[str, Any]) -> Any:
    return (await ctx.service.tasks.tree(ctx.principal, params["task_id"])).to_dict()


async def execute(ctx: CallContext, params: dict[str, Any]) -> Any:
    return await ctx.service.runs.trigger(
        ctx.principal,
        params["task_id"],
        wait=params.get("wait") or False,
        trigger=RunTrigger.API,
        overlap=params.get("overlap"),
    )


async def cancel(ctx: CallContext, params: dict[str, Any]) -> Any:
    cancelled = await ctx.service.runs.cancel(ctx.principal, params["task_id"])
    return {"task_id": params["task_id"], "cancelled": cancelled}


async def list_runs(ctx: CallContext, params: dict[str, Any]) -> Any:
    limit, offset = params.get("limit", 50), params.get("offset", 0)
    page = await ctx.service.runs.list_runs(
        ctx.principal,
        task_id=params.get("task_id"),
        user_id=params.get("user_id"),
        status=params.get("status"),
        limit=limit,
        offset=offset,
    )
    return _page(page, run_to_dict, limit, offset)


# ---------------------------------------------------------------------- schedules


async def scheduled_list(ctx: CallContext, params: dict[str, Any]) -> Any:
    limit, offset = params.get("limit", 100), params.get("offset", 0)
    enabled_only = params.get("enabled_only")
    page = await ctx.service.schedules.list_scheduled(
        ctx.principal,
        enabled_only=True if enabled_only is None else enabled_only,
        user_id=params.get("user_id"),
        schedule_type=params.get("schedule_type"),
        status=params.get("status"),
        limit=limit,
        offset=offset,
    )
    return _page(page, task_to_dict, limit, offset)


async def scheduled_due(ctx: CallContext, params: dict[str, Any]) -> Any:
    tasks = await ctx.service.schedules.due(
        ctx.principal,
        before=params.get("before"),
        user_id=params.get("user_id"),
        limit=params.get("limit", 100),
    )
    return {"items": [task_to_dict(task) for task in tasks], "total": len(tasks)}


async def scheduled_init(ctx: CallContext, params: dict[str, Any]) -> Any:
    task = await ctx.service.schedules.init(
        ctx.principal, params["task_id"], from_time=params.get("from_time")
    )
    return task_to_dict(task)


async def scheduled_pause(ctx: CallContext, params: dict[str, Any]) -> Any:
    task = await ctx.service.schedules.pause(
        ctx.principal, params["task_id"], note=params.get("note"), until=params.get("until")
    )
    return task_to_dict(task)


async def scheduled_resume(ctx: CallContext, params: dict[str, Any]) -> Any:
    task = await ctx.service.schedules.resume(
        ctx.principal, params["task_id"], note=params.get("note")
    )
    return task_to_dict(task)


async def scheduled_skip(ctx: CallContext, params: dict[str, Any]) -> Any:
    count = params.get("count")
    task = await ctx.service.schedules.skip(
        ctx.principal, params["task_id"], count=1 if count is None else count
    )
    return task_to_dict(task)


async def scheduled_backfill(ctx: CallContext, params: dict[str, Any]) -> Any:
    optional = {
        name: params[name]
        for name in ("dry_run", "reprocess", "max_concurrent", "order")
        if params.get(name) is not None
    }
    return await ctx.service.schedules.backfill(
        ctx.principal,
        params["task_id"],
        start=params["start"],
        end=params["end"],
        budget=ctx.budget,
        **optional,
    )


async def scheduled_backfill_cancel(ctx: CallContext, params: dict[str, Any]) -> Any:
    return await ctx.service.schedules.cancel_backfill(ctx.principal, params["backfill_id"])


async def scheduler_heartbeat(ctx: CallContext, params: dict[str, Any]) -> Any:
    await ctx.service.runs.record_heartbeat(
        ctx.principal,
        instance_id=params["instance_id"],
        host=params["host"],
        pid=params["pid"],
        state=params["state"],
        user_filter=params.get("user_filter"),
        started_at=params.get("started_at"),
        stats=params.get("stats") or {},
        heartbeat_interval=params["heartbeat_interval"],
    )
    return {"recorded": True}


async def scheduled_complete(ctx: CallContext, params: dict[str, Any]) -> Any:
    calculate = params.get("calculate_next_run")
    success = params.get("success")
    task = await ctx.service.schedules.complete(
        ctx.principal,
        params["task_id"],
        success=True if success is None else success,
        error=params.get("error"),
        result=params.get("result"),
        calculate_next_run=True if calculate is None else calculate,
    )
    return task_to_dict(task)


async def scheduled_preview(ctx: CallContext, params: dict[str, Any]) -> Any:
    task_id = params.pop("task_id", None)
    count = params.pop("count", 10)
    after = params.pop("after", None)
    fields = {key: value for key, value in params.items() if value is not None}
    fires = await ctx.service.schedules.preview(
        ctx.principal, task_id=task_id, count=count, after=after, budget=ctx.budget, **fields
    )
    answer: dict[str, Any] = {"fire_times": [fire.isoformat() for fire in fires]}
    if task_id is not None:
        # The fire times that will be recorded skipped (paused, or skipped by an operator).
        holds = await ctx.service.schedules.preview_holds(ctx.principal, task_id, fires)
        answer["skipped"] = [
            {"fire_time": fire.isoformat(), "reason": reason}
            for fire, reason in zip(fires, holds, strict=True)
            if reason is not None
        ]
    return answer


async def webhook_trigger(ctx: CallContext, params: dict[str, Any]) -> Any:
    scheduled_for: datetime | None = params.get("scheduled_for")
    if scheduled_for is None and ctx.admit_webhook is not None:
        # A webhook: the webhook route's rate limit and IP allowlist apply. With
        # scheduled_for it is a scheduler firing an occurrence (the service checks it is
        # an admin's call), not a webhook.
        refused = await ctx.admit_webhook()
        if refused is not None:
            raise refused
    asynchronous = params.get("async_execution")
    return await ctx.service.runs.trigger(
        ctx.principal,
        params["task_id"],
        wait=asynchronous is False,
        trigger=RunTrigger.SCHEDULE if scheduled_for else RunTrigger.WEBHOOK,
        idempotency_key=params.get("idempotency_key"),
        scheduled_for=scheduled_for,
    )


async def export_ical(ctx: CallContext, params: dict[str, Any]) -> Any:
    enabled_only = params.get("enabled_only")
    content, count = await ctx.service.schedules.export_ical(
        ctx.principal,
        calendar_name=params.get("calendar_name"),
        enabled_only=True if enabled_only is None else enabled_only,
        user_id=params.get("user_id"),
        limit=params.get("limit", 1000),
    )
    return {"ical_content": content, "task_count": count}


# ---------------------------------------------------------------------- notifications


async def endpoints_create(ctx: CallContext, params: dict[str, Any]) -> Any:
    created = await ctx.service.notifications.create(
        ctx.principal,
        url=params["url"],
        events=params.get("events"),
        description=params.get("description"),
        user_id=params.get("user_id"),
    )
    return {
        **endpoint_to_dict(created.endpoint),
        "secret": created.secret,
    }


async def endpoints_list(ctx: CallContext, params: dict[str, Any]) -> Any:
    found = await ctx.service.notifications.listing(ctx.principal, params.get("user_id"))
    return {"items": [endpoint_to_dict(endpoint) for endpoint in found], "total": len(found)}


async def endpoints_update(ctx: CallContext, params: dict[str, Any]) -> Any:
    changes = {name: value for name, value in params.items() if name != "id"}
    endpoint = await ctx.service.notifications.update(ctx.principal, params["id"], changes)
    return endpoint_to_dict(endpoint)


async def endpoints_delete(ctx: CallContext, params: dict[str, Any]) -> Any:
    await ctx.service.notifications.delete(ctx.principal, params["id"])
    return {"id": params["id"], "deleted": True}


async def endpoints_test(ctx: CallContext, params: dict[str, Any]) -> Any:
    queued = await ctx.service.notifications.test(ctx.principal, params["id"])
    return {"id": params["id"], "queued": queued}


async def deliveries_list(ctx: CallContext, params: dict[str, Any]) -> Any:
    limit, offset = params.get("limit", 100), params.get("offset", 0)
    page = await ctx.service.notifications.deliveries(
        ctx.principal,
        endpoint_id=params.get("endpoint_id"),
        status=params.get("status"),
        user_id=params.get("user_id"),
        limit=limit,
        offset=offset,
    )
    return _page(page, delivery_to_dict, limit, offset)


async def audit_list(ctx: CallContext, params: dict[str, Any]) -> Any:
    limit, offset = params.get("limit", 100), params.get("offset", 0)
    page = await ctx.service.audit.listing(
        ctx.principal,
        task_id=params.get("task_id"),
        actor=params.get("actor"),
        since=params.get("since"),
        until=params.get("until"),
        user_id=params.get("user_id"),
        limit=limit,
        offset=offset,
    )
    return _page(page, entry_to_dict, limit, offset)


async def calendars_create(ctx: CallContext, params: dict[str, Any]) -> Any:
    calendar = await ctx.service.calendars.create(ctx.principal, **params)
    return calendar_to_dict(calendar)


async def calendars_get(ctx: CallContext, params: dict[str, Any]) -> Any:
    calendar = await ctx.service.calendars.get(ctx.principal, params["name"], params.get("user_id"))
    return calendar_to_dict(calendar)


async def calendars_list(ctx: CallContext, params: dict[str, Any]) -> Any:
    found = await ctx.service.calendars.listing(ctx.principal, params.get("user_id"))
    return {"items": [calendar_to_dict(calendar) for calendar in found], "total": len(found)}


async def calendars_update(ctx: CallContext, params: dict[str, Any]) -> Any:
    changes = {key: value for key, value in params.items() if key not in {"name", "user_id"}}
    calendar = await ctx.service.calendars.update(
        ctx.principal, params["name"], changes, params.get("user_id")
    )
    return calendar_to_dict(calendar)


async def calendars_delete(ctx: CallContext, params: dict[str, Any]) -> Any:
    await ctx.service.calendars.delete(ctx.principal, params["name"], params.get("user_id"))
    return {"name": params["name"], "deleted": True}


async def calendars_days(ctx: CallContext, params: dict[str, Any]) -> Any:
    days = await ctx.service.calendars.days(
        ctx.principal, params["name"], params["start"], params["end"], params.get("user_id")
    )
    return {"days": days}


# ---------------------------------------------------------------------- the table

TASK_ID = Param("task_id", ID, required=True)
PAGING = (Param("limit", LIMIT), Param("offset", OFFSET))
ENDPOINT_ID = Param("id", {"type": "string", "minLength": 1, "maxLength": 32}, True)
EVENTS = {
    "type": "array",
    "items": {"type": "string", "enum": list(EVENT_TYPES)},
    "description": "event types to send here (default: every one but run.succeeded and ping)",
}
URL = {"type": "string", "minLength": 1, "maxLength": 2000, "description": "http(s)"}
DESCRIPTION = {"type": "string", "maxLength": 500}
CALENDAR_NAME = Param("name", {"type": "string", "minLength": 1, "maxLength": 100}, True)
CALENDAR_FIELDS = (
    Param(
        "timezone",
        {"type": "string", "maxLength": 64},
        description="the zone whose dates decide (default: each schedule's own)",
    ),
    Param(
        "weekend",
        {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 7}},
        description="ISO weekdays closed every week (default [6, 7]: Saturday, Sunday)",
    ),
    Param(
        "holidays",
        {
            "type": "object",
            "properties": {
                "country": STRING,
                "subdivision": STRING,
                "categories": {"type": "array", "items": STRING},
            },
        },
        description='public holidays of the `holidays` package: {"country": "DE", '
        '"subdivision": "BY"}',
    ),
    Param(
        "dates",
        {"type": "array", "maxItems": 10000},
        description='closed dates: "YYYY-MM-DD" or {"date": ..., "reason": ...}',
    ),
    Param(
        "ics",
        {"type": "string", "maxLength": 1048576},
        description="closed all-day events of an iCalendar file",
    ),
)
DAY = {"type": "string", "format": "date"}
SCHEDULE_PARAMS = tuple(
    Param(name, schema)
    for name, schema in (
        ("schedule_type", STRING),
        ("schedule_expression", STRING),
        ("schedule_timezone", STRING),
        ("schedule_start_at", STRING),
        ("schedule_end_at", STRING),
        ("max_runs", {"type": "integer", "minimum": 1, "maximum": 2_147_483_647}),
    )
)
assert {p.name for p in SCHEDULE_PARAMS} <= SCHEDULE_FIELDS

METHODS: tuple[RpcMethod, ...] = (
    RpcMethod(
        "tasks.create",
        "Create a task (params: its fields) or a tree (params: an array of tasks, or "
        "{tasks: [...]}); dependencies and parent_id may name tasks of the tree by name.",
        create,
        (Param("tasks", {"type": "array", "items": TASK_OBJECT}),),
        TASK,
        task_fields=WRITABLE_ON_CREATE,
        array_param="tasks",
    ),
    RpcMethod("tasks.get", "One task.", get, (TASK_ID,), TASK),
    RpcMethod(
        "tasks.update",
        "Change a task's fields; enabling a schedule computes next_run_at.",
        update,
        (TASK_ID,),
        TASK,
        task_fields=WRITABLE_ON_UPDATE,
    ),
    RpcMethod(
        "tasks.delete",
        "Delete a task and its descendants (refused while any of them runs).",
        delete,
        (TASK_ID,),
    ),
    RpcMethod(
        "tasks.list",
        "Tasks, newest last, paged.",
        list_tasks,
        (
            Param("user_id", STRING),
            Param("status", STRING),
            Param("parent_id", STRING),
            Param("roots_only", BOOLEAN),
            *PAGING,
        ),
        PAGE,
    ),
    RpcMethod("tasks.tree", "The whole tree a task belongs to.", tree, (TASK_ID,), TASK),
    RpcMethod(
        "tasks.execute",
        "Run a task tree now on this server (wait=true returns its outcome).",
        execute,
        (
            TASK_ID,
            Param("wait", BOOLEAN),
            Param(
                "overlap",
                {"type": "string", "enum": [policy.value for policy in OverlapPolicy]},
                description="while the task runs: this policy instead of its own",
            ),
        ),
    ),
    RpcMethod("tasks.cancel", "Cancel a task's running run.", cancel, (TASK_ID,)),
    RpcMethod(
        "tasks.runs.list",
        "The run history, newest first.",
        list_runs,
        (Param("task_id", ID), Param("user_id", STRING), Param("status", STRING), *PAGING),
        PAGE,
    ),
    RpcMethod(
        "tasks.scheduled.list",
        "Scheduled tasks (enabled only unless enabled_only=false).",
        scheduled_list,
        (
            Param("enabled_only", BOOLEAN),
            Param("user_id", STRING),
            Param("schedule_type", STRING),
            Param("status", STRING),
            *PAGING,
        ),
        PAGE,
    ),
    RpcMethod(
        "tasks.scheduled.due",
        "Enabled schedules due by `before` (default now) and not running.",
        scheduled_due,
        (Param("before", DATETIME), Param("user_id", STRING), Param("limit", LIMIT)),
        PAGE,
    ),
    RpcMethod(
        "tasks.scheduled.init",
        "Recompute next_run_at from `from_time` (default now).",
        scheduled_init,
        (TASK_ID, Param("from_time", DATETIME)),
        TASK,
    ),
    RpcMethod(
        "tasks.scheduled.pause",
        "Pause the schedule: each occurrence due while paused is recorded skipped (reason "
        "paused); with `until` it resumes by itself then. The note shows on the task.",
        scheduled_pause,
        (TASK_ID, Param("note", NOTE), Param("until", DATETIME)),
        TASK,
    ),
    RpcMethod(
        "tasks.scheduled.resume",
        "Resume a paused schedule: its next occurrence runs.",
        scheduled_resume,
        (TASK_ID, Param("note", NOTE)),
        TASK,
    ),
    RpcMethod(
        "tasks.scheduled.skip",
        "Skip the next `count` occurrences (default 1): each is recorded skipped, reason "
        "'skipped by <user>'.",
        scheduled_skip,
        (TASK_ID, Param("count", {"type": "integer", "minimum": 1, "maximum": 1000})),
        TASK,
    ),
    RpcMethod(
        "tasks.scheduled.backfill",
        "Run the schedule's occurrences in [start, end) now, each with its own scheduled_for "
        "and trigger backfill, exactly once: {backfill_id, dry_run, occurrences, queued, "
        "already_done}. reprocess: none (default), failed or all; order: oldest_first "
        "(default) or newest_first; at most APFLOW_MAX_BACKFILL_OCCURRENCES occurrences.",
        scheduled_backfill,
        (
            TASK_ID,
            Param("start", DATETIME, True),
            Param("end", DATETIME, True),
            Param("dry_run", BOOLEAN),
            Param("reprocess", {"type": "string", "enum": ["none", "failed", "all"]}),
            Param("max_concurrent", {"type": "integer", "minimum": 1, "maximum": 1000}),
            Param("order", {"type": "string", "enum": ["oldest_first", "newest_first"]}),
        ),
    ),
    RpcMethod(
        "tasks.scheduled.backfill.cancel",
        "Cancel a backfill: its queued occurrences are recorded cancelled.",
        scheduled_backfill_cancel,
        (Param("backfill_id", ID, True),),
    ),
    RpcMethod(
        "scheduler.heartbeat",
        "An API-mode scheduler's heartbeat: its instance row (admins only; the scheduler "
        "calls it every APFLOW_HEARTBEAT_SECONDS).",
        scheduler_heartbeat,
        (
            Param("instance_id", {"type": "string", "minLength": 1, "maxLength": 128}, True),
            Param("host", {"type": "string", "minLength": 1, "maxLength": 255}, True),
            Param("pid", {"type": "integer", "minimum": 0, "maximum": 2_147_483_647}, True),
            Param("state", {"type": "string", "maxLength": 16}, True),
            Param("user_filter", {"type": "string", "maxLength": 255}),
            Param("started_at", DATETIME),
            Param("stats", OBJECT),
            Param("heartbeat_interval", {"type": "integer", "minimum": 1, "maximum": 86400}, True),
        ),
        {"type": "object", "properties": {"recorded": {"type": "boolean"}}},
    ),
    RpcMethod(
        "tasks.scheduled.complete",
        "Record the outcome of a run an external scheduler performed; move the schedule on.",
        scheduled_complete,
        (
            TASK_ID,
            Param("success", BOOLEAN),
            Param("error", STRING),
            Param("result", {}),
            Param("calculate_next_run", BOOLEAN),
        ),
        TASK,
    ),
    RpcMethod(
        "tasks.scheduled.preview",
        "The next `count` fire times of a task's schedule, or of a schedule given here.",
        scheduled_preview,
        (
            Param("task_id", ID),
            Param("count", LIMIT),
            Param("after", DATETIME),
            *SCHEDULE_PARAMS,
        ),
        {"type": "object", "properties": {"fire_times": {"type": "array", "items": DATETIME}}},
    ),
    RpcMethod(
        "tasks.scheduled.export-ical",
        "The scheduled tasks as an RFC 5545 calendar: {ical_content, task_count}.",
        export_ical,
        (
            Param("calendar_name", {"type": "string", "minLength": 1, "maxLength": 200}),
            Param("enabled_only", BOOLEAN),
            Param("user_id", STRING),
            Param("limit", LIMIT),
        ),
        {
            "type": "object",
            "properties": {
                "ical_content": {"type": "string"},
                "task_count": {"type": "integer"},
            },
        },
    ),
    RpcMethod(
        "notifications.endpoints.create",
        "Send events to a URL, signed per the Standard Webhooks specification: the answer "
        "holds the endpoint's signing secret (whsec_...), shown this once.",
        endpoints_create,
        (
            Param("url", URL, True),
            Param("events", EVENTS),
            Param("description", DESCRIPTION),
            Param("user_id", STRING, description="whose (admins only; default the caller)"),
        ),
    ),
    RpcMethod(
        "notifications.endpoints.list",
        "Notification endpoints (one's own; an admin's: anyone's, or user_id's).",
        endpoints_list,
        (Param("user_id", STRING),),
        PAGE,
    ),
    RpcMethod(
        "notifications.endpoints.update",
        "Change an endpoint's url, events, description or enabled (enabling a disabled "
        "endpoint clears its disabled_reason).",
        endpoints_update,
        (
            ENDPOINT_ID,
            Param("url", URL),
            Param("events", EVENTS),
            Param("description", DESCRIPTION),
            Param("enabled", BOOLEAN),
        ),
    ),
    RpcMethod(
        "notifications.endpoints.delete",
        "Delete an endpoint and its deliveries.",
        endpoints_delete,
        (ENDPOINT_ID,),
    ),
    RpcMethod(
        "notifications.endpoints.test",
        "Send the endpoint a `ping` event (through the outbox, as any event).",
        endpoints_test,
        (ENDPOINT_ID,),
    ),
    RpcMethod(
        "notifications.deliveries.list",
        "Deliveries, newest first: status pending, delivered, failed or cancelled, attempts, "
        "the last answer, and the payload sent.",
        deliveries_list,
        (
            Param("endpoint_id", {"type": "string", "minLength": 1, "maxLength": 32}),
            Param(
                "status",
                {"type": "string", "enum": ["pending", "delivered", "failed", "cancelled"]},
            ),
            Param("user_id", STRING),
            *PAGING,
        ),
        PAGE,
    ),
    RpcMethod(
        "calendars.create",
        "A named business calendar: weekend days, a country's public holidays, explicit "
        "closed dates and dates from ICS text. Schedules name it in schedule_calendar.",
        calendars_create,
        (
            CALENDAR_NAME,
            *CALENDAR_FIELDS,
            Param("user_id", STRING, description="whose (admins only; default the caller)"),
        ),
    ),
    RpcMethod(
        "calendars.get",
        "One calendar by name.",
        calendars_get,
        (CALENDAR_NAME, Param("user_id", STRING)),
    ),
    RpcMethod(
        "calendars.list",
        "Calendars (one's own; an admin's: everyone's, or user_id's).",
        calendars_list,
        (Param("user_id", STRING),),
        PAGE,
    ),
    RpcMethod(
        "calendars.update",
        "Change what a calendar closes (the fields given replace the stored ones).",
        calendars_update,
        (CALENDAR_NAME, *CALENDAR_FIELDS, Param("user_id", STRING)),
    ),
    RpcMethod(
        "calendars.delete",
        "Delete a calendar no schedule names.",
        calendars_delete,
        (CALENDAR_NAME, Param("user_id", STRING)),
    ),
    RpcMethod(
        "calendars.days",
        "Every day in [start, end): a business day, or closed and why (at most ten years).",
        calendars_days,
        (
            CALENDAR_NAME,
            Param("start", DAY, True),
            Param("end", DAY, True),
            Param("user_id", STRING),
        ),
    ),
    RpcMethod(
        "audit.list",
        "Who changed what, newest first: actor, action, target, time and the names of the "
        "fields changed (one's own objects; an admin's: everyone's). task_id narrows it to "
        "one object (a task, endpoint, feed key or backfill id).",
        audit_list,
        (
            Param("task_id", {"type": "string", "minLength": 1, "maxLength": 64}),
            Param("actor", {"type": "string", "minLength": 1, "maxLength": 255}),
            Param("since", DATETIME),
            Param("until", DATETIME),
            Param("user_id", STRING),
            *PAGING,
        ),
        PAGE,
    ),
    RpcMethod(
        "tasks.webhook.trigger",
        "Trigger a task as the REST webhook does (async_execution=false waits for the "
        "outcome); with scheduled_for, fire that due occurrence of its schedule (API mode).",
        webhook_trigger,
        (
            TASK_ID,
            Param("async_execution", BOOLEAN),
            Param("idempotency_key", {"type": "string", "minLength": 1, "maxLength": 255}),
            Param("scheduled_for", DATETIME),
        ),
        errors=(RateLimitedError.code,),
    ),
)
