"""One log line when a run starts and one when it ends, at INFO on the `apflow_server.runs`
logger: what an operator greps for. The values are also attached to the record as `fields`,
which the JSON log format writes as keys of their own."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from apflow_server.core.clock import utcnow

if TYPE_CHECKING:
    from apflow_server.storage.runs import ClaimedRun, RunResult

logger = logging.getLogger("apflow_server.runs")


def started(run: ClaimedRun) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    lateness = run.lateness
    fields = {
        "event": "run.started",
        "task": run.task_id,
        "run": run.run_id,
        "trigger": run.trigger,
        "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
        "lateness_s": None if lateness is None else round(lateness, 3),
        "attempt": run.attempt,
    }
    late = f" scheduled_for={fields['scheduled_for']}" if run.scheduled_for else ""
    if lateness is not None:
        late += f" late={lateness:.3f}s"
    logger.info(
        "run started task=%s run=%s trigger=%s%s",
        run.task_id,
        run.run_id,
        run.trigger,
        late,
        extra={"fields": fields},
    )


def finished(run: ClaimedRun, outcome: RunResult) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    duration = (utcnow() - run.started_at).total_seconds()
    fields = {
        "event": "run.finished",
        "task": run.task_id,
        "run": run.run_id,
        "trigger": run.trigger,
        "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
        "status": outcome.status.value,
        "duration_s": round(duration, 3),
        "attempt": outcome.attempt,
        "error": outcome.error,
    }
    error = f" error={outcome.error!r}" if outcome.error else ""
    logger.info(
        "run finished task=%s run=%s trigger=%s status=%s duration=%.3fs%s",
        run.task_id,
        run.run_id,
        run.trigger,
        outcome.status.value,
        duration,
        error,
        extra={"fields": fields},
    )
