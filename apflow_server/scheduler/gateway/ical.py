"""Kept for earlier import paths: see `apflow_server.exports.ical`."""

from apflow_server.exports.ical import (
    DEFAULT_CALENDAR_NAME,
    CalendarTask,
    ICalExporter,
    Occurrences,
    build_calendar,
    describe,
    generate_ical_feed_url,
    plan_occurrences,
    task_event,
    task_url,
)

__all__ = [
    "DEFAULT_CALENDAR_NAME",
    "CalendarTask",
    "ICalExporter",
    "Occurrences",
    "build_calendar",
    "describe",
    "generate_ical_feed_url",
    "plan_occurrences",
    "task_event",
    "task_url",
]
