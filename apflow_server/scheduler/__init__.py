"""Scheduling: the internal scheduler and, under `gateway`, the bridges to external ones."""

from apflow_server.scheduler.base import SchedulerConfig, SchedulerState, SchedulerStats
from apflow_server.scheduler.internal import InternalScheduler

__all__ = ["InternalScheduler", "SchedulerConfig", "SchedulerState", "SchedulerStats"]
