"""The built-in executors: echo, aggregate results, REST and command.

The REST and command executors reach outside the process, so each has a safety switch that is
off by default (SPEC §4): private and loopback URLs are refused, and commands are disabled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from apflow_server.config import Settings
from apflow_server.execution.errors import ExecutionError as ExecutionError
from apflow_server.execution.registry import ExecutionContext, Executor

MAX_OUTPUT_CHARS = 64_000


async def echo_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    return dict(inputs)


async def aggregate_results_executor(
    inputs: dict[str, Any], context: ExecutionContext
) -> dict[str, Any]:
    return {**context.dependency_results, **context.child_results}


# ---------------------------------------------------------------------- REST


def _require(inputs: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = inputs.get(key)
    if not isinstance(value, kind):
        raise ExecutionError(f"inputs.{key} is missing or of the wrong type")
    return value


async def _refuse_private(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ExecutionError(f"inputs.url must be an http(s) URL, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        raise ExecutionError(f"cannot resolve {parts.hostname!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ExecutionError(
                f"{parts.hostname} resolves to the non-public address {address}; "
                "set APFLOW_REST_ALLOW_PRIVATE_URLS=1 to allow it"
            )


async def rest_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """An HTTP request: url, method (GET), headers, params, json, timeout (30 s).

    Redirects are not followed, so a public URL cannot bounce the request to a private one.
    """
    url = _require(inputs, "url", str)
    method = str(inputs.get("method", "GET")).upper()
    timeout = float(inputs.get("timeout", 30))
    if not Settings.from_env().rest_allow_private_urls:
        await _refuse_private(url)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        try:
            response = await client.request(
                method,
                url,
                headers=inputs.get("headers"),
                params=inputs.get("params"),
                json=inputs.get("json"),
            )
        except httpx.HTTPError as exc:
            raise ExecutionError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:MAX_OUTPUT_CHARS]
    if not response.is_success:
        raise ExecutionError(f"{method} {url} answered HTTP {response.status_code}")
    return {"status_code": response.status_code, "headers": dict(response.headers), "body": body}


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
