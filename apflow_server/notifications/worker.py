"""Processes that deliver notifications: `apflow notify worker`, and the child process each
claiming scheduler starts beside itself.

Delivering is CPU work (building, signing and sending requests, recording outcomes). In the
scheduler's own process, even on a thread of its own, a burst of deliveries competes with the
timers that start runs for the one interpreter (p99 lateness 9-36 ms against 2 ms idle); in a
process of its own it competes only for a core (2.0-3.4 ms). So a scheduler delivers from a
child process by default.

The child talks to its parent over its standard streams, a pipe each way:
- stdin, parent to child: first the pickled Settings (length-prefixed), then one byte per
  "something may have been queued"; end of file means the parent is gone or stopping, and the
  child finishes its round and exits. A parent killed with SIGKILL leaves no orphan behind.
- stdout, child to parent: one line per delivery attempt's outcome ("delivered", "retrying",
  "failed"), which the parent counts in its Prometheus metrics.
The child's logs go to stderr, which it shares with its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pickle
import signal
import struct
import sys
from collections.abc import Callable

from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.core.logs import configure_logging
from apflow_server.notifications.dispatcher import IDLE_POLL, WAKE_GAP, Dispatcher
from apflow_server.storage import notifications as outbox
from apflow_server.storage.database import Database
from apflow_server.storage.listener import change_listener

logger = logging.getLogger(__name__)

CHILD_MODULE = "apflow_server.notifications.worker"
LENGTH = struct.Struct(">I")
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # after the child exited on its own


async def deliver_until_stopped(dispatcher: Dispatcher, stopping: asyncio.Event) -> None:
    """Deliver until `stopping` is set or SIGINT/SIGTERM arrives; woken by other processes'
    writes (LISTEN on PostgreSQL, a watch of the file on SQLite) and polling meanwhile."""
    listener = change_listener(dispatcher.database, dispatcher.wake)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    dispatcher.start()
    if listener is not None:
        listener.start()
    try:
        await stopping.wait()
    finally:
        if listener is not None:
            await listener.stop()
        await dispatcher.stop()


class DispatcherProcess:
    """A scheduler's delivering child. Started when there is first something to deliver (a
    scheduler whose users configured no endpoint never has one), restarted with back-off if it
    dies, stopped with the scheduler after finishing its round."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        # The child works on the scheduler's database, with the scheduler's settings.
        self.settings = dataclasses.replace(settings, database_url=database.url)
        self.on_outcome = on_outcome
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wanted = asyncio.Event()  # something may have been queued
        self._last_wake = 0.0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="apflow-notify-child")

    def wake(self) -> None:
        """Something may have been queued: tell the child, or look whether one is needed.
        Wakes closer together than the dispatcher's coalescing gap add nothing: its next look
        sees those commits too."""
        process = self._process
        if process is None:
            self._wanted.set()
            return
        if process.stdin is None or process.stdin.is_closing():
            return
        now = asyncio.get_running_loop().time()
        if now - self._last_wake < WAKE_GAP / 2:
            return
        self._last_wake = now
        with contextlib.suppress(ConnectionError, RuntimeError):
            process.stdin.write(b"w")

    async def stop(self) -> None:
        """Close the child's stdin (it finishes its round, then exits); kill it if it has not
        exited after the longest a round can take."""
        self._stopping.set()
        process = self._process
        if process is not None and process.stdin is not None:
            process.stdin.close()
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), self.settings.notify_timeout_seconds + 5)
            except TimeoutError:
                logger.warning("notification worker %s did not stop; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _supervise(self) -> None:
        if not await self._needed():
            return
        failures = 0
        while not self._stopping.is_set():
            try:
                code: int | None = await self._run_child()
            except OSError as exc:
                logger.warning("could not start the notification worker: %s", exc)
                code = None
            if self._stopping.is_set():
                return
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            failures += 1
            logger.warning(
                "notification worker exited (code %s); starting another in %.0f s", code, delay
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _needed(self) -> bool:
        """Wait until some delivery is due (True) or the scheduler stops (False)."""
        while not self._stopping.is_set():
            self._wanted.clear()
            try:
                if await outbox.any_due(self.database, utcnow()):
                    return True
            except Exception as exc:  # the database went away: look again shortly
                logger.debug("notification outbox unreadable: %s", exc)
            waits = [
                asyncio.ensure_future(self._wanted.wait()),
                asyncio.ensure_future(self._stopping.wait()),
            ]
            _, pending = await asyncio.wait(
                waits, timeout=IDLE_POLL, return_when=asyncio.FIRST_COMPLETED
            )
            for waiting in pending:
                waiting.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return False

    async def _run_child(self) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Out of the terminal's process group: Ctrl-C reaches the parent, which stops the
            # child in order (its round recorded) rather than both at once.
            start_new_session=True,
        )
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        blob = pickle.dumps(self.settings)
        process.stdin.write(LENGTH.pack(len(blob)) + blob)
        if self._stopping.is_set():  # stop() ran while the child was starting
            process.stdin.close()
        async for line in process.stdout:
            outcome = line.decode("ascii", "replace").strip()
            if outcome and self.on_outcome is not None:
                self.on_outcome(outcome)
        return await process.wait()


async def _read_settings(reader: asyncio.StreamReader) -> Settings:
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    settings = pickle.loads(await reader.readexactly(length))  # noqa: S301 - from our parent
    if not isinstance(settings, Settings):
        raise TypeError("the parent sent no settings")
    return settings


async def _child_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    settings = await _read_settings(reader)
    configure_logging(logging.INFO, settings.log_format)
    database = Database.from_settings(settings, pool_size=2)
    dispatcher = Dispatcher(database, settings, on_outcome=_report)
    stopping = asyncio.Event()

    async def follow_parent() -> None:
        while True:
            data = await reader.read(4096)
            if not data:  # the parent closed the pipe, or died
                stopping.set()
                return
            dispatcher.wake()

    follower = asyncio.create_task(follow_parent())
    try:
        await deliver_until_stopped(dispatcher, stopping)
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await database.dispose()


def _report(outcome: str) -> None:
    sys.stdout.write(outcome + "\n")
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover - the child's entry point
    asyncio.run(_child_main())
