"""Running task trees on SQLite and PostgreSQL, through InternalScheduler.run_and_wait:
order and priorities, dependencies and merged inputs, failure cascades, resets between runs,
aggregation, missing executors, timeouts and retries."""

from __future__ import annotations

import itertools
import time
from typing import Any

import support
from execution_support import Harness

from apflow_server import register_executor
from apflow_server.core.types import RunStatus
from apflow_server.execution import ExecutionContext
from apflow_server.storage.runs import RunResult

BOOM = "boom"


def spec(
    name: str,
    executor: str | None = None,
    *,
    parent: str | None = None,
    priority: int | None = None,
    inputs: dict[str, Any] | None = None,
    deps: list[Any] | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": name}
    if executor is not None:
        fields["params"] = {"executor_id": executor}
    if parent is not None:
        fields["parent_id"] = parent
    if priority is not None:
        fields["priority"] = priority
    if inputs is not None:
        fields["inputs"] = inputs
    if deps is not None:
        fields["dependencies"] = deps
    return fields


def recorded_names() -> list[str]:
    return [name for name, _, _ in support.RECORDED]


def recorded(name: str) -> tuple[float, float]:
    matches = [(start, end) for n, start, end in support.RECORDED if n == name]
    assert len(matches) == 1, f"{name} ran {len(matches)} times"
    return matches[0]


def child_failed(name: str, task_id: str, error: str) -> str:
    return f"child {name!r} ({task_id}) failed: {error}"


def dependency_failed(name: str, task_id: str, error: str) -> str:
    return f"required dependency {name!r} ({task_id}) failed: {error}"


async def assert_settled(harness: Harness, ids: dict[str, str]) -> None:
    """After a run, no task of the tree is pending or in progress."""
    states = {name: task.status for name, task in (await harness.tasks(ids)).items()}
    assert all(s in {"completed", "failed"} for s in states.values()), states


# ---------------------------------------------------------------------- order and priorities


async def test_children_run_before_parent_and_siblings_by_priority(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root", "test_record"),
        spec("low", "test_record", parent="root", priority=3),
        spec("urgent", "test_record", parent="root", priority=0),
        spec("normal", "test_record", parent="root", priority=2),
        spec("high", "test_record", parent="root", priority=1),
    )
    _, outcome = await harness.run(ids["root"], max_parallel_per_run=1)

    assert outcome.status is RunStatus.COMPLETED
    assert recorded_names() == ["urgent", "high", "normal", "low", "root"]
    intervals = [(start, end) for _, start, end in support.RECORDED]
    for (_, previous_end), (next_start, _) in itertools.pairwise(intervals):
        assert next_start >= previous_end  # one at a time


async def test_dependencies_come_before_priority(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("a", "test_record", parent="root", priority=3),
        spec("b", "test_record", parent="root", priority=0, deps=["a"]),
        spec("c", "test_record", parent="root", priority=1),
        spec("d", "test_record", parent="root", priority=2),
    )
    _, outcome = await harness.run(ids["root"], max_parallel_per_run=1)

    assert outcome.status is RunStatus.COMPLETED
    # b is the most urgent but waits for a, the least urgent.
    assert recorded_names() == ["c", "d", "a", "b"]


async def test_nested_children_finish_before_their_parents(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root", "test_record"),
        spec("mid", "test_record", parent="root", inputs={"seconds": 0.05}),
        spec("leaf1", "test_record", parent="mid", inputs={"seconds": 0.1}),
        spec("leaf2", "test_record", parent="mid", inputs={"seconds": 0.05}),
        spec("other", "test_record", parent="root", inputs={"seconds": 0.2}),
    )
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.COMPLETED
    assert sorted(recorded_names()) == ["leaf1", "leaf2", "mid", "other", "root"]
    mid_start, mid_end = recorded("mid")
    root_start, _ = recorded("root")
    assert recorded("leaf1")[1] <= mid_start
    assert recorded("leaf2")[1] <= mid_start
    assert mid_end <= root_start
    assert recorded("other")[1] <= root_start
    tasks = await harness.tasks(ids)
    assert {name: t.status for name, t in tasks.items()} == dict.fromkeys(ids, "completed")
    assert tasks["mid"].result == {"seconds": 0.05, "ran": "mid"}
    assert tasks["mid"].progress == 1.0
    assert outcome.result == {"ran": "root"}
    assert tasks["root"].result == {"ran": "root"}


async def test_siblings_run_concurrently_up_to_max_parallel(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        *(spec(f"s{i}", "test_record", parent="root", inputs={"seconds": 0.3}) for i in range(3)),
    )
    _, outcome = await harness.run(ids["root"], max_parallel_per_run=2)

    assert outcome.status is RunStatus.COMPLETED
    intervals = [(start, end) for _, start, end in support.RECORDED]
    assert len(intervals) == 3
    overlap = max(sum(1 for s, e in intervals if s <= moment < e) for moment, _ in intervals)
    assert overlap == 2


# ---------------------------------------------------------------------- dependencies and inputs


async def test_dependent_starts_after_its_dependency_finishes(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("first", "test_record", parent="root", inputs={"seconds": 0.2}),
        spec("second", "test_record", parent="root", priority=0, deps=["first"]),
    )
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.COMPLETED
    assert recorded_names() == ["first", "second"]
    assert recorded("second")[0] >= recorded("first")[1]


async def test_dependency_results_are_merged_into_inputs(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("a", "echo_executor", parent="root", inputs={"k": "from a", "x": 1}),
        spec("b", "echo_executor", parent="root", inputs={"k": "from b", "y": 2}),
        spec(
            "ab",
            "exec_tests_context",
            parent="root",
            inputs={"k": "stored", "z": 3},
            deps=["a", "b"],
        ),
        spec("ba", "echo_executor", parent="root", inputs={"k": "stored"}, deps=["b", "a"]),
    )
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.COMPLETED
    tasks = await harness.tasks(ids)
    seen = await harness.result(ids["ab"])
    # Dependency results override stored keys, in the declared order.
    assert seen["inputs"] == {"k": "from b", "x": 1, "y": 2, "z": 3}
    assert seen["dependency_results"] == {
        ids["a"]: {"k": "from a", "x": 1},
        ids["b"]: {"k": "from b", "y": 2},
    }
    assert seen["child_results"] == {}
    assert tasks["ba"].result == {"k": "from a", "x": 1, "y": 2}
    # Never written back.
    assert tasks["ab"].inputs == {"k": "stored", "z": 3}
    assert tasks["ba"].inputs == {"k": "stored"}
    # The root aggregates its children's results keyed by id.
    assert outcome.result == {
        ids["a"]: {"k": "from a", "x": 1},
        ids["b"]: {"k": "from b", "y": 2},
        ids["ab"]: seen,
        ids["ba"]: {"k": "from a", "x": 1, "y": 2},
    }
    assert tasks["root"].result == outcome.result


async def test_a_non_object_dependency_result_is_not_merged(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("lister", "exec_tests_list", parent="root"),
        spec("user", "exec_tests_context", parent="root", inputs={"own": 1}, deps=["lister"]),
    )
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.COMPLETED
    seen = await harness.result(ids["user"])
    assert seen["inputs"] == {"own": 1}
    assert seen["dependency_results"] == {ids["lister"]: [1, 2, 3]}


async def test_executor_context(harness: Harness) -> None:
    ids = await harness.tree(
        {
            "name": "root",
            "user_id": "alice",
            "params": {"executor_id": "exec_tests_context", "extra": [1, 2]},
        },
        spec("kid", "echo_executor", parent="root", inputs={"v": 1}),
    )
    run_id, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.COMPLETED
    assert outcome.result == {
        "inputs": {},
        "task_id": ids["root"],
        "task_name": "root",
        "run_id": run_id,
        "user_id": "alice",
        "params": {"executor_id": "exec_tests_context", "extra": [1, 2]},
        "attempt": 1,
        "scheduled_for": None,
        "child_results": {ids["kid"]: {"v": 1}},
        "dependency_results": {},
    }


async def test_non_json_results_are_stored_converted(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "exec_tests_odd_result"))
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.COMPLETED
    expected = {"when": "2025-01-02 03:04:05+00:00", "nested": {"n": 1}}
    assert (await harness.task(ids["root"])).result == expected
    assert [run.result for run in await harness.runs(ids["root"])] == [expected]


# ---------------------------------------------------------------------- failures


async def test_failed_required_dependency_cascades(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root", "test_record"),
        spec("a", "test_fail", parent="root", inputs={"message": "disk full"}),
        spec("b", "test_record", parent="root", deps=["a"]),
        spec("c", "test_record", parent="root", deps=[{"id": "b", "required": True}]),
        spec("d", "test_record", parent="root", deps=["c"]),
        spec("free", "test_record", parent="root"),
    )
    run_id, outcome = await harness.run(ids["root"])
    tasks = await harness.tasks(ids)

    a_error = "disk full"
    b_error = dependency_failed("a", ids["a"], a_error)
    c_error = dependency_failed("b", ids["b"], b_error)
    d_error = dependency_failed("c", ids["c"], c_error)
    assert (tasks["a"].status, tasks["a"].error, tasks["a"].result) == ("failed", a_error, None)
    for name, error in {"b": b_error, "c": c_error, "d": d_error}.items():
        task = tasks[name]
        assert (task.status, task.error, task.result) == ("failed", error, None), name
        assert task.started_at is None  # never started
        assert task.completed_at is not None
        assert task.progress == 0.0
    assert tasks["free"].status == "completed"
    assert recorded_names() == ["free"]  # neither b, c, d nor the root ran

    root_error = child_failed("a", ids["a"], a_error)
    possible = {
        root_error,
        child_failed("b", ids["b"], b_error),
        child_failed("c", ids["c"], c_error),
        child_failed("d", ids["d"], d_error),
    }
    assert tasks["root"].status == "failed"
    assert tasks["root"].error in possible
    assert outcome == RunResult(RunStatus.FAILED, None, tasks["root"].error, 1)
    (run,) = await harness.runs(ids["root"])
    assert (run.id, run.status, run.error, run.attempt) == (run_id, "failed", outcome.error, 1)
    await assert_settled(harness, ids)


async def test_blocked_dependent_does_not_run_its_children(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("a", "test_fail", parent="root"),
        spec("b", "test_record", parent="root", deps=["a"]),
        spec("b_child", "test_record", parent="b"),
    )
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.FAILED
    assert (await harness.task(ids["b"])).error == dependency_failed("a", ids["a"], BOOM)
    assert recorded_names() == []  # b_child belongs to b, which must not run


async def test_optional_dependency_failure_is_tolerated(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("a", "test_fail", parent="root", inputs={"message": "optional broke"}),
        spec("ok", "echo_executor", parent="root", inputs={"from_ok": True}),
        spec(
            "b",
            "exec_tests_context",
            parent="root",
            inputs={"own": 1},
            deps=[{"id": "a", "required": False}, "ok"],
        ),
        spec("c", "echo_executor", parent="root", inputs={"c": 1}, deps=["b"]),
    )
    _, outcome = await harness.run(ids["root"])
    tasks = await harness.tasks(ids)

    assert tasks["a"].status == "failed"
    assert (tasks["b"].status, tasks["b"].error) == ("completed", None)
    b_saw = await harness.result(ids["b"])
    assert b_saw["inputs"] == {"own": 1, "from_ok": True}
    assert b_saw["dependency_results"] == {
        ids["a"]: None,
        ids["ok"]: {"from_ok": True},
    }
    # It waited for the optional dependency.
    assert tasks["a"].completed_at is not None and tasks["b"].started_at is not None
    assert tasks["b"].started_at >= tasks["a"].completed_at
    assert tasks["c"].status == "completed"
    # The parent still has a failed child.
    assert tasks["root"].status == "failed"
    assert tasks["root"].error == child_failed("a", ids["a"], "optional broke")
    assert outcome.status is RunStatus.FAILED
    await assert_settled(harness, ids)


async def test_parent_with_failed_child_fails_without_running(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root", "test_record"),
        spec("mid", "test_record", parent="root"),
        spec("leaf", "test_fail", parent="mid"),
        spec("sibling", "test_record", parent="root"),
    )
    _, outcome = await harness.run(ids["root"])
    tasks = await harness.tasks(ids)

    mid_error = child_failed("leaf", ids["leaf"], BOOM)
    root_error = child_failed("mid", ids["mid"], mid_error)
    assert (tasks["leaf"].status, tasks["leaf"].error) == ("failed", BOOM)
    assert (tasks["mid"].status, tasks["mid"].error) == ("failed", mid_error)
    assert tasks["mid"].started_at is not None  # in progress while its children ran
    assert tasks["sibling"].status == "completed"
    assert (tasks["root"].status, tasks["root"].error) == ("failed", root_error)
    assert outcome == RunResult(RunStatus.FAILED, None, root_error, 1)
    assert recorded_names() == ["sibling"]


async def test_unexpected_exception_names_its_type(harness: Harness) -> None:
    ids = await harness.tree(spec("root"), spec("x", "exec_tests_broken", parent="root"))
    _, outcome = await harness.run(ids["root"])

    assert (await harness.task(ids["x"])).error == "KeyError: 'missing'"
    assert outcome.error == child_failed("x", ids["x"], "KeyError: 'missing'")


# ---------------------------------------------------------------------- runs are independent


async def test_inputs_do_not_accumulate_across_runs(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("a", "exec_tests_run_id", parent="root", inputs={"a_in": 1}),
        spec("b", "echo_executor", parent="root", inputs={"own": "b"}, deps=["a"]),
        spec("e1", "echo_executor", parent="root", inputs={"k": 1, "e1": True}),
        spec("e2", "echo_executor", parent="root", inputs={"k": 2}, deps=["e1"]),
    )
    scheduler = await harness.scheduler()
    first_id, first = await harness.run(ids["root"], scheduler)
    after_first = await harness.tasks(ids)
    second_id, second = await harness.run(ids["root"], scheduler)
    after_second = await harness.tasks(ids)

    assert first.status is second.status is RunStatus.COMPLETED
    assert first_id != second_id
    assert after_first["b"].result == {"own": "b", "run": first_id, "from_a": 1}
    assert after_second["b"].result == {"own": "b", "run": second_id, "from_a": 1}
    assert after_first["e2"].result == after_second["e2"].result == {"k": 1, "e1": True}
    for tasks in (after_first, after_second):
        assert tasks["a"].inputs == {"a_in": 1}
        assert tasks["b"].inputs == {"own": "b"}
        assert tasks["e2"].inputs == {"k": 2}
    runs = await harness.runs(ids["root"])
    assert sorted((run.id, run.status, run.attempt) for run in runs) == sorted(
        [(first_id, "completed", 1), (second_id, "completed", 1)]
    )
    assert after_second["root"].run_count == 2


async def test_each_run_starts_from_a_clean_tree(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("a", "echo_executor", parent="root", inputs={"v": 1}),
        spec("b", "echo_executor", parent="root", inputs={"w": 2}, deps=["a"]),
        spec("c", "echo_executor", parent="root", inputs={"c": 3}),
    )
    scheduler = await harness.scheduler()
    _, first = await harness.run(ids["root"], scheduler)
    run1 = await harness.tasks(ids)
    assert first.status is RunStatus.COMPLETED
    assert run1["b"].result == {"w": 2, "v": 1}

    await harness.repo.update_task(ids["a"], params={"executor_id": "test_fail"})
    _, second = await harness.run(ids["root"], scheduler)
    run2 = await harness.tasks(ids)

    assert second.status is RunStatus.FAILED
    assert (run2["a"].status, run2["a"].result, run2["a"].error) == ("failed", None, BOOM)
    b = run2["b"]
    assert (b.status, b.result, b.error) == ("failed", None, dependency_failed("a", ids["a"], BOOM))
    assert b.started_at is None  # not the start of run 1
    assert b.progress == 0.0
    assert b.completed_at is not None and run1["b"].completed_at is not None
    assert b.completed_at > run1["b"].completed_at
    c = run2["c"]
    assert (c.status, c.result, c.error) == ("completed", {"c": 3}, None)
    assert c.started_at is not None and run1["c"].completed_at is not None
    assert c.started_at > run1["c"].completed_at  # c ran again
    assert run2["root"].result is None
    assert run2["root"].error in {
        child_failed("a", ids["a"], BOOM),
        child_failed("b", ids["b"], dependency_failed("a", ids["a"], BOOM)),
    }


# ---------------------------------------------------------------------- aggregation, executors


async def test_task_without_executor_aggregates_its_children(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("group", parent="root"),
        spec("x", "echo_executor", parent="group", inputs={"x": 1}),
        spec("y", "echo_executor", parent="group", inputs={"y": 2}),
        spec("dep", "echo_executor", parent="root", inputs={"d": 4}),
        spec("agg", "aggregate_results_executor", parent="root", deps=["dep", "group"]),
        spec("agg_kid", "echo_executor", parent="agg", inputs={"k": 5}),
    )
    _, outcome = await harness.run(ids["root"])
    tasks = await harness.tasks(ids)

    group = {ids["x"]: {"x": 1}, ids["y"]: {"y": 2}}
    assert tasks["group"].result == group
    # Dependencies and children, keyed by task id.
    agg = {ids["dep"]: {"d": 4}, ids["group"]: group, ids["agg_kid"]: {"k": 5}}
    assert tasks["agg"].result == agg
    assert outcome == RunResult(
        RunStatus.COMPLETED,
        {ids["group"]: group, ids["dep"]: {"d": 4}, ids["agg"]: agg},
        None,
        1,
    )


async def test_leaf_without_executor_fails(harness: Harness) -> None:
    ids = await harness.tree(spec("root"), spec("leaf", parent="root"))
    _, outcome = await harness.run(ids["root"])

    no_executor = "no executor: set params.executor_id"
    leaf = await harness.task(ids["leaf"])
    assert (leaf.status, leaf.error) == ("failed", no_executor)
    assert outcome == RunResult(
        RunStatus.FAILED, None, child_failed("leaf", ids["leaf"], no_executor), 1
    )

    alone = await harness.tree(spec("alone"))
    _, outcome = await harness.run(alone["alone"])
    assert outcome == RunResult(RunStatus.FAILED, None, no_executor, 1)
    task = await harness.task(alone["alone"])
    assert (task.status, task.error) == ("failed", no_executor)


async def test_unknown_executor_fails_the_task(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "exec_tests_no_such_executor"))
    _, outcome = await harness.run(ids["root"])

    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("no executor named 'exec_tests_no_such_executor' (registered: ")
    assert "echo_executor" in outcome.error
    assert (await harness.task(ids["root"])).error == outcome.error


async def test_schemas_method_names_the_executor(harness: Harness) -> None:
    ids = await harness.tree(
        {"name": "root", "schemas": {"method": "echo_executor"}, "inputs": {"via": "schemas"}}
    )
    _, outcome = await harness.run(ids["root"])
    assert outcome == RunResult(RunStatus.COMPLETED, {"via": "schemas"}, None, 1)


async def test_completion_callbacks(harness: Harness) -> None:
    seen: list[tuple[str, bool, Any]] = []

    async def on_async(task_id: str, success: bool, result: Any) -> None:
        seen.append((task_id, success, result))

    ids = await harness.tree(spec("ok", "echo_executor", inputs={"n": 1}))
    bad = await harness.tree(spec("bad", "test_fail"))
    scheduler = await harness.scheduler()
    scheduler.on_task_complete(lambda *args: seen.append(args))
    scheduler.on_task_complete(on_async)
    await harness.run(ids["ok"], scheduler)
    await harness.run(bad["bad"], scheduler)

    assert seen == [
        (ids["ok"], True, {"n": 1}),
        (ids["ok"], True, {"n": 1}),
        (bad["bad"], False, None),
        (bad["bad"], False, None),
    ]
    stats = await scheduler.get_status()
    assert (stats.tasks_executed, stats.tasks_succeeded, stats.tasks_failed) == (2, 1, 1)


# ---------------------------------------------------------------------- timeouts


async def test_timeout_bounds_the_whole_run(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root", "test_record"),
        spec("quick", "echo_executor", parent="root", inputs={"q": 1}),
        spec("mid", parent="root"),
        spec("slow", "test_sleep", parent="mid", inputs={"seconds": 20}),
    )
    started = time.monotonic()
    run_id, outcome = await harness.run(ids["root"], task_timeout=0.5)
    elapsed = time.monotonic() - started

    error = "timed out after 0.5 s (attempt 1)"
    assert outcome == RunResult(RunStatus.TIMEOUT, None, error, 1)
    assert elapsed < 5
    (run,) = await harness.runs(ids["root"])
    assert (run.id, run.status, run.error, run.attempt) == (run_id, "timeout", error, 1)
    assert run.finished_at is not None
    tasks = await harness.tasks(ids)
    assert (tasks["root"].status, tasks["root"].error) == ("failed", error)
    assert (tasks["slow"].status, tasks["slow"].error) == ("failed", error)
    assert tasks["quick"].status == "completed"
    assert recorded_names() == []


async def test_timeout_leaves_no_task_pending(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("slow", "test_sleep", parent="root", inputs={"seconds": 20}),
        spec("after", "echo_executor", parent="root", deps=["slow"]),
        spec("mid", parent="root"),
        spec("slow_leaf", "test_sleep", parent="mid", inputs={"seconds": 20}),
    )
    _, outcome = await harness.run(ids["root"], task_timeout=0.5)

    assert outcome.status is RunStatus.TIMEOUT
    await assert_settled(harness, ids)


async def test_timeout_clears_stale_results_of_tasks_that_never_start(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("a", "test_sleep", parent="root", inputs={"seconds": 0.01}),
        spec("b", "echo_executor", parent="root", inputs={"b": 1}, deps=["a"]),
    )
    # The first run completes, with a timeout no loaded machine reaches (0.5 s did, in CI).
    _, first = await harness.run(ids["root"], await harness.scheduler(task_timeout=30))
    assert first.status is RunStatus.COMPLETED
    assert (await harness.task(ids["b"])).result == {"b": 1, "slept": 0.01}

    await harness.repo.update_task(ids["a"], inputs={"seconds": 20})
    _, second = await harness.run(ids["root"], await harness.scheduler(task_timeout=0.5))

    assert second.status is RunStatus.TIMEOUT
    b = await harness.task(ids["b"])
    assert (b.result, b.started_at, b.progress) == (None, None, 0.0)
    a = await harness.task(ids["a"])
    assert (a.status, a.result) == ("failed", None)


# ---------------------------------------------------------------------- retries


async def test_retries_are_attempts_of_one_run(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "test_flaky", inputs={"succeed_on": 3}))
    run_id, outcome = await harness.run(ids["root"], retry_on_failure=True, max_retries=3)

    assert outcome == RunResult(RunStatus.COMPLETED, {"attempt": 3}, None, 3)
    (run,) = await harness.runs(ids["root"])
    assert (run.id, run.status, run.attempt, run.error) == (run_id, "completed", 3, None)
    assert run.result == {"attempt": 3}
    task = await harness.task(ids["root"])
    assert (task.status, task.result, task.error, task.run_count) == (
        "completed",
        {"attempt": 3},
        None,
        1,
    )


async def test_exhausted_retries_end_failed(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "test_flaky", inputs={"succeed_on": 99}))
    run_id, outcome = await harness.run(ids["root"], retry_on_failure=True, max_retries=2)

    assert outcome == RunResult(RunStatus.FAILED, None, "attempt 3 failed", 3)
    (run,) = await harness.runs(ids["root"])
    assert (run.id, run.status, run.attempt, run.error) == (run_id, "failed", 3, "attempt 3 failed")
    task = await harness.task(ids["root"])
    assert (task.status, task.error, task.run_count) == ("failed", "attempt 3 failed", 1)


async def test_no_retry_unless_enabled(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "test_flaky", inputs={"succeed_on": 2}))
    _, outcome = await harness.run(ids["root"], retry_on_failure=False, max_retries=3)

    assert outcome == RunResult(RunStatus.FAILED, None, "attempt 1 failed", 1)
    (run,) = await harness.runs(ids["root"])
    assert (run.status, run.attempt) == ("failed", 1)


async def test_zero_max_retries_means_one_attempt(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "test_flaky", inputs={"succeed_on": 2}))
    _, outcome = await harness.run(ids["root"], retry_on_failure=True, max_retries=0)

    assert outcome == RunResult(RunStatus.FAILED, None, "attempt 1 failed", 1)


async def test_a_retry_reruns_the_whole_tree(harness: Harness) -> None:
    ids = await harness.tree(
        spec("root"),
        spec("flaky", "test_flaky", parent="root", inputs={"succeed_on": 2}),
        spec("steady", "test_record", parent="root"),
        spec("after", "exec_tests_context", parent="root", deps=["flaky"]),
    )
    run_id, outcome = await harness.run(ids["root"], retry_on_failure=True, max_retries=3)

    assert outcome.status is RunStatus.COMPLETED
    assert outcome.attempt == 2
    assert recorded_names() == ["steady", "steady"]
    after = await harness.result(ids["after"])
    assert after["attempt"] == 2
    assert after["run_id"] == run_id
    assert after["inputs"] == {"attempt": 2}
    (run,) = await harness.runs(ids["root"])
    assert (run.status, run.attempt) == ("completed", 2)
    await assert_settled(harness, ids)


async def test_retry_backoff_doubles(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "test_fail"))
    started = time.monotonic()
    _, outcome = await harness.run(
        ids["root"], retry_on_failure=True, max_retries=2, retry_backoff_seconds=0.15
    )
    elapsed = time.monotonic() - started

    assert outcome == RunResult(RunStatus.FAILED, None, BOOM, 3)
    assert 0.45 <= elapsed < 3  # 0.15 + 0.30 of back-off


async def test_timeout_bounds_retries_too(harness: Harness) -> None:
    ids = await harness.tree(spec("root", "test_fail"))
    _, outcome = await harness.run(
        ids["root"],
        task_timeout=0.5,
        retry_on_failure=True,
        max_retries=5,
        retry_backoff_seconds=0.3,
    )
    # Attempt 1 fails, 0.3 s back-off, attempt 2 fails, the 0.6 s back-off hits the timeout.
    error = "timed out after 0.5 s (attempt 2)"
    assert outcome == RunResult(RunStatus.TIMEOUT, None, error, 2)
    (run,) = await harness.runs(ids["root"])
    assert (run.status, run.attempt, run.error) == ("timeout", 2, error)


# ---------------------------------------------------------------------- bounded results


async def test_results_that_double_at_every_step_stop_at_the_cap(harness: Harness) -> None:
    """Aggregates of aggregates double at every level; each result is capped, so the chain
    fails at the level that would pass it, naming the size, instead of filling memory."""
    harness.use_settings(max_result_bytes=20_000)
    specs: list[dict[str, Any]] = [
        {"name": "root"},
        {
            "name": "a0",
            "parent_id": "root",
            "params": {"executor_id": "echo_executor"},
            "inputs": {"pad": "x" * 1000},
        },
        {
            "name": "b0",
            "parent_id": "root",
            "params": {"executor_id": "echo_executor"},
            "inputs": {"pad": "y" * 1000},
        },
    ]
    for level in range(1, 8):
        for side in "ab":
            specs.append(
                {
                    "name": f"{side}{level}",
                    "parent_id": "root",
                    "params": {"executor_id": "aggregate_results_executor"},
                    "dependencies": [f"a{level - 1}", f"b{level - 1}"],
                }
            )
    ids = await harness.tree(*specs)
    _, outcome = await harness.run(ids["root"])
    assert outcome.status is RunStatus.FAILED
    levels = [await harness.task(ids[f"a{level}"]) for level in range(8)]
    statuses = [task.status for task in levels]
    first_failed = statuses.index("failed")  # about 1 KB at level 0, doubling
    assert first_failed >= 3 and statuses[:first_failed] == ["completed"] * first_failed
    assert "over the 20000 allowed" in (levels[first_failed].error or "")
    assert statuses[first_failed:] == ["failed"] * (8 - first_failed)  # never ran


@register_executor("test_deep_result")
def deep_result(inputs: dict[str, Any], context: ExecutionContext) -> Any:
    value: Any = "bottom"
    for _ in range(int(inputs["levels"])):
        value = [value]
    return value


async def test_a_result_nested_too_deep_fails_its_task(harness: Harness) -> None:
    ids = await harness.tree(
        {"name": "deep", "params": {"executor_id": "test_deep_result"}, "inputs": {"levels": 200}}
    )
    _, outcome = await harness.run(ids["deep"])
    assert outcome.status is RunStatus.FAILED
    assert outcome.error is not None and "deeper than 64 levels" in outcome.error
