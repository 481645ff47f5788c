"""The tables: tasks (definition and latest execution) and task_runs (the run history)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps no offset, so values are stored as naive UTC there; PostgreSQL uses timestamptz.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    priority: Mapped[int] = mapped_column(Integer, default=2)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    schemas: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dependencies: Mapped[list[Any]] = mapped_column(default=list)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    schedule_type: Mapped[str | None] = mapped_column(String(16))
    schedule_expression: Mapped[str | None] = mapped_column(String(255))
    schedule_timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    schedule_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    schedule_start_at: Mapped[datetime | None]
    schedule_end_at: Mapped[datetime | None]
    max_runs: Mapped[int | None] = mapped_column(Integer)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    next_run_at: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]
    schedule_misfire: Mapped[str] = mapped_column(String(16), default="run_once")
    schedule_overlap: Mapped[str] = mapped_column(String(16), default="skip")
    schedule_jitter_seconds: Mapped[int] = mapped_column(Integer, default=0)
    # Internal: the first instant of an interval grid when no schedule_start_at is set.
    schedule_anchor_at: Mapped[datetime | None]
    # Internal: when the next occurrence becomes due (next_run_at plus its jitter); the
    # scheduler's claim query and its sleep both read this column.
    due_at: Mapped[datetime | None]
    # Internal: the run that currently owns the task (status in_progress); a run that lost
    # ownership (cancelled by another, or reclaimed) must not write the task any more.
    current_run_id: Mapped[str | None] = mapped_column(String(64))
    # Internal: a manual trigger waiting for a scheduler (`apflow scheduler trigger`).
    trigger_requested_at: Mapped[datetime | None]
    # Paused: occurrences keep falling due and are recorded skipped ("paused") until resumed,
    # or until schedule_paused_until, when the schedule resumes by itself.
    schedule_paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    schedule_pause_note: Mapped[str | None] = mapped_column(Text)
    schedule_paused_until: Mapped[datetime | None]
    # Pause the schedule after this many failed runs in a row (None: never).
    pause_after_failures: Mapped[int | None] = mapped_column(Integer)
    # internal: the scheduler fires it; external: an outside scheduler (cron, a CronJob) calls
    # its webhook, and the scheduler only watches for the call (a dead man's switch).
    schedule_mode: Mapped[str] = mapped_column(String(16), default="internal")
    # external: how long after an occurrence its trigger may arrive before it is missed.
    trigger_grace_seconds: Mapped[int | None] = mapped_column(Integer)
    # Alert thresholds: run.late when a run starts more than this after its occurrence.
    alert_late_after_seconds: Mapped[int | None] = mapped_column(Integer)
    # run.too_long when a run is still running this long after it started.
    alert_max_duration_seconds: Mapped[int | None] = mapped_column(Integer)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The next this-many occurrences are recorded skipped ("skipped by <who>").
    schedule_skip_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    schedule_skip_by: Mapped[str | None] = mapped_column(String(255))
    # A business calendar of the task's user, by name, and what an occurrence on a closed day
    # does: skip (recorded skipped), next_business_day, previous_business_day.
    schedule_calendar: Mapped[str | None] = mapped_column(String(100))
    schedule_calendar_rule: Mapped[str | None] = mapped_column(String(32))

    @property
    def loaded_calendar(self) -> Any:
        """Not a column: the closed days of the calendar it names, once storage read them
        (storage/calendars.attach_calendars) for the schedule math."""
        return self.__dict__.get("_loaded_calendar")

    @loaded_calendar.setter
    def loaded_calendar(self, value: Any) -> None:
        self.__dict__["_loaded_calendar"] = value

    __table_args__ = (
        # The claim query: enabled schedules ordered by due time. Partial, so the index holds
        # only the rows the scheduler can ever pick, however many tasks are stored.
        Index(
            "ix_tasks_due",
            "due_at",
            postgresql_where=text("schedule_enabled"),
            sqlite_where=text("schedule_enabled = 1"),
        ),
        Index(
            "ix_tasks_trigger_requested",
            "trigger_requested_at",
            postgresql_where=text("trigger_requested_at IS NOT NULL"),
            sqlite_where=text("trigger_requested_at IS NOT NULL"),
        ),
        Index(
            "ix_tasks_user_due",
            "user_id",
            "due_at",
            postgresql_where=text("schedule_enabled"),
            sqlite_where=text("schedule_enabled = 1"),
        ),
    )


class TaskRun(Base):
    __tablename__ = "task_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(255))
    trigger: Mapped[str] = mapped_column(String(16))
    scheduled_for: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any | None] = mapped_column(JSON)
    instance_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # A client's Idempotency-Key: a repeated trigger with the same key returns this run.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # Why a skipped or missed occurrence did not run (paused, skipped by <who>, overlap...).
    reason: Mapped[str | None] = mapped_column(Text)
    # The backfill that queued this occurrence (status queued until a scheduler claims it).
    backfill_id: Mapped[str | None] = mapped_column(String(64))
    # cancel_other asked this running run to end: its process stops it and records it
    # cancelled, and the occurrence that asked starts then.
    cancel_requested_at: Mapped[datetime | None]
    # When run.too_long was written for it (once per run).
    too_long_announced_at: Mapped[datetime | None]

    __table_args__ = (
        # Exactly once: an occurrence of a task can be recorded a single time, whoever claims it.
        # Ad-hoc runs have scheduled_for NULL, and NULLs never collide.
        UniqueConstraint("task_id", "scheduled_for", name="uq_task_runs_occurrence"),
        UniqueConstraint("task_id", "idempotency_key", name="uq_task_runs_idempotency"),
        Index("ix_task_runs_task_created", "task_id", "created_at"),
        Index(
            "ix_task_runs_running_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        # A backfill's queue, taken in occurrence order.
        Index(
            "ix_task_runs_backfill_queue",
            "backfill_id",
            "status",
            "scheduled_for",
            postgresql_where=text("backfill_id IS NOT NULL"),
            sqlite_where=text("backfill_id IS NOT NULL"),
        ),
    )


class Backfill(Base):
    """Occurrences of a past period, queued as run rows for any scheduler to claim."""

    __tablename__ = "backfills"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(String(255))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    reprocess: Mapped[str] = mapped_column(String(16))  # none, failed, all
    order_by: Mapped[str] = mapped_column(String(16))  # oldest_first, newest_first
    max_concurrent: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # active, done, cancelled
    queued: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_backfills_active",
            "created_at",
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )


def run_row(
    task_id: str,
    user_id: str | None,
    trigger: str,
    scheduled_for: datetime | None,
    status: str,
    now: datetime,
    *,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    attempt: int = 0,
    instance_id: str | None = None,
    lease_expires_at: datetime | None = None,
    error: str | None = None,
    result: Any = None,
    idempotency_key: str | None = None,
    reason: str | None = None,
    backfill_id: str | None = None,
) -> dict[str, Any]:
    """A new history row, every column given: the one way runs are written."""
    return {
        "id": str(uuid.uuid4()),
        "task_id": task_id,
        "user_id": user_id,
        "trigger": trigger,
        "scheduled_for": scheduled_for,
        "started_at": started_at,
        "finished_at": finished_at,
        "status": status,
        "attempt": attempt,
        "instance_id": instance_id,
        "lease_expires_at": lease_expires_at,
        "created_at": now,
        "error": error,
        "result": result,
        "idempotency_key": idempotency_key,
        "reason": reason,
        "backfill_id": backfill_id,
        "cancel_requested_at": None,
        "too_long_announced_at": None,
    }


class SchedulerInstance(Base):
    """One row per scheduler process: its identity, a heartbeat and its stats."""

    __tablename__ = "scheduler_instances"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    user_filter: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebhookReplay(Base):
    """Signatures already accepted, so each is accepted once (shared by every instance)."""

    __tablename__ = "webhook_replays"

    signature_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class FeedKey(Base):
    """A key that opens one user's calendar feed. Only its SHA-256 is stored."""

    __tablename__ = "feed_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class BusinessCalendar(Base):
    """A user's named calendar of business days: weekend days, public holidays of a country
    (and subdivision), explicit closed dates and dates imported from ICS text. Schedules name
    it; `version` grows with every change, so a process that cached its days knows when to
    read it again."""

    __tablename__ = "calendars"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))
    # The zone whose dates decide (None: each schedule's own zone).
    timezone: Mapped[str | None] = mapped_column(String(64))
    weekend: Mapped[list[int]] = mapped_column(JSON)
    country: Mapped[str | None] = mapped_column(String(8))
    subdivision: Mapped[str | None] = mapped_column(String(16))
    # The `holidays` package's categories (None: its default, "public").
    categories: Mapped[list[str] | None] = mapped_column(JSON)
    # [{"date": "YYYY-MM-DD", "reason": "..."}]
    dates: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    ics: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_calendars_user_name"),)


class NotificationEndpoint(Base):
    """Where one user's events are sent, signed with the endpoint's own secret."""

    __tablename__ = "notification_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(500))
    # The event types sent here, as a list of names.
    events: Mapped[list[str]] = mapped_column(JSON)
    # The signing secret (whsec_...), encrypted with the instance's secret key: signing needs
    # the secret itself, so it cannot be stored as a hash.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Since when every delivery attempt has failed (None after a success).
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class NotificationDelivery(Base):
    """The outbox: one event for one endpoint, written in the transaction of the change that
    caused it, delivered at least once. Its id is the webhook-id every attempt sends."""

    __tablename__ = "notification_deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("notification_endpoints.id", ondelete="CASCADE")
    )
    user_id: Mapped[str | None] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(32))
    # The exact body signed and sent (the same bytes on every attempt).
    body: Mapped[str] = mapped_column(Text)
    # pending (waiting for an attempt), delivered, failed (given up), cancelled (its endpoint
    # was disabled).
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When it is next due. Claiming an attempt moves this past the attempt's timeout, so the
    # delivery stays pending but nobody else takes it meanwhile, and a delivering instance
    # that dies leaves it due again then: never lost, at worst sent twice with one id.
    next_attempt_at: Mapped[datetime]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_notification_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("ix_notification_deliveries_endpoint_created", "endpoint_id", "created_at"),
    )


class AuditEntry(Base):
    """One change: who did what to which object, when, and which fields it touched (names
    only: never values, so never a secret)."""

    __tablename__ = "audit_log"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime]
    # A JWT's subject, `cli:<os user>`, `local` (authentication off) or the verifier that
    # admitted a webhook (hook, hmac).
    actor: Mapped[str] = mapped_column(String(255))
    # Whose object it is: a user sees the entries about their own.
    user_id: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    fields: Mapped[list[str]] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_target", "target_id", "at"),
        Index("ix_audit_log_user_at", "user_id", "at"),
    )


# The tables themselves, for Core statements (claiming, batches, filters shared with the ORM).
TASKS = cast(Table, Task.__table__)
RUNS = cast(Table, TaskRun.__table__)
BACKFILLS = cast(Table, Backfill.__table__)
ENDPOINTS = cast(Table, NotificationEndpoint.__table__)
DELIVERIES = cast(Table, NotificationDelivery.__table__)
AUDIT = cast(Table, AuditEntry.__table__)
CALENDARS = cast(Table, BusinessCalendar.__table__)

TASK_FIELDS = (
    "id",
    "parent_id",
    "user_id",
    "name",
    "status",
    "priority",
    "inputs",
    "params",
    "schemas",
    "dependencies",
    "result",
    "error",
    "progress",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "schedule_type",
    "schedule_expression",
    "schedule_timezone",
    "schedule_enabled",
    "schedule_start_at",
    "schedule_end_at",
    "max_runs",
    "run_count",
    "next_run_at",
    "last_run_at",
    "schedule_misfire",
    "schedule_overlap",
    "schedule_jitter_seconds",
    "schedule_paused",
    "schedule_pause_note",
    "schedule_paused_until",
    "pause_after_failures",
    "alert_late_after_seconds",
    "alert_max_duration_seconds",
    "schedule_mode",
    "trigger_grace_seconds",
    "schedule_calendar",
    "schedule_calendar_rule",
    "consecutive_failures",
    "schedule_skip_count",
)
RUN_FIELDS = (
    "id",
    "task_id",
    "user_id",
    "trigger",
    "scheduled_for",
    "started_at",
    "finished_at",
    "status",
    "attempt",
    "error",
    "result",
    "instance_id",
    "reason",
    "backfill_id",
)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def task_to_dict(task: Task) -> dict[str, Any]:
    """The task as its JSON representation (the API's field names; datetimes in ISO 8601
    with their offset)."""
    return {name: _json_value(getattr(task, name)) for name in TASK_FIELDS}


def run_to_dict(run: TaskRun) -> dict[str, Any]:
    return {name: _json_value(getattr(run, name)) for name in RUN_FIELDS}
