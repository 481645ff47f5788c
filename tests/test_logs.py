"""The one log format of `apflow serve` and `apflow scheduler start`."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import queue

import pytest

from apflow_server.core.logs import (
    BatchingStreamHandler,
    DroppingQueueHandler,
    JsonFormatter,
    _stop,
    configure_logging,
    writer_handler,
)


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("apflow_server.runs", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_lines_carry_the_fields_beside_the_message() -> None:
    line = JsonFormatter().format(
        record("run %s finished", "r1", fields={"run": "r1", "status": "failed", "level": "x"})
    )
    data = json.loads(line)
    assert data["message"] == "run r1 finished" and data["logger"] == "apflow_server.runs"
    assert (data["run"], data["status"]) == ("r1", "failed")
    assert data["level"] == "info"  # a field never overwrites the record's own keys
    assert "\n" not in line


def test_an_exception_stays_on_its_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        made = record("it broke")
        made.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(made))
    assert "ValueError: boom" in data["exception"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configure_logging_replaces_the_handlers_and_quiets_libraries(log_format: str) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("httpx").level)
    try:
        configure_logging(logging.INFO, log_format)
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0], DroppingQueueHandler)
        writer = writer_handler()
        assert writer is not None
        assert isinstance(writer.formatter, JsonFormatter) == (log_format == "json")
        assert logging.getLogger("httpx").level == logging.WARNING
        configure_logging(logging.DEBUG, log_format, verbose=True)
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(saved[2])


def test_a_full_queue_drops_records_instead_of_waiting_and_says_how_many() -> None:
    records: queue.Queue[logging.LogRecord] = queue.Queue(2)
    handler = DroppingQueueHandler(records)
    for index in range(5):
        handler.handle(record("line %d", index))  # never blocks
    assert handler.dropped == 3
    assert [records.get_nowait().getMessage() for _ in range(2)] == ["line 0", "line 1"]
    handler.handle(record("line 5"))
    note, line = records.get_nowait(), records.get_nowait()
    assert note.getMessage() == "3 log records were dropped: the log output fell behind"
    assert line.getMessage() == "line 5" and handler.dropped == 0


def test_a_run_line_never_carries_the_credentials_an_error_quotes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datetime import UTC, datetime

    from apflow_server.core.types import RunStatus
    from apflow_server.scheduler import run_log
    from apflow_server.storage.runs import ClaimedRun, RunResult

    run = ClaimedRun("r1", "t1", None, "manual", None, datetime.now(UTC))
    error = "GET https://bob:hunter2@api.example.com/x?token=SECRET&page=2 answered HTTP 500"
    with caplog.at_level(logging.INFO, logger="apflow_server.runs"):
        run_log.finished(run, RunResult(RunStatus.FAILED, None, error))
    (line,) = caplog.records
    text = line.getMessage() + json.dumps(line.fields)  # type: ignore[attr-defined]
    assert "hunter2" not in text and "SECRET" not in text
    assert "https://[redacted]@api.example.com/x?token=[redacted]&page=2" in line.getMessage()


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_the_writer_writes_at_once_when_idle_and_in_bulk_under_load() -> None:
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    stream = CountingStream()
    writer = BatchingStreamHandler(stream, records)
    writer.handle(record("alone"))  # nothing else waiting: written now
    assert (stream.getvalue(), stream.writes) == ("alone\n", 1)
    for index in range(5):
        records.put_nowait(record("line %d", index))
    while not records.empty():  # as the writer thread drains a backlog
        writer.handle(records.get_nowait())
    assert stream.writes == 2  # the five lines in one write, once the queue ran dry
    assert stream.getvalue().splitlines()[1:] == [f"line {index}" for index in range(5)]


def test_lines_held_back_are_written_when_logging_stops() -> None:
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    stream = CountingStream()
    listener = logging.handlers.QueueListener(records, BatchingStreamHandler(stream, records))
    for index in range(3):
        records.put_nowait(record("late %d", index))
    listener.enqueue_sentinel()  # queued behind them: the writer holds them back, then ends
    listener.start()
    assert listener._thread is not None
    listener._thread.join(5)
    assert stream.getvalue() == ""  # held, the queue was never empty
    _stop(listener)
    assert stream.getvalue().splitlines() == ["late 0", "late 1", "late 2"]
