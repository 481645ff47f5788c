"""The garbage collector of a long-running service process (`apflow serve`, `apflow
scheduler start`), tuned once its start-up is done.

With CPython's defaults a busy server collected its youngest generation every 700
allocations and, every hundred of those, walked every object it had loaded at start-up
(SQLAlchemy's, Starlette's, the schedules'): pauses of tens of milliseconds that made up the
tail of request latency (webhook triggers p99 65-135 ms; with this tuning 31-67 ms, measured
in docs/benchmarks.md). Freezing moves what start-up made out of the collector's sight; a
larger first threshold collects less often. Objects made after start-up are collected as
before (cycles among them included), in larger steps. What existed at start-up is freed by
reference counting as ever, but a reference cycle among those objects that becomes garbage
later is never collected: a one-time, bounded cost (start-up's objects are mostly modules,
classes, compiled statements and settings, which live as long as the process anyway).
"""

from __future__ import annotations

import gc

# Allocations between collections of the youngest generation (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


def settle_after_startup() -> None:
    """Collect once, freeze what start-up left, and collect the young less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
