"""One log line when a run starts and one when it ends, at INFO on the `apflow_server.runs`
logger: what an operator greps for. The values are also attached to the record as `fields`,
which the JSON log format writes as keys of their own."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from apflow_server.core.clock import utcnow
from apflow_server.core.redaction import redact_urls

if TYPE_CHECKING:
    from apflow_server.storage.runs import ClaimedRun, RunResult

logger = logging.getLogger("apflow_server.runs")


def _fields(event: str, run: ClaimedRun, **more: Any) -> dict[str, Any]:
    return {
        "event": event,
        "task": run.task_id,
        "run": run.run_id,
        "trigger": run.trigger,
        "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
        **more,
    }


def started(run: ClaimedRun) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    lateness = run.lateness
    fields = _fields(
        "run.started",
        run,
        lateness_s=None if lateness is None else round(lateness, 3),
        attempt=run.attempt,
    )
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
    # An error may quote a URL the run called, with its credentials.
    error = redact_urls(outcome.error) if outcome.error else None
    fields = _fields(
        "run.finished",
        run,
        status=outcome.status.value,
        duration_s=round(duration, 3),
        attempt=outcome.attempt,
        error=error,
    )
    logger.info(
        "run finished task=%s run=%s trigger=%s status=%s duration=%.3fs%s",
        run.task_id,
        run.run_id,
        run.trigger,
        outcome.status.value,
        duration,
        f" error={error!r}" if error else "",
        extra={"fields": fields},
    )
