"""The built-in executors: echo, aggregate results, REST (in rest/) and command.

The REST and command executors reach outside the process, so each has a safety switch that is
off by default: private and loopback addresses are refused, and commands are disabled.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

from apflow_server.config import Settings
from apflow_server.execution.errors import ExecutionError as ExecutionError
from apflow_server.execution.registry import ExecutionContext, Executor
from apflow_server.execution.rest import rest_executor as rest_executor

MAX_OUTPUT_CHARS = 64_000


async def echo_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    return dict(inputs)


async def aggregate_results_executor(
    inputs: dict[str, Any], context: ExecutionContext
) -> dict[str, Any]:
    return {**context.dependency_results, **context.child_results}


# ---------------------------------------------------------------------- command


def _resolve_command(program: str, settings: Settings) -> str:
    """The absolute path to execute, checked against the allowlist.

    The program is looked up on the service's own PATH, never the task's `env`, and the
    resolved path is what runs, so a task cannot swap in another binary of the same name.
    An allowlist entry is either a bare name (matching a bare program name) or an absolute
    path (matching the resolved path).
    """
    if not settings.allow_command_executor:
        raise ExecutionError("command_executor is disabled; set APFLOW_ALLOW_COMMAND_EXECUTOR=1")
    resolved = shutil.which(program, path=os.environ.get("PATH", os.defpath))
    if resolved is None:
        raise ExecutionError(f"cannot find the program {program!r}")
    resolved = os.path.realpath(resolved)
    allowed = settings.command_allowlist
    if allowed:
        by_name = "/" not in program and program in allowed
        if not by_name and resolved not in {os.path.realpath(a) for a in allowed if "/" in a}:
            raise ExecutionError(f"{program!r} is not in APFLOW_COMMAND_ALLOWLIST")
    return resolved


async def command_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """Run an argv list without a shell: command, timeout (seconds), cwd, env (added)."""
    argv = inputs.get("command")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ExecutionError("inputs.command must be a non-empty list of strings (no shell)")
    program = _resolve_command(argv[0], Settings.from_env())
    timeout = inputs.get("timeout")
    extra_env = inputs.get("env") or {}
    if not isinstance(extra_env, dict):
        raise ExecutionError("inputs.env must be an object")
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            *argv[1:],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=inputs.get("cwd"),
            env={**os.environ, **{str(k): str(v) for k, v in extra_env.items()}},
        )
    except OSError as exc:
        raise ExecutionError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException as exc:
        # Timeout or cancellation: the child must not outlive its run.
        if process.returncode is None:
            process.kill()
            await process.wait()
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
