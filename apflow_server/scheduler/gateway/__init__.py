"""Gateways to the world outside the scheduler: the iCalendar export (SPEC §8)."""

from apflow_server.scheduler.gateway.ical import ICalExporter, generate_ical_feed_url

__all__ = ["ICalExporter", "generate_ical_feed_url"]
