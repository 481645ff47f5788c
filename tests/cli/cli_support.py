"""Helpers for the CLI tests: an in-process runner, a real subprocess runner, and snapshots
of the database to prove that bad input changes nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import select

from apflow_server.cli.main import apflow
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun, run_to_dict, task_to_dict

# Variables that would leak the developer's own setup into a test run.
CLEARED = (
    "APFLOW_DATABASE_URL",
    "APFLOW_DEBUG",
    "APFLOW_DEFAULT_TIMEZONE",
    "APFLOW_HOME",
    "COLUMNS",
    "LINES",
)


def apflow_executable() -> str:
    """The installed console script, next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "apflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("apflow")
    assert found, "the apflow console script is not installed"
    return found


Snapshot = tuple[list[dict[str, Any]], list[dict[str, Any]]]


async def _snapshot(url: str) -> Snapshot:
    database = Database(url)
    try:
        async with database.transaction() as session:
            tasks = [task_to_dict(t) for t in await session.scalars(select(Task).order_by(Task.id))]
            runs = [
                run_to_dict(r) for r in await session.scalars(select(TaskRun).order_by(TaskRun.id))
            ]
    finally:
        await database.dispose()
    return tasks, runs


def snapshot(url: str) -> Snapshot:
    """Every task and run row, to compare before and after a refused command."""
    return asyncio.run(_snapshot(url))


def assert_one_error_line(stderr: str, *fragments: str) -> str:
    """stderr is exactly one line `Error: ...` naming every fragment, and no traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "Traceback" not in stderr
    return lines[0]


@dataclass
class Cli:
    """Runs `apflow` in-process (click's CliRunner) against one database."""

    url: str
    home: Path
    env: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {name: None for name in CLEARED}
        self.env.update(APFLOW_HOME=str(self.home), APFLOW_DATABASE_URL=self.url)

    def __call__(self, *args: str, **env: str | None) -> Result:
        result = CliRunner().invoke(apflow, list(args), env={**self.env, **env})
        assert "Traceback" not in result.stdout + result.stderr
        return result

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.exit_code == 0, (args, result.exit_code, result.stderr, result.exception)
        assert result.stderr == ""
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-f", "json"))

    def create(self, *args: str) -> dict[str, Any]:
        task: dict[str, Any] = self.json("tasks", "create", *args)
        return task

    def fails(self, code: int, *args: str, names: tuple[str, ...] = ()) -> str:
        """Run a command that must be refused: exit `code`, one error line, nothing written."""
        before = self.snapshot()
        result = self(*args)
        assert result.exit_code == code, (args, result.exit_code, result.stdout, result.stderr)
        message = assert_one_error_line(result.stderr, *names)
        assert result.stdout == ""
        assert self.snapshot() == before
        return message

    def snapshot(self) -> Snapshot:
        return snapshot(self.url)


@dataclass
class Process:
    """Runs the real `apflow` executable in a subprocess."""

    env: dict[str, str]
    executable: str = field(default_factory=apflow_executable)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.executable, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (args, result.returncode, result.stderr)
        assert result.stderr == ""
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-f", "json"))
