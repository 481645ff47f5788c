"""The background scheduler process: detaching it, its PID file, its log file, stopping it.

`apflow scheduler start --background` re-executes this interpreter as
`python -m apflow_server.cli.main scheduler start ... --daemon` in a new session (no
controlling terminal: it survives the parent's exit and the terminal's hang-up), with stdin from
/dev/null and stdout and stderr appended to APFLOW_HOME/scheduler.log. The child writes
APFLOW_HOME/scheduler.pid only once its scheduler has started, and removes it when it stops
gracefully; the parent waits until the PID file names its child (or the child dies).

A PID file is *live* when its process exists, is not a zombie and (where /proc can tell) runs
apflow; otherwise it is *stale*: the process died without cleaning up, or its pid was reused.
A stale file never leads to signalling anyone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from apflow_server.core.errors import ApflowError

PID_FILE = "scheduler.pid"
LOG_FILE = "scheduler.log"
# How long `start --background` waits for the child's scheduler to start.
START_TIMEOUT = 10.0
# How long `stop` waits for the process to vanish after SIGKILL.
KILL_WAIT = 5.0
POLL = 0.05


class DaemonError(ApflowError):
    """The background scheduler cannot be started or stopped as asked."""


class DaemonState(StrEnum):
    RUNNING = "running"
    STALE = "stale"
    NOT_RUNNING = "not_running"


@dataclass(frozen=True)
class DaemonFiles:
    pid_file: Path
    log_file: Path

    @classmethod
    def of(cls, home: Path) -> DaemonFiles:
        return cls(home / PID_FILE, home / LOG_FILE)


@dataclass(frozen=True)
class DaemonStatus:
    state: DaemonState
    # The pid the PID file names (None: no file, or not a pid).
    pid: int | None


# ---------------------------------------------------------------------- processes


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has exited; only its parent is late)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: existing is all we can tell
    fields = stat.rsplit(")", 1)[-1].split()
    return not fields or fields[0] not in {"Z", "X"}


def runs_apflow(pid: int) -> bool:
    """The process's command line mentions apflow (True where there is no /proc to ask)."""
    if not Path("/proc/self").exists():
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return b"apflow" in cmdline


# ---------------------------------------------------------------------- the PID file


def read_pid(path: Path) -> int | None:
    """The pid in a PID file; None when there is no file or it holds no pid."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def probe(files: DaemonFiles) -> DaemonStatus:
    """Running, stale (a PID file whose process is gone or is not apflow) or not running."""
    if not files.pid_file.exists():
        return DaemonStatus(DaemonState.NOT_RUNNING, None)
    pid = read_pid(files.pid_file)
    if pid is not None and process_alive(pid) and runs_apflow(pid):
        return DaemonStatus(DaemonState.RUNNING, pid)
    return DaemonStatus(DaemonState.STALE, pid)


def write_pid_file(path: Path, pid: int) -> None:
    """Create the PID file holding `pid`, atomically and only if there is none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{pid}.tmp")
    temporary.write_text(f"{pid}\n", encoding="utf-8")
    try:
        os.link(temporary, path)  # fails if the file exists: one daemon per APFLOW_HOME
    except FileExistsError:
        other = read_pid(path)
        raise DaemonError(
            f"another background scheduler holds {path} (pid {other}); not starting a second one"
        ) from None
    finally:
        temporary.unlink(missing_ok=True)


def remove_pid_file(path: Path, pid: int | None) -> bool:
    """Remove the PID file if it still names `pid` (None: whatever it holds)."""
    if not path.exists() or (pid is not None and read_pid(path) != pid):
        return False
    path.unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------- starting


def spawn(arguments: Sequence[str], files: DaemonFiles) -> tuple[subprocess.Popen[bytes], int]:
    """Start `python -m apflow_server.cli.main <arguments>` detached; returns the child and
    the size of the log before it, where the child's own output starts."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        files.log_file.parent.mkdir(parents=True, exist_ok=True)
        with files.log_file.open("ab") as log:
            offset = log.tell()
            child = subprocess.Popen(  # noqa: S603 (our own interpreter and module, no shell)
                [sys.executable, "-m", "apflow_server.cli.main", *arguments],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        raise DaemonError(
            f"cannot start the background scheduler: {exc.strerror or exc} "
            f"({exc.filename or files.log_file})"
        ) from None
    return child, offset


def last_log_line(files: DaemonFiles, offset: int) -> str:
    """The last non-empty line the child wrote to the log (after `offset`)."""
    try:
        with files.log_file.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last.removeprefix("Error: ")


def wait_started(
    child: subprocess.Popen[bytes],
    files: DaemonFiles,
    offset: int,
    timeout: float = START_TIMEOUT,
) -> None:
    """Wait until the child's PID file names it; DaemonError if it dies or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        if read_pid(files.pid_file) == child.pid:
            return
        code = child.poll()
        if code is not None:
            reason = last_log_line(files, offset) or f"exit code {code}"
            raise DaemonError(
                f"the background scheduler did not start: {reason} (log: {files.log_file})"
            )
        if time.monotonic() >= deadline:
            child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(KILL_WAIT)
            reason = last_log_line(files, offset)
            detail = f"; last log line: {reason}" if reason else ""
            raise DaemonError(
                f"the background scheduler did not start within {timeout:g} s and was "
                f"stopped{detail} (log: {files.log_file})"
            )
        time.sleep(POLL)


# ---------------------------------------------------------------------- stopping


def _wait_gone(pid: int, timeout: float, tick: Callable[[float], None] | None = None) -> bool:
    start = time.monotonic()
    while process_alive(pid):
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            return False
        if tick is not None:
            tick(elapsed)
        time.sleep(POLL)
    return True


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise DaemonError(f"not allowed to signal the scheduler (pid {pid})") from None


def terminate(pid: int, timeout: float, tick: Callable[[float], None] | None = None) -> bool:
    """SIGTERM, wait up to `timeout` for a graceful exit, then SIGKILL.

    True when it exited after SIGTERM; False when it had to be killed."""
    _signal(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout, tick):
        return True
    _signal(pid, signal.SIGKILL)
    if not _wait_gone(pid, KILL_WAIT):
        raise DaemonError(f"the scheduler (pid {pid}) survived SIGKILL")
    return False
