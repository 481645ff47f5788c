"""One log format for `apflow serve` and `apflow scheduler start` (uvicorn's lines included):
a plain line per record, or with APFLOW_LOG_FORMAT=json one JSON object per line whose keys
include the record's `fields` (the run lines carry task, run, trigger, lateness, status...)."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# Libraries that are noise at INFO for someone watching a server or a scheduler (httpx logs
# every request an API-mode scheduler makes); --verbose lets them through.
QUIET_LOGGERS = ("aiosqlite", "asyncio", "asyncpg", "httpcore", "httpx", "sqlalchemy")
# Records waiting for the writer thread; beyond this, new ones are dropped (and counted) rather
# than stalling the event loop.
QUEUE_SIZE = 10_000


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread without ever waiting: writing to stderr blocks when
    whoever reads it (a pipe, a log shipper) falls behind, and a blocked write would stall the
    event loop that fires runs and renews leases. A full queue drops the record; the count of
    dropped records is written once the queue has room again."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                note = logging.LogRecord(
                    "apflow_server.logs", logging.WARNING, __file__, 0,
                    "%d log records were dropped: the log output fell behind",
                    (self.dropped,), None,
                )  # fmt: skip
                self.queue.put_nowait(note)
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The formatter runs in the writer thread; keep the record as it is (its `fields`
        # and arguments), formatting only the exception text now, while it exists.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        return record


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The writer thread's handler: lines go out in one write when the queue has run dry (or
    BATCH_LINES are waiting), not one write (a system call: stderr is line-buffered) per
    line. When records come one at a time the queue is empty at each, so each is written at
    once; a scheduler logging two lines per run under load writes them in bulk."""

    BATCH_LINES = 256

    def __init__(self, stream: Any, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(stream)
        self._records = records
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
            if len(self._pending) >= self.BATCH_LINES or self._records.empty():
                self._write_pending()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
        super().flush()

    def _write_pending(self) -> None:
        if self._pending:
            # Taken before writing: a write that fails (a closed pipe) loses these lines, as
            # StreamHandler loses the one it fails on, rather than retrying a growing batch.
            text = "".join(self._pending)
            self._pending.clear()
            self.stream.write(text)
            self.stream.flush()


_listener: logging.handlers.QueueListener | None = None


def _stop(listener: logging.handlers.QueueListener) -> None:
    """Write what is queued and end the writer thread (once)."""
    if listener._thread is not None:  # stop() may not be called twice
        listener.stop()
    for handler in listener.handlers:
        try:
            handler.flush()  # lines held back while the queue still had the stop marker
        except (OSError, ValueError):  # its stream closed already (as logging.shutdown does)
            pass


def writer_handler() -> logging.Handler | None:
    """The handler that writes (in the writer thread), for tests and diagnostics."""
    return _listener.handlers[0] if _listener is not None else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({key: value for key, value in fields.items() if key not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: int, log_format: str, *, verbose: bool = False) -> None:
    """Every record at `level` and above to stderr, in one format, written by a thread of its
    own (see DroppingQueueHandler); the root logger's handlers are replaced, so uvicorn
    (started with log_config=None) writes through the same one."""
    global _listener
    records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
    writer = BatchingStreamHandler(sys.stderr, records)
    if log_format == "json":
        writer.setFormatter(JsonFormatter())
    else:
        writer.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt=DATE_FORMAT))
    if _listener is not None:
        _stop(_listener)
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    atexit.register(_stop, _listener)  # what is queued is written before the process ends
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(DroppingQueueHandler(records))
    root.setLevel(level)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
