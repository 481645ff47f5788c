"""Every JSON-RPC method, its success and its error paths, through the TestClient
(the app's lifespan running), on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_harness import Service, ServiceFactory
from api_support import assert_field

from apflow_server.api.methods import METHODS
from apflow_server.core.task_fields import FIELD_SCHEMAS, WRITABLE_ON_CREATE, WRITABLE_ON_UPDATE

INVALID, NOT_FOUND, CONFLICT = -32602, -32004, -32009
EVERY_MINUTE = {"schedule_type": "cron", "schedule_expression": "* * * * *"}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def soon(seconds: float = 3600) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


# ---------------------------------------------------------------------- tasks.create


def test_create_one_task(service: Service) -> None:
    api = service.api
    task = api.call(
        "tasks.create",
        {"name": "one", "inputs": {"x": 1}, "params": {"executor_id": "echo_executor"}},
    )
    assert task["name"] == "one"
    assert task["status"] == "pending"
    assert task["inputs"] == {"x": 1}
    assert task["parent_id"] is None
    assert task["next_run_at"] is None
    assert api.call("tasks.get", {"task_id": task["id"]}) == task


def test_create_with_an_enabled_schedule_computes_next_run_at(service: Service) -> None:
    task = service.api.create(
        schedule_type="cron",
        schedule_expression="0 9 * * *",
        schedule_timezone="Europe/Paris",
        schedule_enabled=True,
    )
    assert task["schedule_enabled"] is True
    next_run = datetime.fromisoformat(task["next_run_at"])
    assert next_run > datetime.now(UTC)
    assert next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).hour == 9


def test_create_a_tree_from_a_params_array(service: Service) -> None:
    result = service.api.call(
        "tasks.create",
        [
            {"name": "root"},
            {"name": "a", "parent_id": "root", "params": {"executor_id": "echo_executor"}},
            {
                "name": "b",
                "parent_id": "root",
                "params": {"executor_id": "echo_executor"},
                "dependencies": [{"id": "a", "required": True}],
            },
        ],
    )
    tasks = {task["name"]: task for task in result["tasks"]}
    assert set(tasks) == {"root", "a", "b"}
    assert tasks["root"]["parent_id"] is None
    assert tasks["a"]["parent_id"] == tasks["root"]["id"]
    assert tasks["b"]["parent_id"] == tasks["root"]["id"]
    assert tasks["b"]["dependencies"] == [{"id": tasks["a"]["id"], "required": True}]


def test_create_a_tree_from_a_tasks_object(service: Service) -> None:
    result = service.api.call(
        "tasks.create",
        {"tasks": [{"name": "root"}, {"name": "leaf", "parent_id": "root"}]},
    )
    root, leaf = result["tasks"]
    assert leaf["parent_id"] == root["id"]
    tree = service.api.call("tasks.tree", {"task_id": leaf["id"]})
    assert tree["id"] == root["id"]
    assert [child["id"] for child in tree["children"]] == [leaf["id"]]
    assert tree["children"][0]["children"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"name": "x", "schedule_type": "cron", "schedule_expression": "61 * * * *"}, None),
        ({"name": "x", "schedule_type": "cron", "schedule_expression": "bad"}, None),
        (
            {
                "name": "x",
                "schedule_type": "daily",
                "schedule_expression": "09:00",
                "schedule_timezone": "Mars/Olympus_Mons",
            },
            "schedule_timezone",
        ),
        ({"name": "x", "bogus": 1}, "bogus"),
        ({"name": "x", "priority": "high"}, "priority"),
        ({"name": "x", "priority": 9}, "priority"),
        ({"name": 5}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"inputs": {}}, "name"),
        ({"name": "x", "inputs": [1, 2]}, "inputs"),
        ({"name": "x", "schedule_type": "hourly", "schedule_expression": "1"}, "schedule_type"),
        ({"name": "x", "schedule_enabled": "yes"}, "schedule_enabled"),
        ({"name": "x", "status": "completed"}, "status"),
    ],
)
def test_create_refuses_a_bad_field_naming_it(
    service: Service, params: dict[str, object], field: str | None
) -> None:
    error = service.api.fail("tasks.create", params)
    assert_field(error, INVALID, field or "schedule_expression")
    assert service.api.call("tasks.list", {})["total"] == 0


def test_create_refuses_an_executor_id_that_is_not_a_string(service: Service) -> None:
    error = service.api.fail("tasks.create", {"name": "x", "params": {"executor_id": 5}})
    assert error["code"] == INVALID
    assert "executor_id" in error["data"]["field"]


def test_create_and_update_refuse_an_executor_nobody_provides(service: Service) -> None:
    error = service.api.fail("tasks.create", {"name": "x", "params": {"executor_id": "nope"}})
    assert_field(error, INVALID, "params.executor_id")
    assert service.api.call("tasks.list", {})["total"] == 0
    task = service.api.create(name="y")
    error = service.api.fail(
        "tasks.update", {"task_id": task["id"], "params": {"executor_id": "nope"}}
    )
    assert_field(error, INVALID, "params.executor_id")


def test_create_refuses_an_end_before_its_start(service: Service) -> None:
    error = service.api.fail(
        "tasks.create",
        {
            "name": "x",
            "schedule_type": "interval",
            "schedule_expression": "60",
            "schedule_start_at": iso(soon(7200)),
            "schedule_end_at": iso(soon(3600)),
        },
    )
    assert error["code"] == INVALID
    assert error["data"]["field"] in {"schedule_end_at", "schedule_start_at"}


def test_create_a_bad_tree_names_the_task_and_writes_nothing(service: Service) -> None:
    error = service.api.fail(
        "tasks.create",
        [{"name": "root"}, {"name": "kid", "parent_id": "root", "priority": "urgent"}],
    )
    assert_field(error, INVALID, "tasks[1].priority")
    cycle = service.api.fail(
        "tasks.create",
        [
            {"name": "root"},
            {"name": "a", "parent_id": "root", "dependencies": [{"id": "b", "required": True}]},
            {"name": "b", "parent_id": "root", "dependencies": [{"id": "a", "required": True}]},
        ],
    )
    assert cycle["code"] == INVALID
    assert "dependencies" in cycle["data"]["field"]
    assert service.api.call("tasks.list", {})["total"] == 0


def test_create_refuses_tasks_mixed_with_task_fields(service: Service) -> None:
    error = service.api.fail("tasks.create", {"tasks": [{"name": "a"}], "name": "b"})
    assert_field(error, INVALID, "name")
    error = service.api.fail("tasks.create", {"tasks": []})
    assert_field(error, INVALID, "tasks")
    error = service.api.fail("tasks.create", {"tasks": "root"})
    assert_field(error, INVALID, "tasks")


def test_create_under_an_unknown_parent_is_refused(service: Service) -> None:
    error = service.api.fail("tasks.create", {"name": "orphan", "parent_id": "no-such-task"})
    assert error["code"] in {INVALID, NOT_FOUND}
    assert service.api.call("tasks.list", {})["total"] == 0


# ---------------------------------------------------------------------- get / update / delete


def test_get_unknown_and_invalid(service: Service) -> None:
    assert_field(service.api.fail("tasks.get", {"task_id": "nope"}), NOT_FOUND)
    assert_field(service.api.fail("tasks.get", {}), INVALID, "task_id")
    assert_field(service.api.fail("tasks.get", {"task_id": 5}), INVALID, "task_id")
    assert_field(service.api.fail("tasks.get", {"task_id": ""}), INVALID, "task_id")
    assert_field(service.api.fail("tasks.get", {"task_id": "x", "extra": 1}), INVALID, "extra")


def test_update_changes_fields_and_enabling_computes_next_run(service: Service) -> None:
    api = service.api
    task = api.create()
    updated = api.call(
        "tasks.update",
        {
            "task_id": task["id"],
            "name": "renamed",
            "schedule_type": "interval",
            "schedule_expression": "15m",
            "schedule_enabled": True,
        },
    )
    assert updated["name"] == "renamed"
    assert updated["schedule_enabled"] is True
    delay = datetime.fromisoformat(updated["next_run_at"]) - datetime.now(UTC)
    assert timedelta(minutes=14) < delay <= timedelta(minutes=15, seconds=1)
    assert api.call("tasks.get", {"task_id": task["id"]})["name"] == "renamed"
    disabled = api.call("tasks.update", {"task_id": task["id"], "schedule_enabled": False})
    assert disabled["next_run_at"] is None


def test_update_errors(service: Service) -> None:
    api = service.api
    task = api.create(name="keep")
    assert_field(api.fail("tasks.update", {"task_id": "nope", "name": "x"}), NOT_FOUND)
    assert_field(api.fail("tasks.update", {"task_id": task["id"]}), INVALID, "params")
    assert_field(api.fail("tasks.update", {"task_id": task["id"], "wat": 1}), INVALID, "wat")
    assert_field(
        api.fail("tasks.update", {"task_id": task["id"], "schedule_timezone": "Nowhere/Land"}),
        INVALID,
        "schedule_timezone",
    )
    assert_field(
        api.fail(
            "tasks.update",
            {
                "task_id": task["id"],
                "schedule_type": "weekly",
                "schedule_expression": "8 09:00",
            },
        ),
        INVALID,
        "schedule_expression",
    )
    assert_field(api.fail("tasks.update", {"task_id": task["id"], "id": "new"}), INVALID, "id")
    assert_field(
        api.fail("tasks.update", {"task_id": task["id"], "name": "x", "max_runs": 0}),
        INVALID,
        "max_runs",
    )
    assert api.call("tasks.get", {"task_id": task["id"]})["name"] == "keep"


def test_delete_removes_the_subtree(service: Service) -> None:
    api = service.api
    root, kid = api.call("tasks.create", [{"name": "r"}, {"name": "k", "parent_id": "r"}])["tasks"]
    result = api.call("tasks.delete", {"task_id": root["id"]})
    assert sorted(result["deleted"]) == sorted([root["id"], kid["id"]])
    assert_field(api.fail("tasks.get", {"task_id": kid["id"]}), NOT_FOUND)
    assert_field(api.fail("tasks.delete", {"task_id": root["id"]}), NOT_FOUND)
    assert_field(api.fail("tasks.delete", {"task_id": None}), INVALID, "task_id")


def test_delete_while_running_is_a_conflict(service: Service) -> None:
    api = service.api
    task = api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    assert api.call("tasks.execute", {"task_id": task["id"]})["status"] == "triggered"
    assert_field(api.fail("tasks.delete", {"task_id": task["id"]}), CONFLICT)
    assert api.call("tasks.get", {"task_id": task["id"]})["status"] == "in_progress"
    assert api.call("tasks.cancel", {"task_id": task["id"]})["cancelled"] is True


# ---------------------------------------------------------------------- list / tree


def test_list_pages_and_filters(service: Service) -> None:
    api = service.api
    root, _kid = api.call("tasks.create", [{"name": "r"}, {"name": "k", "parent_id": "r"}])["tasks"]
    for index in range(3):
        api.create(name=f"t{index}")
    page = api.call("tasks.list", {"limit": 2, "offset": 1})
    assert page["total"] == 5
    assert page["limit"] == 2 and page["offset"] == 1
    assert len(page["items"]) == 2
    assert api.call("tasks.list", {"roots_only": True})["total"] == 4
    children = api.call("tasks.list", {"parent_id": root["id"]})
    assert [item["name"] for item in children["items"]] == ["k"]
    assert api.call("tasks.list", {"status": "pending"})["total"] == 5
    assert api.call("tasks.list", {"status": "completed"})["total"] == 0


def test_list_errors(service: Service) -> None:
    api = service.api
    assert_field(api.fail("tasks.list", {"limit": 0}), INVALID, "limit")
    assert_field(api.fail("tasks.list", {"limit": 1001}), INVALID, "limit")
    assert_field(api.fail("tasks.list", {"limit": "10"}), INVALID, "limit")
    assert_field(api.fail("tasks.list", {"offset": -1}), INVALID, "offset")
    assert_field(api.fail("tasks.list", {"roots_only": "yes"}), INVALID, "roots_only")
    assert_field(api.fail("tasks.list", {"status": "sleeping"}), INVALID, "status")
    assert_field(api.fail("tasks.list", {"user_id": 7}), INVALID, "user_id")
    assert_field(api.fail("tasks.list", {"sort": "name"}), INVALID, "sort")


def test_tree_is_the_whole_tree_from_any_member(service: Service) -> None:
    api = service.api
    tasks = api.call(
        "tasks.create",
        [
            {"name": "root"},
            {"name": "mid", "parent_id": "root"},
            {"name": "leaf", "parent_id": "mid"},
        ],
    )["tasks"]
    ids = {task["name"]: task["id"] for task in tasks}
    tree = api.call("tasks.tree", {"task_id": ids["leaf"]})
    assert api.call("tasks.tree", {"task_id": ids["root"]}) == tree

    def names(node: dict[str, Any]) -> list[str]:
        return [node["name"], *[name for kid in node["children"] for name in names(kid)]]

    assert names(tree) == ["root", "mid", "leaf"]
    assert_field(api.fail("tasks.tree", {"task_id": "nope"}), NOT_FOUND)
    assert_field(api.fail("tasks.tree", {}), INVALID, "task_id")


# ---------------------------------------------------------------------- execute / cancel / runs


def test_execute_and_wait_returns_the_outcome(service: Service) -> None:
    api = service.api
    root, kid = api.call(
        "tasks.create",
        [
            {"name": "root"},
            {
                "name": "kid",
                "parent_id": "root",
                "params": {"executor_id": "echo_executor"},
                "inputs": {"v": 42},
            },
        ],
    )["tasks"]
    outcome = api.call("tasks.execute", {"task_id": root["id"], "wait": True})
    assert outcome["success"] is True
    assert outcome["status"] == "completed"
    assert outcome["task_id"] == root["id"]
    assert outcome["error"] is None
    assert outcome["result"] == {kid["id"]: {"v": 42}}
    assert outcome["children"] == [
        {"task_id": kid["id"], "name": "kid", "status": "completed", "error": None}
    ]
    runs = api.runs(root["id"])
    assert [(run["id"], run["trigger"], run["status"]) for run in runs] == [
        (outcome["run_id"], "api", "completed")
    ]


def test_execute_without_waiting_starts_a_run(service: Service) -> None:
    api = service.api
    task = api.create(inputs={"a": 1})
    started = api.call("tasks.execute", {"task_id": task["id"], "wait": False})
    assert started["success"] is True
    assert started["status"] == "triggered"
    runs = api.wait_run(task["id"])
    assert [run["id"] for run in runs] == [started["run_id"]]
    assert runs[0]["status"] == "completed"
    assert api.wait_status(task["id"], {"completed"})["result"] == {"a": 1}


def test_execute_a_failing_task_reports_the_failure(service: Service) -> None:
    api = service.api
    task = api.create(params={"executor_id": "test_fail"}, inputs={"message": "kaput"})
    outcome = api.call("tasks.execute", {"task_id": task["id"], "wait": True})
    assert outcome["success"] is False
    assert outcome["status"] == "failed"
    assert "kaput" in outcome["error"]


def test_execute_errors(service: Service) -> None:
    api = service.api
    task = api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    assert_field(api.fail("tasks.execute", {"task_id": "nope"}), NOT_FOUND)
    assert_field(api.fail("tasks.execute", {"task_id": task["id"], "wait": "yes"}), INVALID, "wait")
    api.call("tasks.execute", {"task_id": task["id"]})
    assert_field(api.fail("tasks.execute", {"task_id": task["id"]}), CONFLICT)
    assert_field(api.fail("tasks.execute", {"task_id": task["id"], "wait": True}), CONFLICT)
    assert len(api.runs(task["id"])) == 1
    api.call("tasks.cancel", {"task_id": task["id"]})


def test_execute_obeys_the_overlap_policy_unless_given_one(service: Service) -> None:
    api = service.api
    task = api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    first = api.call("tasks.execute", {"task_id": task["id"]})["run_id"]
    assert_field(api.fail("tasks.execute", {"task_id": task["id"]}), CONFLICT)  # skip
    bad = api.fail("tasks.execute", {"task_id": task["id"], "overlap": "sometimes"})
    assert_field(bad, INVALID, "overlap")
    beside = api.call("tasks.execute", {"task_id": task["id"], "overlap": "allow_all"})
    assert beside["status"] == "triggered" and beside["run_id"] != first
    replacing = api.call("tasks.execute", {"task_id": task["id"], "overlap": "terminate_other"})
    runs = {run["id"]: run for run in api.runs(task["id"])}
    assert runs[beside["run_id"]]["status"] == "terminated"
    assert runs[first]["status"] == "running"  # allow_all left it alone
    assert runs[replacing["run_id"]]["status"] == "running"
    assert api.call("tasks.get", {"task_id": task["id"]})["schedule_overlap"] == "skip"
    api.call("tasks.cancel", {"task_id": task["id"]})


def test_cancel_a_running_task(service: Service) -> None:
    api = service.api
    task = api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    run_id = api.call("tasks.execute", {"task_id": task["id"]})["run_id"]
    assert api.call("tasks.cancel", {"task_id": task["id"]}) == {
        "task_id": task["id"],
        "cancelled": True,
    }
    assert api.call("tasks.get", {"task_id": task["id"]})["status"] == "cancelled"
    runs = api.runs(task["id"])
    assert [(run["id"], run["status"]) for run in runs] == [(run_id, "cancelled")]
    assert api.call("tasks.cancel", {"task_id": task["id"]})["cancelled"] is False
    assert_field(api.fail("tasks.cancel", {"task_id": "nope"}), NOT_FOUND)
    assert_field(api.fail("tasks.cancel", {"task_id": ["x"]}), INVALID, "task_id")


def test_runs_list_filters_and_pages(service: Service) -> None:
    api = service.api
    good = api.create()
    bad = api.create(params={"executor_id": "test_fail"})
    api.call("tasks.execute", {"task_id": good["id"], "wait": True})
    api.call("tasks.execute", {"task_id": good["id"], "wait": True})
    api.call("tasks.execute", {"task_id": bad["id"], "wait": True})
    everything = api.call("tasks.runs.list", {})
    assert everything["total"] == 3
    assert {run["trigger"] for run in everything["items"]} == {"api"}
    failed = api.call("tasks.runs.list", {"status": "failed"})
    assert [run["task_id"] for run in failed["items"]] == [bad["id"]]
    page = api.call("tasks.runs.list", {"task_id": good["id"], "limit": 1})
    assert page["total"] == 2 and len(page["items"]) == 1
    assert_field(api.fail("tasks.runs.list", {"task_id": "nope"}), NOT_FOUND)
    assert_field(api.fail("tasks.runs.list", {"limit": 5000}), INVALID, "limit")
    assert_field(api.fail("tasks.runs.list", {"status": "sleeping"}), INVALID, "status")


# ---------------------------------------------------------------------- tasks.scheduled.*


def test_scheduled_list(service: Service) -> None:
    api = service.api
    api.create(name="plain")
    enabled = api.create(
        name="on", schedule_type="daily", schedule_expression="09:00", schedule_enabled=True
    )
    disabled = api.create(name="off", schedule_type="cron", schedule_expression="0 * * * *")
    listed = api.call("tasks.scheduled.list", {})
    assert [task["id"] for task in listed["items"]] == [enabled["id"]]
    everything = api.call("tasks.scheduled.list", {"enabled_only": False})
    assert {task["id"] for task in everything["items"]} == {enabled["id"], disabled["id"]}
    crons = api.call("tasks.scheduled.list", {"enabled_only": False, "schedule_type": "cron"})
    assert [task["id"] for task in crons["items"]] == [disabled["id"]]
    assert_field(
        api.fail("tasks.scheduled.list", {"schedule_type": "fortnightly"}),
        INVALID,
        "schedule_type",
    )
    assert_field(api.fail("tasks.scheduled.list", {"enabled_only": 1}), INVALID, "enabled_only")


def test_scheduled_due(service: Service) -> None:
    api = service.api
    # Fires in an hour: not due now, due before two hours from now.
    task = api.create(
        schedule_type="once", schedule_expression=iso(soon(3600)), schedule_enabled=True
    )
    assert api.call("tasks.scheduled.due", {})["items"] == []
    due = api.call("tasks.scheduled.due", {"before": iso(soon(7200)), "limit": 10})
    assert [item["id"] for item in due["items"]] == [task["id"]]
    assert due["total"] == 1
    assert_field(
        api.fail("tasks.scheduled.due", {"before": "2025-01-01T09:00:00"}), INVALID, "before"
    )
    assert_field(api.fail("tasks.scheduled.due", {"before": "tomorrow"}), INVALID, "before")
    assert_field(api.fail("tasks.scheduled.due", {"limit": 0}), INVALID, "limit")


def test_scheduled_init(service: Service) -> None:
    api = service.api
    task = api.create(schedule_type="daily", schedule_expression="09:00", schedule_enabled=True)
    later = api.call(
        "tasks.scheduled.init", {"task_id": task["id"], "from_time": "2031-03-01T10:00:00+00:00"}
    )
    assert later["next_run_at"] == "2031-03-02T09:00:00+00:00"
    assert_field(api.fail("tasks.scheduled.init", {"task_id": "nope"}), NOT_FOUND)
    assert_field(
        api.fail("tasks.scheduled.init", {"task_id": task["id"], "from_time": "soon"}),
        INVALID,
        "from_time",
    )


def test_scheduled_complete(make_service: ServiceFactory) -> None:
    """An external scheduler ran the due occurrence: complete records it and moves on."""
    api = make_service(run_scheduler=False).api  # nothing else fires it meanwhile
    start = soon(-3 * 3600)
    task = api.create(
        schedule_type="interval",
        schedule_expression="1h",
        schedule_start_at=iso(start),
        schedule_enabled=True,
    )
    half_past = iso(start + timedelta(minutes=30))
    due = api.call("tasks.scheduled.init", {"task_id": task["id"], "from_time": half_past})
    before = datetime.fromisoformat(due["next_run_at"])
    assert before == start + timedelta(hours=1)
    assert [t["id"] for t in api.call("tasks.scheduled.due", {})["items"]] == [task["id"]]
    done = api.call(
        "tasks.scheduled.complete",
        {"task_id": task["id"], "success": True, "result": {"ok": 1}},
    )
    assert done["status"] == "completed"
    assert done["result"] == {"ok": 1}
    assert datetime.fromisoformat(done["next_run_at"]) > datetime.now(UTC)
    assert done["last_run_at"] is not None
    assert api.call("tasks.scheduled.due", {})["items"] == []
    failed = api.call(
        "tasks.scheduled.complete",
        {"task_id": task["id"], "success": False, "error": "it broke", "calculate_next_run": False},
    )
    assert failed["status"] == "failed"
    assert failed["error"] == "it broke"
    assert failed["next_run_at"] == done["next_run_at"]
    assert_field(api.fail("tasks.scheduled.complete", {"task_id": "nope"}), NOT_FOUND)
    assert_field(
        api.fail("tasks.scheduled.complete", {"task_id": task["id"], "success": "yes"}),
        INVALID,
        "success",
    )
    assert_field(
        api.fail("tasks.scheduled.complete", {"task_id": task["id"], "error": 5}),
        INVALID,
        "error",
    )


def test_scheduled_preview_of_a_schedule_given_inline(service: Service) -> None:
    api = service.api
    preview = api.call(
        "tasks.scheduled.preview",
        {
            "schedule_type": "cron",
            "schedule_expression": "30 9 * * *",
            "schedule_timezone": "America/New_York",
            "after": "2030-01-01T00:00:00+00:00",
            "count": 3,
        },
    )
    assert preview == {
        "fire_times": [
            "2030-01-01T14:30:00+00:00",
            "2030-01-02T14:30:00+00:00",
            "2030-01-03T14:30:00+00:00",
        ]
    }
    assert api.call("tasks.list", {})["total"] == 0  # nothing saved


def test_scheduled_preview_of_a_stored_task(service: Service) -> None:
    api = service.api
    task = api.create(schedule_type="weekly", schedule_expression="1 08:00", max_runs=2)
    preview = api.call(
        "tasks.scheduled.preview",
        {"task_id": task["id"], "after": "2030-01-01T00:00:00+00:00", "count": 5},
    )
    assert preview["fire_times"] == ["2030-01-07T08:00:00+00:00", "2030-01-14T08:00:00+00:00"]


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({"schedule_type": "cron", "schedule_expression": "* * *"}, "schedule_expression", INVALID),
        (
            {
                "schedule_type": "cron",
                "schedule_expression": "* * * * *",
                "schedule_timezone": "Atlantis/Capital",
            },
            "schedule_timezone",
            INVALID,
        ),
        ({**EVERY_MINUTE, "count": 0}, "count", INVALID),
        ({"schedule_expression": "* * * * *"}, "schedule_type", INVALID),
        ({**EVERY_MINUTE, "name": "x"}, "name", INVALID),
        ({"task_id": "nope"}, None, NOT_FOUND),
        (
            {"schedule_type": "cron", "schedule_expression": "* * * * *", "after": "yesterday"},
            "after",
            INVALID,
        ),
    ],
)
def test_scheduled_preview_errors(
    service: Service, params: dict[str, object], field: str | None, code: int
) -> None:
    assert_field(service.api.fail("tasks.scheduled.preview", params), code, field)


# ---------------------------------------------------------------------- tasks.webhook.trigger


def test_webhook_trigger_method_async_and_sync(service: Service) -> None:
    api = service.api
    task = api.create(inputs={"k": "v"})
    started = api.call("tasks.webhook.trigger", {"task_id": task["id"]})
    assert started["success"] is True
    assert started["status"] == "triggered"
    assert api.wait_run(task["id"])[0]["trigger"] == "webhook"
    outcome = api.call("tasks.webhook.trigger", {"task_id": task["id"], "async_execution": False})
    assert outcome["success"] is True
    assert outcome["status"] == "completed"
    assert outcome["result"] == {"k": "v"}
    assert outcome["children"] == []
    runs = api.runs(task["id"])
    assert {run["id"] for run in runs} == {started["run_id"], outcome["run_id"]}
    assert {run["trigger"] for run in runs} == {"webhook"}


def test_webhook_trigger_method_idempotency_key(service: Service) -> None:
    api = service.api
    task = api.create()
    first = api.call(
        "tasks.webhook.trigger",
        {"task_id": task["id"], "async_execution": False, "idempotency_key": "k-1"},
    )
    again = api.call("tasks.webhook.trigger", {"task_id": task["id"], "idempotency_key": "k-1"})
    assert again["run_id"] == first["run_id"]
    assert len(api.runs(task["id"])) == 1
    other = api.call(
        "tasks.webhook.trigger",
        {"task_id": task["id"], "async_execution": False, "idempotency_key": "k-2"},
    )
    assert other["run_id"] != first["run_id"]
    assert len(api.runs(task["id"])) == 2


def test_webhook_trigger_method_errors(service: Service) -> None:
    api = service.api
    task = api.create()
    assert_field(api.fail("tasks.webhook.trigger", {"task_id": "nope"}), NOT_FOUND)
    assert_field(
        api.fail("tasks.webhook.trigger", {"task_id": task["id"], "async_execution": "no"}),
        INVALID,
        "async_execution",
    )
    assert_field(
        api.fail("tasks.webhook.trigger", {"task_id": task["id"], "idempotency_key": ""}),
        INVALID,
        "idempotency_key",
    )
    assert_field(
        api.fail("tasks.webhook.trigger", {"task_id": task["id"], "scheduled_for": "now"}),
        INVALID,
        "scheduled_for",
    )
    assert api.runs(task["id"]) == []


def test_webhook_trigger_method_busy_is_a_conflict(service: Service) -> None:
    api = service.api
    task = api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    api.call("tasks.webhook.trigger", {"task_id": task["id"]})
    assert_field(api.fail("tasks.webhook.trigger", {"task_id": task["id"]}), CONFLICT)
    api.call("tasks.cancel", {"task_id": task["id"]})


def test_webhook_trigger_of_an_occurrence_not_due_starts_nothing(service: Service) -> None:
    api = service.api
    task = api.create(schedule_type="daily", schedule_expression="09:00", schedule_enabled=True)
    outcome = api.call(
        "tasks.webhook.trigger", {"task_id": task["id"], "scheduled_for": task["next_run_at"]}
    )
    assert outcome["success"] is False
    assert outcome["run_id"] is None
    assert api.runs(task["id"]) == []


def test_webhook_trigger_fires_a_due_occurrence_once(service: Service) -> None:
    """What an API-mode scheduler does: fire the due occurrence named by scheduled_for; a
    second request for the same occurrence starts nothing."""
    api = service.api
    due_at = soon(-1).replace(microsecond=0)
    task = api.create(schedule_type="once", schedule_expression=iso(due_at), schedule_enabled=True)
    # The server's own scheduler may fire it too: exactly one of us wins.
    outcome = api.call(
        "tasks.webhook.trigger", {"task_id": task["id"], "scheduled_for": task["next_run_at"]}
    )
    again = api.call(
        "tasks.webhook.trigger", {"task_id": task["id"], "scheduled_for": task["next_run_at"]}
    )
    assert again["run_id"] is None
    runs = api.wait_run(task["id"])
    assert len(runs) == 1
    assert runs[0]["trigger"] == "schedule"
    assert datetime.fromisoformat(runs[0]["scheduled_for"]) == due_at
    if outcome["run_id"] is not None:
        assert outcome["run_id"] == runs[0]["id"]


# ---------------------------------------------------------------------- rpc.discover


def test_discover_lists_every_method_with_its_declared_params(service: Service) -> None:
    document = service.api.call("rpc.discover")
    assert document["openrpc"].startswith("1.")
    described = {method["name"]: method for method in document["methods"]}
    assert set(described) == {spec.name for spec in METHODS} | {"rpc.discover"}
    for spec in METHODS:
        method = described[spec.name]
        names = [param["name"] for param in method["params"]]
        declared_names = [p.name for p in spec.params]
        assert names == declared_names + sorted(spec.task_fields)
        for param, declared in zip(method["params"], spec.params, strict=False):
            assert param["required"] == declared.required
            assert param["schema"] == dict(declared.schema)
        assert method["summary"] == spec.summary
    assert [p["name"] for p in described["tasks.get"]["params"]] == ["task_id"]
    assert described["tasks.get"]["params"][0]["required"] is True


def test_discover_names_the_spec_methods(service: Service) -> None:
    """The generated document covers every method the README lists."""
    names = {method["name"] for method in service.api.call("rpc.discover")["methods"]}
    expected = {
        "tasks.create",
        "tasks.get",
        "tasks.update",
        "tasks.delete",
        "tasks.list",
        "tasks.tree",
        "tasks.execute",
        "tasks.cancel",
        "tasks.runs.list",
        "tasks.scheduled.list",
        "tasks.scheduled.due",
        "tasks.scheduled.init",
        "tasks.scheduled.complete",
        "tasks.scheduled.preview",
        "tasks.webhook.trigger",
        "rpc.discover",
    }
    assert expected <= names
    methods = service.api.call("rpc.discover")["methods"]
    scheduled_list = next(m for m in methods if m["name"] == "tasks.scheduled.list")
    assert {p["name"] for p in scheduled_list["params"]} >= {
        "enabled_only",
        "user_id",
        "schedule_type",
        "status",
        "limit",
        "offset",
    }


def test_discover_describes_every_task_field_and_every_error(service: Service) -> None:
    """Every param a method accepts is published with its type, and every error code it may
    answer; the task fields come from the same module that validates them."""
    methods = {m["name"]: m for m in service.api.call("rpc.discover")["methods"]}
    assert set(FIELD_SCHEMAS) == WRITABLE_ON_CREATE
    create = {p["name"]: p for p in methods["tasks.create"]["params"]}
    assert set(create) == {"tasks"} | WRITABLE_ON_CREATE
    assert create["name"]["required"] is True
    assert create["schedule_overlap"]["schema"]["enum"] == [
        "skip",
        "buffer_one",
        "buffer_all",
        "cancel_other",
        "terminate_other",
        "allow_all",
    ]
    assert create["tasks"]["schema"]["items"]["properties"]["priority"]["maximum"] == 3
    update = {p["name"] for p in methods["tasks.update"]["params"]}
    assert update == {"task_id"} | WRITABLE_ON_UPDATE
    for method in methods.values():
        for param in method["params"]:
            assert (
                "type" in param["schema"]
                or "oneOf" in param["schema"]
                or param["name"] in {"result"}
            ), (method["name"], param)
        codes = {error["code"] for error in method["errors"]}
        assert -32602 in codes
        if method["name"] != "rpc.discover":
            assert {-32001, -32003, -32004, -32009, -32603} <= codes
    assert -32029 in {error["code"] for error in methods["tasks.webhook.trigger"]["errors"]}


def test_discover_refuses_params(service: Service) -> None:
    assert_field(service.api.fail("rpc.discover", {"x": 1}), INVALID, "params")


# ---------------------------------------------------------------------- operator controls


def test_pause_resume_and_skip_through_json_rpc(service: Service) -> None:
    api = service.api
    task = api.create(**EVERY_MINUTE, schedule_enabled=True)
    until = soon(7200)
    paused = api.call(
        "tasks.scheduled.pause", {"task_id": task["id"], "note": "upgrade", "until": iso(until)}
    )
    assert paused["schedule_paused"] is True and paused["schedule_pause_note"] == "upgrade"
    assert datetime.fromisoformat(paused["schedule_paused_until"]) == until
    preview = api.call("tasks.scheduled.preview", {"task_id": task["id"], "count": 3})
    assert [entry["reason"] for entry in preview["skipped"]] == ["paused"] * 3
    resumed = api.call("tasks.scheduled.resume", {"task_id": task["id"], "note": "done"})
    assert resumed["schedule_paused"] is False and resumed["schedule_paused_until"] is None
    skipping = api.call("tasks.scheduled.skip", {"task_id": task["id"], "count": 2})
    assert skipping["schedule_skip_count"] == 2
    preview = api.call("tasks.scheduled.preview", {"task_id": task["id"], "count": 3})
    assert preview["skipped"] == [
        {"fire_time": preview["fire_times"][0], "reason": "skipped by the operator"},
        {"fire_time": preview["fire_times"][1], "reason": "skipped by the operator"},
    ]


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("tasks.scheduled.pause", {"until": "2020-01-01T00:00:00Z"}, "until"),
        ("tasks.scheduled.pause", {"until": "2030-01-01T00:00:00"}, "until"),
        ("tasks.scheduled.pause", {"note": 5}, "note"),
        ("tasks.scheduled.skip", {"count": 0}, "count"),
        ("tasks.scheduled.skip", {"count": 1001}, "count"),
    ],
)
def test_operator_controls_refuse_bad_input_naming_the_field(
    service: Service, method: str, params: dict[str, Any], field: str
) -> None:
    task = service.api.create(**EVERY_MINUTE, schedule_enabled=True)
    error = service.api.fail(method, {"task_id": task["id"], **params})
    assert_field(error, INVALID, field)
    stored = service.api.call("tasks.get", {"task_id": task["id"]})
    assert stored["schedule_paused"] is False and stored["schedule_skip_count"] == 0


def test_pausing_a_task_without_an_enabled_schedule_names_the_task(service: Service) -> None:
    plain = service.api.create()
    for method in ("tasks.scheduled.pause", "tasks.scheduled.skip"):
        assert_field(service.api.fail(method, {"task_id": plain["id"]}), INVALID, "task_id")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2025-01-01T00:10:00Z", "end": "2025-01-01T00:00:00Z"}, "end"),
        ({"end": None}, "end"),
        ({"start": "2025-01-01T00:00:00", "end": "2025-01-02T00:00:00Z"}, "start"),
        ({"reprocess": "some"}, "reprocess"),
        ({"max_concurrent": 0}, "max_concurrent"),
    ],
)
def test_backfill_refuses_bad_input_naming_the_field(
    service: Service, params: dict[str, Any], field: str
) -> None:
    task = service.api.create(**EVERY_MINUTE)
    period = {"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:10:00Z"}
    error = service.api.fail(
        "tasks.scheduled.backfill", {"task_id": task["id"], **period, **params}
    )
    assert_field(error, INVALID, field)
    assert service.api.runs(task["id"]) == []


def test_backfill_runs_each_occurrence_of_the_period_once(service: Service) -> None:
    api = service.api
    task = api.create(**EVERY_MINUTE)
    made = api.call(
        "tasks.scheduled.backfill",
        {
            "task_id": task["id"],
            "start": "2025-01-01T00:00:00Z",
            "end": "2025-01-01T00:03:00Z",
            "max_concurrent": 3,
        },
    )
    assert made["occurrences"] == [f"2025-01-01T00:0{k}:00+00:00" for k in range(3)]
    deadline = time.monotonic() + 10
    runs = api.runs(task["id"])
    while {run["status"] for run in runs} != {"completed"}:
        assert time.monotonic() < deadline, runs
        time.sleep(0.05)
        runs = api.runs(task["id"])
    assert sorted(run["scheduled_for"] for run in runs) == made["occurrences"]
    assert {(run["trigger"], run["backfill_id"]) for run in runs} == {
        ("backfill", made["backfill_id"])
    }
