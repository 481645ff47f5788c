"""InternalScheduler: claims due occurrences from the database and runs them.

Correctness lives in the database (storage/runs.py); this class only decides *when* to ask it.
It sleeps until the earliest due time, never longer than poll_interval, and wakes early when a
schedule changes (in this process, or through LISTEN/NOTIFY on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.core.types import RunStatus, RunTrigger
from apflow_server.execution.context import GRACEFUL_CANCEL
from apflow_server.execution.registry import ExecutorRegistry
from apflow_server.execution.registry import registry as default_registry
from apflow_server.execution.runner import RunExecutor
from apflow_server.execution.services import ExecutorServices
from apflow_server.notifications.dispatcher import Dispatcher, DispatcherThread
from apflow_server.notifications.worker import DispatcherProcess
from apflow_server.scheduler import run_log
from apflow_server.scheduler.base import (
    RunObserver,
    SchedulerConfig,
    SchedulerState,
    SchedulerStats,
)
from apflow_server.storage import instances, signals
from apflow_server.storage.database import Database, DatabaseError
from apflow_server.storage.listener import (
    UNWATCHED_POLL_SECONDS,
    ScheduleListener,
    SqliteFileWatcher,
    change_listener,
    shares_data,
)
from apflow_server.storage.runs import ClaimedRun, RunResult, RunStore, TaskState

logger = logging.getLogger("apflow_server.scheduler")

CompletionCallback = Callable[[str, bool, Any], Any | Awaitable[Any]]
TRANSIENT_ERRORS = (OperationalError, DBAPIError, OSError, ConnectionError, DatabaseError)
# With nothing claimable although something is due (rows locked by another scheduler), wait
# this long rather than spinning.
MIN_SLEEP = 0.05
# Occurrences due this soon are claimed now and started at their instant: claiming is a
# transaction of a few milliseconds, which would otherwise make every run that much late.
CLAIM_AHEAD = timedelta(milliseconds=50)
# Seconds between looks for expired leases while claims keep finding runs (a lease lasts
# at least 2 s, 30 by default); a poll that claims nothing always looks.
RECLAIM_EVERY = 1.0
# After a change signal, how long the lease task waits before checking ownership (signals
# come in bursts; one check serves them all).
OWNERSHIP_CHECK = 0.25
MAX_KEPT_OUTCOMES = 1000
CANCELLED_FOR_NEWER = "cancelled by a newer occurrence (cancel_other)"
# Most outcomes recorded in one transaction.
FINISH_BATCH = 200
BACKFILL_CLAIM_BATCH = 25


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Active:
    claimed: ClaimedRun
    task: asyncio.Task[None]
    lost: bool = False  # ended elsewhere (terminated, reclaimed): stop, record nothing
    ending: bool = False  # asked to end (cancel_other): stop, record it cancelled
    # Between its start and its outcome: only then is cancelling it stopping the run (later,
    # it would cut the recording of the outcome and the start of a buffered follow-up).
    executing: bool = False
    # Its outcome is waiting to be recorded (the finisher's batch): its slot is free.
    recording: bool = False


class InternalScheduler:
    """The built-in scheduler. Safe to run in any number of processes at once."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        database: Database | None = None,
        settings: Settings | None = None,
        registry: ExecutorRegistry | None = None,
        claim: bool = True,
        observer: RunObserver | None = None,
        executor_services: ExecutorServices | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.settings = settings or Settings.from_env()
        self._database = database
        self._owns_database = database is None
        # What the built-in executors use (the pooled HTTP client): made from this
        # scheduler's settings unless its owner (the app) hands one in and closes it itself.
        self.executor_services = executor_services or ExecutorServices(self.settings)
        self._owns_executor_services = executor_services is None
        self.registry = registry or default_registry
        # claim=False: run only what is triggered here (an API server without a scheduler).
        self.claiming = claim
        self.observer = observer
        self.instance_id = new_instance_id()
        self.stats = SchedulerStats(instance_id=self.instance_id)
        self._callbacks: list[CompletionCallback] = []
        self._active: dict[str, _Active] = {}
        # Outcomes of runs in progress, and of the last MAX_KEPT_OUTCOMES that ended (oldest
        # first), for waiters that ask after the end (sync webhooks). Two dicts so that keeping
        # the second bounded never scans the first: under a burst it holds thousands.
        self._outcomes: dict[str, asyncio.Future[RunResult]] = {}
        self._settled: dict[str, asyncio.Future[RunResult]] = {}
        self._finishing: asyncio.Queue[
            tuple[ClaimedRun, RunResult, asyncio.Future[ClaimedRun | None]]
        ] = asyncio.Queue()
        self._finisher_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._listener: ScheduleListener | SqliteFileWatcher | None = None
        # The longest sleep while nothing is due: poll_interval, shorter when no listener
        # tells of other processes' changes.
        self._idle_poll = self.config.poll_interval
        self._reclaim_at = 0.0  # the event loop's time of the next look for expired leases
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Set when a run of ours may have been ended elsewhere (terminate_other): the lease
        # task checks ownership at once instead of at its next renewal.
        self._ownership = asyncio.Event()
        self.store: RunStore | None = None
        self.executor: RunExecutor | None = None
        # Delivers the notification outbox beside the claim loop (claiming schedulers only).
        self.dispatcher: Dispatcher | DispatcherThread | DispatcherProcess | None = None

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> SchedulerState:
        return self.stats.state

    @property
    def mode(self) -> str:
        """ "internal" claims due work; "executor" only runs what is started in this process
        (an API server with --no-scheduler, `apflow tasks execute`)."""
        return "internal" if self.claiming else "executor"

    @property
    def heartbeat_interval(self) -> float:
        return self.config.heartbeat_interval or self.settings.heartbeat_seconds

    @property
    def database(self) -> Database:
        if self._database is None:
            raise RuntimeError("the scheduler is not started")
        return self._database

    def on_task_complete(self, callback: CompletionCallback) -> None:
        """Call `callback(task_id, success, result)` (sync or async) after every run."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        if self.state not in {SchedulerState.STOPPED, SchedulerState.ERROR}:
            raise RuntimeError(f"cannot start a scheduler that is {self.state.value}")
        self.stats.state = SchedulerState.STARTING
        try:
            if self._database is None:
                self._database = Database.from_settings(self.settings)
            await self._database.ensure_schema()
        except Exception:
            self.stats.state = SchedulerState.ERROR
            raise
        self._wake = asyncio.Event()
        self._ownership = asyncio.Event()
        self._stopping = False
        self.store = RunStore(self._database, self.settings, self.instance_id)
        self.executor = RunExecutor(
            self.store,
            self.registry,
            task_timeout=self.config.task_timeout,
            retry_on_failure=self.config.retry_on_failure,
            max_retries=self.config.max_retries,
            retry_backoff_seconds=self.config.retry_backoff_seconds,
            max_parallel=self.config.max_parallel_per_run,
            services=self.executor_services,
        )
        self.stats.started_at = utcnow()
        self.stats.state = SchedulerState.RUNNING
        signals.subscribe(self._wake.set)
        # Claiming or not: a run started here may be ended elsewhere (terminate_other).
        self._listener = change_listener(self._database, self._on_change)
        if self._listener is not None:
            self._listener.start()
        elif shares_data(self._database):  # behind a transaction pooler, no listen URL
            self._idle_poll = min(self.config.poll_interval, UNWATCHED_POLL_SECONDS)
        logger.info(
            "scheduler %s started: host=%s pid=%s mode=%s user=%s database=%s poll=%ss "
            "max_concurrent=%s",
            self.instance_id,
            socket.gethostname(),
            os.getpid(),
            self.mode,
            self.config.user_id or "*",
            self._database.dialect,
            self.config.poll_interval,
            self.config.max_concurrent_tasks,
        )
        await self._beat()
        self._finishing = asyncio.Queue()
        self._finisher_task = asyncio.create_task(self._finisher(), name="apflow-finisher")
        self._loop_task = asyncio.create_task(self._loop(), name="apflow-scheduler")
        self._lease_task = asyncio.create_task(self._renew_leases(), name="apflow-leases")
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="apflow-heartbeat")
        if self.claiming and self.settings.notify_in_scheduler != "off":
            self.dispatcher = self._delivering()
            signals.subscribe(self.dispatcher.wake)
            self.dispatcher.start()

    def _delivering(self) -> Dispatcher | DispatcherThread | DispatcherProcess:
        """Who delivers this scheduler's notifications (APFLOW_NOTIFY_IN_SCHEDULER)."""
        assert self._database is not None
        observer = self.observer
        counted = observer.notification_attempted if observer is not None else None
        if not shares_data(self._database):  # an in-memory database: only this engine sees it
            return Dispatcher(self._database, self.settings, on_outcome=counted)
        if self.settings.notify_in_scheduler == "thread":
            return DispatcherThread(self._database.url, self.settings, on_outcome=counted)
        return DispatcherProcess(self._database, self.settings, on_outcome=counted)

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running runs finish within the grace period, then cancel them."""
        if self.state in {SchedulerState.STOPPED, SchedulerState.STOPPING}:
            return
        self.stats.state = SchedulerState.STOPPING
        self._stopping = True
        self._wake.set()
        signals.unsubscribe(self._wake.set)
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self.dispatcher is not None:
            signals.unsubscribe(self.dispatcher.wake)
            await self.dispatcher.stop()
            self.dispatcher = None
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        running = [active.task for active in self._active.values()]
        if running:
            logger.info("waiting up to %ss for %d running run(s)", grace, len(running))
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for helper in (self._lease_task, self._finisher_task, self._heartbeat_task):
            if helper is not None:
                helper.cancel()
                await asyncio.gather(helper, return_exceptions=True)
        if self._owns_executor_services:  # no run is left to use its connections
            await self.executor_services.aclose()
        self.stats.state = SchedulerState.STOPPED
        try:
            await self._beat()
        except TRANSIENT_ERRORS:
            logger.warning("could not record the stop of %s", self.instance_id)
        if self._owns_database and self._database is not None:
            await self._database.dispose()
            self._database = None
        logger.info("scheduler %s stopped", self.instance_id)

    async def pause(self) -> None:
        """Stop claiming new occurrences; running runs continue and leases are kept."""
        if self.state is SchedulerState.RUNNING:
            self.stats.state = SchedulerState.PAUSED
            await self._beat()

    async def resume(self) -> None:
        if self.state is SchedulerState.PAUSED:
            self.stats.state = SchedulerState.RUNNING
            self._wake.set()
            await self._beat()

    async def trigger(self, task_id: str, trigger: RunTrigger = RunTrigger.MANUAL) -> str:
        """Run a task now, in this process; returns the run id."""
        claimed = await self.start_run(task_id, trigger)
        assert claimed is not None
        return claimed.run_id

    async def start_run(
        self,
        task_id: str,
        trigger: RunTrigger,
        *,
        idempotency_key: str | None = None,
        scheduled_for: datetime | None = None,
        check: Callable[[TaskState], None] | None = None,
        overlap: str | None = None,
    ) -> ClaimedRun | None:
        """Start a run here: ad hoc, or (with `scheduled_for`) the named due occurrence.

        Returns None when that occurrence is not due (already fired, skipped or missed); a
        run found by its idempotency key comes back `replayed` and is not started again.
        `check` sees the task under its row lock first, and raises to refuse.
        """
        store = self._require_store()
        if scheduled_for is not None:
            claimed = await store.claim_occurrence(task_id, scheduled_for, check=check)
        else:
            claimed = await store.start_now(
                task_id, trigger, idempotency_key=idempotency_key, check=check, overlap=overlap
            )
        self._check_interrupted()
        if claimed is not None and not claimed.replayed:
            self._launch(claimed)
        return claimed

    async def wait_for(self, run_id: str) -> RunResult | None:
        """The outcome of a run started in this process (None if it is not one of ours)."""
        future = self._outcomes.get(run_id) or self._settled.get(run_id)
        return None if future is None else await asyncio.shield(future)

    async def run_and_wait(self, task_id: str, trigger: RunTrigger) -> tuple[str, RunResult]:
        """Run a task now and wait for its outcome (synchronous webhooks, `tasks execute`)."""
        claimed = await self.start_run(task_id, trigger)
        assert claimed is not None
        outcome = await self.wait_for(claimed.run_id)
        assert outcome is not None
        return claimed.run_id, outcome

    async def get_status(self) -> SchedulerStats:
        self.stats.active_tasks = len(self._active)
        return self.stats

    async def wait_idle(self) -> None:
        """Wait until no run is active in this process (for tests and one-shot commands)."""
        while self._active:
            await asyncio.gather(
                *(a.task for a in list(self._active.values())), return_exceptions=True
            )

    # ------------------------------------------------------------------ the loop

    def _require_store(self) -> RunStore:
        if self.store is None or self.state not in {SchedulerState.RUNNING, SchedulerState.PAUSED}:
            raise RuntimeError("the scheduler is not running")
        return self.store

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                timeout = await self._poll_once()
                failures = 0
            except TRANSIENT_ERRORS as exc:
                failures += 1
                timeout = min(0.5 * 2**failures, 30.0)
                logger.warning("database unavailable (%s); retrying in %.1f s", exc, timeout)
            except Exception:
                logger.exception("scheduler loop error; continuing")
                timeout = min(self.config.poll_interval, 5.0)
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _poll_once(self) -> float:
        """Reclaim, claim, beat; return how long to sleep before the next look."""
        assert self.store is not None
        now = utcnow()
        self.stats.last_poll_at = now
        claimed: list[ClaimedRun] = []
        free = self._free_slots()
        if self.claiming and self.state is SchedulerState.RUNNING and free > 0:
            claimed = await self.store.claim_due(free, self.config.user_id, ahead=CLAIM_AHEAD)
            self._check_interrupted()
            for run in claimed:
                self._launch(run)
        loop_time = asyncio.get_running_loop().time()
        # After claiming: due runs first. A poll that claimed nothing looks every time (it
        # may have woken for a lease that just expired); one that claimed, at most once a
        # RECLAIM_EVERY: under load a look per claim was a statement per claim.
        if self.claiming and (not claimed or loop_time >= self._reclaim_at):
            self._reclaim_at = loop_time + RECLAIM_EVERY
            buffered: list[ClaimedRun] = []
            reclaimed = await self.store.reclaim_expired(
                follow_ups=buffered, user_id=self.config.user_id
            )
            for run in buffered:  # what the overlap policy started as an abandoned run ended
                self._launch(run)
            if reclaimed:
                self.stats.runs_reclaimed += len(reclaimed)
                logger.warning("recorded %d abandoned run(s): %s", len(reclaimed), reclaimed)
        backfilled: list[ClaimedRun] = []
        free = self._free_slots()
        if self.claiming and self.state is SchedulerState.RUNNING and free > 0:
            # Backfills take the slots that due occurrences left (those come first).
            # In small batches: a claim launches its runs in one go, and a schedule falling
            # due meanwhile waits for the event loop to get through them (batches of 100 made
            # other schedules' p99 lateness 2-3x idle; 25 keep it at idle, at ~1,700/s).
            batch = min(free, BACKFILL_CLAIM_BATCH)
            backfilled = await self.store.claim_backfill(batch, self.config.user_id)
            for run in backfilled:
                self._launch(run)
        if not self.claiming:
            return self._idle_poll
        if backfilled:
            return 0.0  # more may be queued: take them while slots are free
        if self._free_slots() <= 0:
            return self._idle_poll  # a finishing run frees a slot and wakes us
        wake_at = await self.store.next_wake_at(self.config.user_id)
        self.stats.next_wake_at = wake_at
        logger.debug(
            "poll: claimed %d, running %d, next due %s",
            len(claimed),
            len(self._active),
            wake_at.isoformat() if wake_at else "none",
        )
        if wake_at is None or self.state is not SchedulerState.RUNNING:
            return self._idle_poll  # a change wakes us
        delay = (wake_at - CLAIM_AHEAD - utcnow()).total_seconds()
        if delay > 0:
            return min(delay, self._idle_poll)
        if claimed or wake_at > now + CLAIM_AHEAD:
            # Due within the look-ahead but after this claim's window (the claim began
            # earlier): claim again at once, or it would start a whole MIN_SLEEP late.
            return 0.0
        return MIN_SLEEP  # inside the window and not ours: another scheduler holds it

    # ------------------------------------------------------------------ runs

    def _free_slots(self) -> int:
        """How many more runs may start: max_concurrent runs execute at once. A run whose
        outcome waits for its recording no longer holds a slot (unless its overlap policy may
        start a buffered occurrence in its place then), so the next claim overlaps
        the recording instead of waiting for it (claims and records would otherwise take
        turns, each idling the process while the database answers); at most max_concurrent
        of those wait at once, which bounds what this process holds in memory."""
        limit = self.config.max_concurrent_tasks
        # A run whose record may hand its slot to a buffered occurrence keeps it until then.
        recording = sum(
            1
            for active in self._active.values()
            if active.recording and not active.claimed.may_hand_over
        )
        return min(limit - (len(self._active) - recording), 2 * limit - len(self._active))

    def _launch(self, claimed: ClaimedRun) -> None:
        self._outcome_future(claimed.run_id)
        task = asyncio.create_task(self._execute(claimed), name=f"run-{claimed.run_id}")
        self._active[claimed.run_id] = _Active(claimed, task)
        self.stats.active_tasks = len(self._active)

    def _outcome_future(self, run_id: str) -> asyncio.Future[RunResult]:
        """A future for the run's outcome, kept for a while for waiters (sync webhooks)."""
        future: asyncio.Future[RunResult] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._outcomes[run_id] = future
        return future

    def _settle_outcome(self, run_id: str, outcome: RunResult | None) -> None:
        future = self._outcomes.pop(run_id, None)
        if future is None:
            return
        if not future.done():
            if outcome is None:
                future.set_exception(RuntimeError("the run ended without an outcome"))
            else:
                future.set_result(outcome)
        self._settled[run_id] = future
        if len(self._settled) > MAX_KEPT_OUTCOMES:
            del self._settled[next(iter(self._settled))]

    async def _on_time(self, claimed: ClaimedRun) -> None:
        """Wait for the start instant of a run claimed ahead of it."""
        early = (claimed.started_at - utcnow()).total_seconds()
        if early > 0:
            await asyncio.sleep(early)
        if self.observer is not None:
            self.observer.run_started(claimed)

    async def _execute(self, claimed: ClaimedRun) -> None:
        assert self.executor is not None and self.store is not None
        current: ClaimedRun | None = claimed
        try:
            while current is not None:
                active = self._active[current.run_id]
                active.executing = True
                try:
                    if current is claimed:
                        await self._on_time(current)
                        # what the history records: when it really started
                        current = dataclasses.replace(current, started_at=utcnow())
                        claimed = current
                    run_log.started(current)
                    outcome = await self.executor.execute(current)
                except asyncio.CancelledError:
                    if active.ending and not active.lost and not self._stopping:
                        # Asked to end by a newer occurrence: recorded like any outcome, and
                        # that occurrence starts next (the follow-up). This task goes on.
                        asyncio.current_task().uncancel()  # type: ignore[union-attr]
                        outcome = RunResult(RunStatus.CANCELLED, None, CANCELLED_FOR_NEWER)
                    elif active.lost:
                        logger.info("run %s was ended elsewhere; stopped here", current.run_id)
                        self._settle_outcome(
                            current.run_id,
                            RunResult(RunStatus.CANCELLED, None, "the run was ended elsewhere"),
                        )
                        return
                    else:
                        outcome = RunResult(RunStatus.CANCELLED, None, "the scheduler stopped")
                        # Recorded here, not through the finisher: when asyncio.run tears down
                        # (Ctrl-C without stop()), the finisher is being cancelled too and
                        # would never answer, and the process would hang.
                        await asyncio.shield(self._record_batch([(current, outcome)]))
                        self._settle_outcome(current.run_id, outcome)
                        raise
                except TRANSIENT_ERRORS as exc:  # the database went away while loading the tree
                    logger.warning("run %s could not run: %s", current.run_id, exc)
                    outcome = RunResult(RunStatus.FAILED, None, f"database unavailable: {exc}")
                except Exception as exc:  # a bug: never lose the run over it
                    logger.exception("run %s failed in the scheduler", current.run_id)
                    outcome = RunResult(RunStatus.FAILED, None, f"internal error: {exc}")
                active.executing = False
                active.recording = True
                self._wake.set()  # its slot is free
                follow_up = await self._finish(current, outcome)
                active.recording = False
                self._settle_outcome(current.run_id, outcome)
                await self._completed(current, outcome)
                if follow_up is not None:
                    self._outcome_future(follow_up.run_id)
                    self._active[follow_up.run_id] = _Active(follow_up, active.task)
                    self._active.pop(current.run_id, None)
                current = follow_up
        finally:
            if current is not None:
                self._active.pop(current.run_id, None)
                self._settle_outcome(current.run_id, None)
            self._active.pop(claimed.run_id, None)
            self.stats.active_tasks = len(self._active)
            self._wake.set()  # a slot is free

    async def _finish(self, claimed: ClaimedRun, outcome: RunResult) -> ClaimedRun | None:
        """Hand the outcome to the finisher; returns a buffered run to start next."""
        future: asyncio.Future[ClaimedRun | None] = asyncio.get_running_loop().create_future()
        self._finishing.put_nowait((claimed, outcome, future))
        return await future

    async def _finisher(self) -> None:
        """Record outcomes in batches: whatever has finished since the last commit goes in one
        transaction, so under load one commit serves many runs and idle adds no delay."""
        while True:
            batch = [await self._finishing.get()]
            while len(batch) < FINISH_BATCH and not self._finishing.empty():
                batch.append(self._finishing.get_nowait())
            results = await self._record_batch(
                [(claimed, outcome) for claimed, outcome, _ in batch]
            )
            for (_, _, future), follow_up in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(follow_up)

    async def _record_batch(
        self, items: list[tuple[ClaimedRun, RunResult]]
    ) -> list[ClaimedRun | None]:
        """finish_many, retried through a short database outage (within the lease)."""
        assert self.store is not None
        delay = 0.2
        deadline = asyncio.get_running_loop().time() + self.settings.lease_seconds
        while True:
            try:
                return await self.store.finish_many(items)
            except TRANSIENT_ERRORS as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    runs = ", ".join(claimed.run_id for claimed, _ in items)
                    logger.error("could not record run(s) %s: %s", runs, exc)
                    return [None] * len(items)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _completed(self, claimed: ClaimedRun, outcome: RunResult) -> None:
        success = outcome.status is RunStatus.COMPLETED
        run_log.finished(claimed, outcome)
        if self.observer is not None:
            self.observer.run_finished(outcome)
        self.stats.tasks_executed += 1
        if success:
            self.stats.tasks_succeeded += 1
        else:
            self.stats.tasks_failed += 1
        if outcome.status is RunStatus.TIMEOUT:
            self.stats.tasks_timed_out += 1
        for callback in self._callbacks:
            try:
                value = callback(claimed.task_id, success, outcome.result)
                if inspect.isawaitable(value):
                    await value
            except Exception:
                logger.exception("on_task_complete callback failed for %s", claimed.task_id)

    def _on_change(self) -> None:
        """Another process changed something: what is due, who owns a run of ours, or what
        waits in the notification outbox."""
        self._wake.set()
        self._ownership.set()
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def _check_interrupted(self) -> None:
        """After our own claim or start: if it ended a run of ours or asked one to end, check
        ownership now."""
        if self.store is not None and self.store.interrupted:
            self.store.interrupted.clear()
            self._ownership.set()

    async def _renew_leases(self) -> None:
        """Renew our leases well before they expire, every third of the lease; stop runs we no
        longer own. A change signal (terminate_other ends a run elsewhere) makes a read-only
        ownership check at once, at most every OWNERSHIP_CHECK seconds, without renewing."""
        loop = asyncio.get_running_loop()
        interval = max(self.settings.lease_seconds / 3, 0.5)
        renew_at = loop.time() + interval
        while True:
            renewing = False
            try:
                await asyncio.wait_for(self._ownership.wait(), max(renew_at - loop.time(), 0))
                await asyncio.sleep(OWNERSHIP_CHECK)  # a burst of signals costs one check
            except TimeoutError:
                renewing = True
                renew_at = loop.time() + interval
            self._ownership.clear()
            if not self._active or self.store is None:
                continue
            ids = list(self._active)
            try:
                owned = await (self.store.renew(ids) if renewing else self.store.owned(ids))
            except TRANSIENT_ERRORS as exc:
                logger.warning("lease renewal failed: %s", exc)
                continue
            for run_id in ids:
                active = self._active.get(run_id)
                if active is None or not active.executing or active.task.done():
                    continue
                if run_id not in owned:
                    active.lost = True
                    active.task.cancel()
                elif owned[run_id] and not active.ending:
                    active.ending = True
                    active.task.cancel(GRACEFUL_CANCEL)

    async def _heartbeats(self) -> None:
        """Refresh the instance row every heartbeat_interval, whatever the poll interval and
        however long the loop sleeps: `scheduler status`, `scheduler trigger` and /readyz judge
        liveness by it."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat()
                if self.claiming and self.store is not None:  # on the beat, not every poll
                    await self.store.announce_too_long()
            except TRANSIENT_ERRORS as exc:
                logger.warning("heartbeat failed: %s", exc)
            except Exception:
                logger.exception("heartbeat failed")

    async def _beat(self) -> None:
        """Write this instance's row: its state, its stats and the time."""
        if self._database is None:
            return
        now = utcnow()
        self.stats.active_tasks = len(self._active)
        await instances.beat(
            self._database,
            {
                "id": self.instance_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "mode": self.mode,
                "user_filter": self.config.user_id,
                "state": self.state.value,
                "started_at": self.stats.started_at or now,
                "heartbeat_at": now,
                "stats": {
                    **self.stats.to_dict(),
                    "heartbeat_interval": self.heartbeat_interval,
                },
            },
        )
