"""Schedule math: parse, validate and compute fire times. Pure functions, no I/O."""

from apflow_server.schedules.schedule import Schedule, jitter_delay

__all__ = ["Schedule", "jitter_delay"]
