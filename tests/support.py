"""Executors and helpers shared by the execution and scheduler tests (and their subprocesses).

Importing this module registers the test executors in the global registry.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from apflow_server import register_executor
from apflow_server.execution import ExecutionContext, ExecutionError

# (task name, monotonic start, monotonic end) of every record_executor call in this process.
RECORDED: list[tuple[str, float, float]] = []


@register_executor("test_record")
async def record_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    start = time.monotonic()
    await asyncio.sleep(float(inputs.get("seconds", 0.01)))
    RECORDED.append((context.task_name, start, time.monotonic()))
    return {**inputs, "ran": context.task_name}


@register_executor("test_sleep")
async def sleep_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    await asyncio.sleep(float(inputs.get("seconds", 1)))
    return {"slept": inputs.get("seconds", 1)}


@register_executor("test_fail")
def fail_executor(inputs: dict[str, Any], context: ExecutionContext) -> Any:
    raise ExecutionError(str(inputs.get("message", "boom")))


@register_executor("test_flaky")
def flaky_executor(inputs: dict[str, Any], context: ExecutionContext) -> Any:
    """Fails until the attempt number reaches inputs.succeed_on."""
    if context.attempt < int(inputs.get("succeed_on", 2)):
        raise ExecutionError(f"attempt {context.attempt} failed")
    return {"attempt": context.attempt}


@register_executor("test_journal")
def journal_executor(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
    """Appends one line per execution to $APFLOW_TEST_JOURNAL: the real side effects, so tests
    can count executions independently of the history table."""
    path = os.environ["APFLOW_TEST_JOURNAL"]
    occurrence = context.scheduled_for.isoformat() if context.scheduled_for else "-"
    line = f"{context.task_id} {occurrence} {context.run_id} {os.getpid()}\n"
    with open(path, "a", encoding="utf-8") as journal:
        journal.write(line)
    seconds = float(inputs.get("seconds", 0))
    if seconds:
        time.sleep(seconds)
    return {"pid": os.getpid()}
