"""One log format for `apflow serve` and `apflow scheduler start` (uvicorn's lines included):
a plain line per record, or with APFLOW_LOG_FORMAT=json one JSON object per line whose keys
include the record's `fields` (the run lines carry task, run, trigger, lateness, status...)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# Libraries that are noise at INFO for someone watching a server or a scheduler (httpx logs
# every request an API-mode scheduler makes); --verbose lets them through.
QUIET_LOGGERS = ("aiosqlite", "asyncio", "asyncpg", "httpcore", "httpx", "sqlalchemy")


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
    """Every record at `level` and above to stderr, in one format; the root logger's handlers
    are replaced, so uvicorn (started with log_config=None) writes through the same one."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, datefmt=DATE_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
