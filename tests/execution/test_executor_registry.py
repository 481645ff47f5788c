"""Executors by name: the three ways to register one, built-ins and entry points, how sync and
async executors are called, the inputs merge, and the retry back-off."""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from importlib.metadata import EntryPoint
from types import SimpleNamespace
from typing import Any

import pytest

import apflow_server
from apflow_server.execution.builtins import (
    BUILTINS,
    aggregate_results_executor,
    command_executor,
    echo_executor,
    rest_executor,
)
from apflow_server.execution.registry import (
    ExecutionContext,
    ExecutorRegistry,
    UnknownExecutorError,
    register_executor,
    registry,
)
from apflow_server.execution.runner import MAX_BACKOFF_SECONDS, RunExecutor
from apflow_server.execution.tree import merge_inputs

# `apflow_server.execution.registry` is also the name of the registry instance the package
# exports, so the module is fetched by its full name.
registry_module = importlib.import_module("apflow_server.execution.registry")

CONTEXT = ExecutionContext(
    task_id="t", task_name="t", run_id="r", user_id=None, params={}, attempt=1
)


# ---------------------------------------------------------------------- registering


def test_register_executor_as_a_function() -> None:
    def exec_tests_plain(inputs: dict[str, Any], context: ExecutionContext) -> str:
        return "plain"

    assert register_executor("exec_tests_reg_function", exec_tests_plain) is exec_tests_plain
    assert registry.get("exec_tests_reg_function") is exec_tests_plain


def test_register_executor_as_a_named_decorator() -> None:
    @register_executor("exec_tests_reg_named")
    def whatever(inputs: dict[str, Any], context: ExecutionContext) -> str:
        return "named"

    assert whatever({}, CONTEXT) == "named"  # the decorator returns the function itself
    assert registry.get("exec_tests_reg_named") is whatever
    assert "whatever" not in registry.names()


def test_register_executor_as_a_bare_decorator() -> None:
    @register_executor
    async def exec_tests_reg_bare(inputs: dict[str, Any], context: ExecutionContext) -> str:
        return "bare"

    assert registry.get("exec_tests_reg_bare") is exec_tests_reg_bare
    assert "exec_tests_reg_bare" in registry.names()


def test_the_public_import_is_the_same_function() -> None:
    assert apflow_server.register_executor is register_executor


def test_a_name_cannot_be_taken_twice() -> None:
    local = ExecutorRegistry()

    def first(inputs: dict[str, Any], context: ExecutionContext) -> int:
        return 1

    def second(inputs: dict[str, Any], context: ExecutionContext) -> int:
        return 2

    local.register("x", first)
    local.register("x", first)  # the same function again is harmless
    with pytest.raises(ValueError, match=r"^an executor named 'x' is already registered$"):
        local.register("x", second)
    assert local.get("x") is first
    local.register("x", second, replace=True)
    assert local.get("x") is second
    with pytest.raises(ValueError, match=r"^an executor needs a non-empty name$"):
        local.register("", first)


def test_builtins_are_available() -> None:
    local = ExecutorRegistry()
    assert {
        "echo_executor",
        "aggregate_results_executor",
        "rest_executor",
        "command_executor",
    } <= set(local.names())
    assert local.get("echo_executor") is echo_executor
    assert local.get("aggregate_results_executor") is aggregate_results_executor
    assert local.get("rest_executor") is rest_executor
    assert local.get("command_executor") is command_executor
    assert set(BUILTINS) == {
        "echo_executor",
        "aggregate_results_executor",
        "rest_executor",
        "command_executor",
    }


def test_an_application_may_replace_a_builtin_before_first_use() -> None:
    local = ExecutorRegistry()

    def my_echo(inputs: dict[str, Any], context: ExecutionContext) -> str:
        return "mine"

    local.register("echo_executor", my_echo)
    assert local.get("echo_executor") is my_echo
    assert local.get("rest_executor") is rest_executor


def test_unknown_executor() -> None:
    local = ExecutorRegistry()
    with pytest.raises(UnknownExecutorError) as unknown:
        local.get("nope")
    assert unknown.value.message == (
        "no executor named 'nope' (registered: aggregate_results_executor, command_executor, "
        "echo_executor, rest_executor)"
    )
    assert unknown.value.data == {"field": "params.executor_id"}


def test_entry_points_are_loaded_and_broken_ones_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    group = registry_module.ENTRY_POINT_GROUP
    assert group == "apflow_server.executors"
    points = [
        EntryPoint("plugin_echo", "apflow_server.execution.builtins:echo_executor", group),
        EntryPoint("plugin_broken", "apflow_server_no_such_module:thing", group),
    ]
    asked: list[str] = []

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        asked.append(group)
        return points

    monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
    local = ExecutorRegistry()
    with caplog.at_level(logging.ERROR, logger="apflow_server.execution.registry"):
        assert local.get("plugin_echo") is echo_executor
    assert asked == ["apflow_server.executors"]
    assert "plugin_broken" not in local.names()
    assert any("apflow_server_no_such_module:thing" in r.getMessage() for r in caplog.records)
    local.names()
    assert asked == ["apflow_server.executors"]  # loaded once


# ---------------------------------------------------------------------- calling


async def test_a_sync_executor_runs_in_a_thread_without_blocking_the_loop() -> None:
    local = ExecutorRegistry()
    release = threading.Event()
    threads: list[int] = []

    def blocking(inputs: dict[str, Any], context: ExecutionContext) -> dict[str, Any]:
        threads.append(threading.get_ident())
        return {"released": release.wait(3), **inputs}

    local.register("blocking", blocking)
    call = asyncio.create_task(local.call("blocking", {"n": 1}, CONTEXT))
    await asyncio.sleep(0.1)  # runs only if the loop is free while the executor blocks
    assert not call.done()
    release.set()
    assert await call == {"released": True, "n": 1}
    assert threads and threads[0] != threading.get_ident()


async def test_async_executors_are_awaited_on_the_loop() -> None:
    local = ExecutorRegistry()
    loop_thread = threading.get_ident()

    async def coroutine_function(inputs: dict[str, Any], context: ExecutionContext) -> Any:
        await asyncio.sleep(0)
        return ("function", threading.get_ident() == loop_thread)

    class AsyncCallable:
        async def __call__(self, inputs: dict[str, Any], context: ExecutionContext) -> Any:
            return ("object", threading.get_ident() == loop_thread)

    def returns_awaitable(inputs: dict[str, Any], context: ExecutionContext) -> Any:
        async def later() -> Any:
            return ("awaitable", context.task_id)

        return later()

    local.register("f", coroutine_function)
    local.register("o", AsyncCallable())
    local.register("a", returns_awaitable)
    assert await local.call("f", {}, CONTEXT) == ("function", True)
    assert await local.call("o", {}, CONTEXT) == ("object", True)
    assert await local.call("a", {}, CONTEXT) == ("awaitable", "t")


async def test_calling_an_unknown_executor_raises() -> None:
    with pytest.raises(UnknownExecutorError):
        await ExecutorRegistry().call("missing", {}, CONTEXT)


# ---------------------------------------------------------------------- inputs merge


def test_merge_inputs_overrides_in_order_and_never_mutates() -> None:
    stored = {"k": "stored", "keep": 1}
    results = {"d1": {"k": "one", "a": 1}, "d2": None, "d3": [1, 2], "d4": {"k": "four"}}
    merged = merge_inputs(stored, results)
    assert merged == {"k": "four", "keep": 1, "a": 1}
    assert stored == {"k": "stored", "keep": 1}
    assert results["d1"] == {"k": "one", "a": 1}


# ---------------------------------------------------------------------- back-off


def executor(base: float) -> RunExecutor:
    store: Any = SimpleNamespace(database=None)
    return RunExecutor(store, ExecutorRegistry(), task_timeout=60, retry_backoff_seconds=base)


@pytest.mark.parametrize(
    ("base", "attempt", "delay"),
    [
        (1, 1, 1.0),
        (1, 2, 2.0),
        (1, 3, 4.0),
        (1, 4, 8.0),
        (1, 9, 256.0),
        (1, 10, 300.0),
        (1, 50, 300.0),
        (0.5, 1, 0.5),
        (0.5, 3, 2.0),
        (5, 6, 160.0),
        (5, 7, 300.0),
        (1000, 1, 300.0),
        (0, 5, 0.0),
    ],
)
def test_backoff_doubles_from_the_base_and_is_capped(
    base: float, attempt: int, delay: float
) -> None:
    assert executor(base).backoff(attempt) == delay
    assert MAX_BACKOFF_SECONDS == 300.0


def test_default_backoff_base_is_one_second() -> None:
    store: Any = SimpleNamespace(database=None)
    default = RunExecutor(store, ExecutorRegistry(), task_timeout=60)
    assert [default.backoff(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    from apflow_server.scheduler.base import SchedulerConfig

    assert SchedulerConfig().retry_backoff_seconds == 1
