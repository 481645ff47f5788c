"""`apflow scheduler ...`: run the internal scheduler (in the foreground or as a daemon), see the
local daemon and every live scheduler in the database, list scheduled tasks, and trigger a task
through a running scheduler."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import click
from rich.status import Status

from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.core.collector import settle_after_startup
from apflow_server.core.errors import ApflowError
from apflow_server.core.logs import configure_logging
from apflow_server.core.types import RunStatus, RunTrigger, TaskStatus
from apflow_server.plugins import load_plugins
from apflow_server.scheduler import InternalScheduler, SchedulerConfig
from apflow_server.service import Service
from apflow_server.service.runs import takers
from apflow_server.storage.models import SchedulerInstance, Task, TaskRun
from apflow_server.storage.repository import TaskNode

from . import daemon, output
from .daemon import DaemonError, DaemonFiles, DaemonState
from .options import format_option
from .runs import execute_here, report_run
from .runtime import OPERATOR, database_errors, open_database, run_with_service
from .scheduled import list_scheduled

logger = logging.getLogger("apflow_server.cli.scheduler")

# How often `trigger --wait` looks at the run history, and re-checks that a scheduler is alive
# while its request waits to be claimed.
WAIT_POLL = 0.2
TAKER_CHECK = 5.0
# The longest a run started here by `trigger` may take, unless --timeout says otherwise.
DEFAULT_RUN_TIMEOUT = 3600.0


@click.group("scheduler")
def scheduler_group() -> None:
    """Run the internal scheduler and see what it does."""


scheduler_group.add_command(list_scheduled, "list")


# ---------------------------------------------------------------------- start


class RunnableScheduler(Protocol):
    """What `scheduler start` needs of a scheduler, whichever mode it runs in."""

    instance_id: str

    async def start(self) -> None: ...

    async def stop(self, grace: float | None = None) -> None: ...


@asynccontextmanager
async def scheduler_for(
    config: SchedulerConfig, settings: Settings
) -> AsyncIterator[RunnableScheduler]:
    """The scheduler `scheduler start` runs, and what it holds open.

    API mode: when an API server URL is configured (`api_server_url` in
    config.cli.yaml or APFLOW_API_SERVER_URL), the scheduler does not open the database; it
    asks that server for due tasks and fires them through JSON-RPC, with the configured
    admin_auth_token or an admin JWT signed with the config's jwt_secret (created if missing).
    """
    if settings.api_server_url:
        from apflow_server.scheduler.api_mode import ApiScheduler, resolve_token

        from .configure import ensure_jwt_secret

        secret = None if settings.admin_auth_token else ensure_jwt_secret(settings)
        yield ApiScheduler(config, settings, resolve_token(settings, secret))
        return
    database = open_database(settings)
    try:
        yield InternalScheduler(config, database=database, settings=settings)
    finally:
        await database.dispose()


async def run_scheduler(config: SchedulerConfig, settings: Settings, pid_file: Path | None) -> None:
    """Run a scheduler until SIGINT or SIGTERM, then stop it gracefully (stop
    claiming, let running runs finish within the grace period, then cancel and record them).

    With `pid_file` (the daemon), the file is written once the scheduler has started and
    removed when it has stopped."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stopping.is_set():
            logger.warning("%s again: already stopping", signum.name)
            return
        logger.info("%s received: stopping gracefully", signum.name)
        stopping.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with scheduler_for(config, settings) as scheduler:
            with database_errors():
                await scheduler.start()
            settle_after_startup()
            try:
                if pid_file is not None:
                    daemon.write_pid_file(pid_file, os.getpid())
                await stopping.wait()
            finally:
                await scheduler.stop()
                if pid_file is not None:
                    daemon.remove_pid_file(pid_file, os.getpid())
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def _daemon_arguments(config: SchedulerConfig, verbose: bool) -> list[str]:
    """The command line that re-runs this `scheduler start` as the daemon itself."""
    arguments = [
        "scheduler",
        "start",
        "--daemon",
        "--poll-interval",
        str(config.poll_interval),
        "--max-concurrent",
        str(config.max_concurrent_tasks),
        "--timeout",
        str(config.task_timeout),
        "--retry" if config.retry_on_failure else "--no-retry",
        "--max-retries",
        str(config.max_retries),
        "--shutdown-grace",
        str(config.shutdown_grace_seconds),
    ]
    if config.user_id is not None:
        arguments.append(f"--user-id={config.user_id}")  # survives a value like "-x"
    if verbose:
        arguments.append("--verbose")
    return arguments


def _start_background(files: DaemonFiles, arguments: Sequence[str]) -> None:
    found = daemon.probe(files)
    if found.state is DaemonState.RUNNING:
        raise DaemonError(
            f"a background scheduler is already running (pid {found.pid}, {files.pid_file}); "
            "stop it first with `apflow scheduler stop`"
        )
    if found.state is DaemonState.STALE:
        daemon.remove_pid_file(files.pid_file, found.pid)
        named = f"pid {found.pid} is not running" if found.pid else "it held no pid"
        output.line(f"Removed a stale PID file {files.pid_file} ({named}).")
    child, offset = daemon.spawn(arguments, files)
    with output.console(stderr=True).status("Starting the scheduler in the background ..."):
        daemon.wait_started(child, files, offset)
    output.line(f"Scheduler started in the background (pid {child.pid}).")
    output.line(f"  log file: {files.log_file}")
    output.line(f"  PID file: {files.pid_file}")
    output.line("  stop it with `apflow scheduler stop`")


@scheduler_group.command("start")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=60,
    show_default=True,
    help="Longest sleep between looks at the database, in seconds (the scheduler wakes "
    "earlier when something comes due).",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Most runs executing at once.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=3600,
    show_default=True,
    help="Longest a run may take, in seconds; then it is cancelled and recorded as timeout.",
)
@click.option(
    "--retry/--no-retry",
    default=False,
    show_default=True,
    help="Retry a failed run, with exponential backoff.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="With --retry: retries per run.",
)
@click.option("--user-id", help="Only run tasks of this owner.")
@click.option(
    "--shutdown-grace",
    type=click.FloatRange(min=0),
    default=20,
    show_default=True,
    help="On stop, how long running runs may finish before they are cancelled, in seconds "
    "(keep it below `scheduler stop --timeout`).",
)
@click.option(
    "--background",
    is_flag=True,
    help="Run as a daemon: detached from this terminal, PID file APFLOW_HOME/scheduler.pid, "
    "log APFLOW_HOME/scheduler.log.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="DEBUG-level logging: every poll, and library detail."
)
@click.option("--daemon", "daemon_child", is_flag=True, hidden=True)
def start(
    poll_interval: float,
    max_concurrent: int,
    timeout: float,
    retry: bool,
    max_retries: int,
    user_id: str | None,
    shutdown_grace: float,
    background: bool,
    verbose: bool,
    daemon_child: bool,
) -> None:
    """Run the internal scheduler: in the foreground until Ctrl-C or SIGTERM (a graceful
    stop), or with --background as a daemon that `apflow scheduler stop` stops.

    Any number of schedulers may share one database: each occurrence runs exactly once."""
    settings = Settings.from_env()
    load_plugins(settings)
    config = SchedulerConfig(
        poll_interval=poll_interval,
        max_concurrent_tasks=max_concurrent,
        task_timeout=timeout,
        retry_on_failure=retry,
        max_retries=max_retries,
        user_id=user_id,
        shutdown_grace_seconds=shutdown_grace,
    )
    files = DaemonFiles.of(settings.home)
    if background and not daemon_child:
        _start_background(files, _daemon_arguments(config, verbose))
        return
    configure_logging(
        logging.DEBUG if verbose else logging.INFO, settings.log_format, verbose=verbose
    )
    asyncio.run(run_scheduler(config, settings, files.pid_file if daemon_child else None))


# ---------------------------------------------------------------------- stop


@scheduler_group.command("stop")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Seconds to wait for a graceful exit after SIGTERM before SIGKILL.",
)
def stop(timeout: float) -> None:
    """Stop the background scheduler: SIGTERM, wait for its graceful stop, then SIGKILL."""
    files = DaemonFiles.of(Settings.from_env().home)
    found = daemon.probe(files)
    if found.state is DaemonState.NOT_RUNNING:
        raise DaemonError(f"no background scheduler is running (no PID file {files.pid_file})")
    if found.state is DaemonState.STALE or found.pid is None:
        daemon.remove_pid_file(files.pid_file, found.pid)
        named = f"pid {found.pid} is not running" if found.pid else "it held no pid"
        output.line(
            f"No background scheduler was running: removed the stale PID file "
            f"{files.pid_file} ({named})."
        )
        return
    pid = found.pid
    message = f"Stopping the scheduler (pid {pid}) ..."
    with output.console(stderr=True).status(message) as spinner:

        def tick(elapsed: float) -> None:
            spinner.update(f"{message} {elapsed:.0f} s")

        graceful = daemon.terminate(pid, timeout, tick)
    daemon.remove_pid_file(files.pid_file, pid)
    if graceful:
        output.line(f"Scheduler (pid {pid}) stopped.")
    else:
        output.line(
            f"Scheduler (pid {pid}) did not stop within {timeout:g} s of SIGTERM and was killed "
            "(SIGKILL); its runs are recorded as abandoned when their leases expire."
        )


# ---------------------------------------------------------------------- status


@scheduler_group.command("status")
@format_option
def status(output_format: str) -> None:
    """The background scheduler of this APFLOW_HOME (running, stale or not running) and every
    live scheduler instance in the database, on any host, with its stats."""
    files = DaemonFiles.of(Settings.from_env().home)
    found = daemon.probe(files)

    async def work(service: Service) -> list[SchedulerInstance]:
        return await service.runs.live_schedulers(OPERATOR)

    live = run_with_service(work)
    now = utcnow()
    host = socket.gethostname()
    own = [
        row.id
        for row in live
        if found.state is DaemonState.RUNNING and row.pid == found.pid and row.host == host
    ]
    described: dict[str, Any] = {
        "state": found.state.value,
        "pid": found.pid,
        "pid_file": str(files.pid_file),
        "log_file": str(files.log_file),
        "instance_id": own[0] if own else None,
    }
    output.show_scheduler_status(described, live, output_format, now)


# ---------------------------------------------------------------------- trigger


async def _wait_for_run(
    service: Service,
    task: Task,
    known: set[str],
    patience: float | None,
    spinner: Status,
) -> TaskRun:
    """The manual run that our request started, once it has finished."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    last_check = began
    run_id: str | None = None
    while True:
        elapsed = loop.time() - began
        if run_id is None:
            page = await service.runs.list_runs(OPERATOR, task_id=task.id, limit=20)
            fresh = [
                run
                for run in page.items
                if run.id not in known and run.trigger == RunTrigger.MANUAL.value
            ]
            if fresh:
                run_id = fresh[-1].id  # the oldest new one: newest first
            elif loop.time() - last_check >= TAKER_CHECK:
                last_check = loop.time()
                if not takers(await service.runs.live_schedulers(OPERATOR), task):
                    raise ApflowError(
                        f"no running scheduler is left to start task {task.id!r}; the request "
                        "stays queued until one starts"
                    )
        if run_id is not None:
            run = await service.runs.get_run(OPERATOR, run_id)
            if run.status != RunStatus.RUNNING.value:
                return run
            spinner.update(f"Run {run_id} of task {task.id} is running ({elapsed:.0f} s) ...")
        if patience is not None and elapsed >= patience:
            if run_id is None:
                raise ApflowError(
                    f"no scheduler started task {task.id!r} within {patience:g} s; the request "
                    "stays queued"
                )
            raise ApflowError(
                f"run {run_id} of task {task.id!r} did not finish within {patience:g} s "
                "(it goes on running)"
            )
        await asyncio.sleep(WAIT_POLL)


@scheduler_group.command("trigger")
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Wait for the run to finish and show its outcome.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="With --wait: stop waiting after this many seconds (the run goes on). Run here: the "
    "longest the run may take (default 3600).",
)
@format_option
def trigger(task_id: str, wait: bool, timeout: float | None, output_format: str) -> None:
    """Run a task now, outside its schedule: a live scheduler that takes the task claims the
    request as a manual run; when none would, the task runs here, in this process, as
    `apflow tasks execute` runs it. Exits 1 unless a run waited for (or run here) completes."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout: only with --wait")

    async def work(
        service: Service,
    ) -> tuple[Task, list[SchedulerInstance], TaskRun | None, TaskNode | None]:
        task = await service.tasks.get(OPERATOR, task_id)
        if not takers(await service.runs.live_schedulers(OPERATOR), task):
            output.console(stderr=True).print(
                f"No live scheduler takes task {task_id}: running it in this process.",
                highlight=False,
            )
            run, node = await execute_here(service, task_id, timeout or DEFAULT_RUN_TIMEOUT)
            return task, [], run, node
        history = await service.runs.list_runs(OPERATOR, task_id=task_id, limit=100)
        known = {run.id for run in history.items}
        task, found = await service.runs.request_trigger(OPERATOR, task_id)
        if not wait:
            return task, found, None, None
        waiting = f"Waiting for a scheduler to start task {task_id} ..."
        with output.console(stderr=True).status(waiting) as spinner:
            run = await _wait_for_run(service, task, known, timeout, spinner)
        return task, found, run, await service.tasks.subtree(OPERATOR, task_id)

    task, found, run, node = run_with_service(work)
    if run is not None and node is not None:
        report_run(run, node, output_format)
        return
    if output_format == "json":
        output.print_json(
            {
                "task_id": task.id,
                "requested": True,
                "task_status": task.status,
                "schedulers": [row.id for row in found],
            }
        )
        return
    output.line(f"Requested a run of task {output.describe(task)} now.")
    if task.status == TaskStatus.IN_PROGRESS.value:
        output.line("  It is running at the moment: the new run starts when this one ends.")
    names = ", ".join(row.id for row in found)
    output.line(f"  A running scheduler claims it as a manual run ({names}).")
    output.line(f"  Follow it with `apflow tasks runs {task.id}`.")
