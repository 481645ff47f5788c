"""The built-in executors: echo, aggregate results, REST (in rest/) and command.

The REST and command executors reach outside the process, so each has a safety switch that is
off by default: private and loopback addresses are refused, and commands are disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from typing import Any

from apflow_server.config import Settings
from apflow_server.core.commands import check_command_env
from apflow_server.core.errors import ValidationError
from apflow_server.execution.context import GRACEFUL_CANCEL, ExecutionContext, Executor
from apflow_server.execution.errors import ExecutionError as ExecutionError
from apflow_server.execution.rest import rest_executor as rest_executor

MAX_OUTPUT_CHARS = 64_000
# A command asked to end (SIGTERM, cancel_other) is killed if it has not exited by then.
COMMAND_END_GRACE_SECONDS = 10.0


async def echo_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    return dict(inputs)


async def aggregate_results_executor(
    inputs: dict[str, Any], context: ExecutionContext
) -> dict[str, Any]:
    return {**context.dependency_results, **context.child_results}


# ---------------------------------------------------------------------- command


def _resolve_command(argv: list[str], settings: Settings) -> str:
    """The absolute path to execute, checked against the allowlist.

    The program is looked up on the service's own PATH, never the task's `env`, and the
    resolved path is what runs, so a task cannot swap in another binary of the same name.
    An allowlist entry is an argv prefix whose program token is either a bare name (matching a
    bare program name) or an absolute path (matching the resolved path); the rest of the entry
    must equal the leading arguments token by token, so `git ls-remote` does not allow
    `git -c core.sshCommand=... ls-remote`.
    """
    if not settings.allow_command_executor:
        raise ExecutionError("command_executor is disabled; set APFLOW_ALLOW_COMMAND_EXECUTOR=1")
    program = argv[0]
    resolved = shutil.which(program, path=os.environ.get("PATH", os.defpath))
    if resolved is None:
        raise ExecutionError(f"cannot find the program {program!r}")
    resolved = os.path.realpath(resolved)
    entries = settings.command_allowlist
    if entries:
        for_program = [entry for entry in entries if _names(entry[0], program, resolved)]
        if not for_program:
            raise ExecutionError(f"{program!r} is not in APFLOW_COMMAND_ALLOWLIST")
        if not any(tuple(argv[1 : len(entry)]) == entry[1:] for entry in for_program):
            raise ExecutionError(
                f"{program!r} is in APFLOW_COMMAND_ALLOWLIST only with other leading arguments"
            )
    return resolved


def _inherited_environment() -> dict[str, str]:
    """The service's environment without its own settings: APFLOW_* holds the JWT and webhook
    secrets, the admin token and the database URL, which no command needs to see."""
    return {name: value for name, value in os.environ.items() if not name.startswith("APFLOW_")}


def _names(token: str, program: str, resolved: str) -> bool:
    """Whether an allowlist entry's program token names the program a task asked for."""
    if "/" in token:
        return os.path.realpath(token) == resolved
    return "/" not in program and token == program


async def _stop(process: asyncio.subprocess.Process, graceful: bool) -> None:
    """End a command and everything it started (its own process group): asked to end, SIGTERM
    and a grace period first; then SIGKILL to whatever of the group is left, so no child
    outlives its run or holds its output pipes open."""
    try:
        if graceful:
            _signal_group(process, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), COMMAND_END_GRACE_SECONDS)
    finally:  # also when told to stop at once while waiting
        _signal_group(process, signal.SIGKILL)
        await process.wait()


def _signal_group(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


async def command_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """Run an argv list without a shell: command, timeout (seconds), cwd, env (added)."""
    argv = inputs.get("command")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ExecutionError("inputs.command must be a non-empty list of strings (no shell)")
    # The running service's settings; called on its own (a script, a test), the environment's.
    settings = context.services.settings if context.services else Settings.from_env()
    program = _resolve_command(argv, settings)
    timeout = inputs.get("timeout")
    extra_env = inputs.get("env")
    # Also checked when the task is written; checked again here, for tasks written before the
    # allowlist changed.
    try:
        check_command_env(extra_env, settings.command_env_allowlist)
    except ValidationError as refused:
        raise ExecutionError(refused.message) from None
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            *argv[1:],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=inputs.get("cwd"),
            start_new_session=True,  # its own process group: stopped as a whole
            env={
                **_inherited_environment(),
                **{str(k): str(v) for k, v in (extra_env or {}).items()},
            },
        )
    except OSError as exc:
        raise ExecutionError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException as exc:
        # Timeout or cancellation: the child must not outlive its run. Asked to end, it gets
        # SIGTERM and a grace period to clean up; otherwise SIGKILL at once.
        graceful = isinstance(exc, asyncio.CancelledError) and GRACEFUL_CANCEL in exc.args
        await _stop(process, graceful and process.returncode is None)
        if isinstance(exc, TimeoutError):
            raise ExecutionError(f"{argv[0]} timed out after {timeout} s") from None
        raise
    error_text = stderr.decode(errors="replace")[-MAX_OUTPUT_CHARS:]
    result = {
        "returncode": process.returncode,
        "stdout": stdout.decode(errors="replace")[-MAX_OUTPUT_CHARS:],
        "stderr": error_text,
    }
    if process.returncode != 0:
        tail = error_text.strip().splitlines()[-1:] or [""]
        raise ExecutionError(f"{argv[0]} exited with {process.returncode}: {tail[0]}".rstrip(": "))
    return result


BUILTINS: dict[str, Executor] = {
    "echo_executor": echo_executor,
    "aggregate_results_executor": aggregate_results_executor,
    "rest_executor": rest_executor,
    "command_executor": command_executor,
}
