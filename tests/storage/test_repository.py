"""TaskRepository on SQLite and PostgreSQL: round trips, trees, schedules and the due query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixed_clock import Clock
from sqlalchemy import func, select, update

from apflow_server.config import Settings
from apflow_server.core.errors import ConflictError, NotFoundError, ValidationError
from apflow_server.core.trees import MAX_TREE_DEPTH, MAX_TREE_TASKS
from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun, run_row, task_to_dict
from apflow_server.storage.repository import TaskRepository, prune_runs

NOW = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)  # a Wednesday


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def repo(database: Database, clock: Clock, tmp_path) -> TaskRepository:
    settings = Settings(home=tmp_path, database_url=database.url, run_history_keep=3)
    return TaskRepository(database, settings=settings, clock=clock)


async def count_tasks(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Task)) or 0)


async def set_status(database: Database, task_id: str, status: str) -> None:
    async with database.transaction(write=True) as session:
        await session.execute(update(Task).where(Task.id == task_id).values(status=status))


# ---------------------------------------------------------------------- round trips


async def test_create_and_get_round_trip(repo: TaskRepository) -> None:
    created = await repo.create_task(
        name="Daily Report",
        user_id="alice",
        priority=1,
        inputs={"report_type": "summary", "nested": {"a": [1, 2]}},
        params={"executor_id": "echo_executor"},
        schedule_type="daily",
        schedule_expression="09:00",
        schedule_timezone="Europe/Berlin",
        schedule_enabled=True,
    )
    loaded = await repo.get_task_by_id(created.id)
    assert loaded is not None
    data = task_to_dict(loaded)
    assert data["name"] == "Daily Report"
    assert data["user_id"] == "alice"
    assert data["priority"] == 1
    assert data["inputs"] == {"report_type": "summary", "nested": {"a": [1, 2]}}
    assert data["params"] == {"executor_id": "echo_executor"}
    assert data["status"] == "pending"
    assert data["created_at"] == "2025-03-05T12:00:00+00:00"
    # 09:00 in Berlin (CET, +01:00) on the next day, since 12:00 UTC is past 09:00 local.
    assert data["next_run_at"] == "2025-03-06T08:00:00+00:00"
    assert loaded.next_run_at is not None and loaded.next_run_at.tzinfo is not None


async def test_create_uses_given_id_and_refuses_duplicates(repo: TaskRepository) -> None:
    await repo.create_task(id="report-1", name="A")
    with pytest.raises(ValidationError) as caught:
        await repo.create_task(id="report-1", name="B")
    assert caught.value.field == "id"


async def test_get_unknown_is_none_and_require_raises(repo: TaskRepository) -> None:
    assert await repo.get_task_by_id("missing") is None
    with pytest.raises(NotFoundError):
        await repo.require_task("missing")


async def test_update_changes_definition_fields(repo: TaskRepository, clock: Clock) -> None:
    task = await repo.create_task(name="A")
    clock.now = NOW + timedelta(minutes=5)
    updated = await repo.update_task(task.id, name="B", inputs={"x": 1}, priority=0)
    assert (updated.name, updated.inputs, updated.priority) == ("B", {"x": 1}, 0)
    assert updated.updated_at == NOW + timedelta(minutes=5)
    assert updated.created_at == NOW


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"priority": 7}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"inputs": [1, 2]}, "inputs"),
        ({"status": "completed"}, "status"),
        ({"next_run_at": "2025-01-01T00:00:00Z"}, "next_run_at"),
        ({"colour": "red"}, "colour"),
        ({"parent_id": "x"}, "parent_id"),
        ({"schedule_type": "hourly"}, "schedule_type"),
        ({"schedule_type": "daily", "schedule_expression": "25:00"}, "schedule_expression"),
        ({"schedule_type": "daily"}, "schedule_expression"),
        (
            {"schedule_type": "daily", "schedule_expression": "09:00", "schedule_timezone": "X/Y"},
            "schedule_timezone",
        ),
        ({"schedule_start_at": "yesterday"}, "schedule_start_at"),
        (
            {
                "schedule_type": "daily",
                "schedule_expression": "09:00",
                "schedule_start_at": "2025-05-01T00:00:00Z",
                "schedule_end_at": "2025-04-01T00:00:00Z",
            },
            "schedule_end_at",
        ),
        ({"schedule_enabled": "yes"}, "schedule_enabled"),
        ({"schedule_enabled": True}, "schedule_type"),
        ({"max_runs": 0}, "max_runs"),
        ({"schedule_misfire": "sometimes"}, "schedule_misfire"),
        ({"schedule_overlap": "queue"}, "schedule_overlap"),
        ({"schedule_jitter_seconds": -1}, "schedule_jitter_seconds"),
        ({"dependencies": "other"}, "dependencies"),
        ({"dependencies": [{"id": "nope"}]}, "dependencies[0].id"),
    ],
)
async def test_bad_update_is_refused_and_changes_nothing(
    repo: TaskRepository, fields: dict, field: str
) -> None:
    task = await repo.create_task(name="A", inputs={"keep": True})
    before = task_to_dict(await repo.require_task(task.id))
    with pytest.raises(ValidationError) as caught:
        await repo.update_task(task.id, **fields)
    assert caught.value.field == field
    assert task_to_dict(await repo.require_task(task.id)) == before


async def test_bad_create_writes_nothing(repo: TaskRepository, database: Database) -> None:
    with pytest.raises(ValidationError):
        await repo.create_tasks(
            [
                {"name": "root", "id": "r"},
                {"name": "child", "parent_id": "r", "schedule_timezone": "Nowhere/Land"},
            ]
        )
    assert await count_tasks(database) == 0


async def test_update_unknown_task(repo: TaskRepository) -> None:
    with pytest.raises(NotFoundError):
        await repo.update_task("missing", name="x")


# ---------------------------------------------------------------------- trees


async def test_tree_with_dependencies_by_name(repo: TaskRepository) -> None:
    tasks = await repo.create_tasks(
        [
            {"name": "pipeline", "user_id": "bob"},
            {"name": "fetch", "parent_id": "pipeline", "priority": 0},
            {"name": "transform", "parent_id": "pipeline", "dependencies": [{"id": "fetch"}]},
            {
                "name": "publish",
                "parent_id": "pipeline",
                "dependencies": [{"id": "transform"}, {"id": "fetch", "required": False}],
            },
        ]
    )
    root, fetch, transform, publish = tasks
    assert fetch.parent_id == root.id
    assert transform.dependencies == [{"id": fetch.id, "required": True}]
    assert publish.dependencies == [
        {"id": transform.id, "required": True},
        {"id": fetch.id, "required": False},
    ]
    assert {t.user_id for t in tasks} == {"bob"}  # children inherit the root's owner

    tree = await repo.get_tree(publish.id)  # any member gives the whole tree
    assert tree.task.id == root.id
    names = [child.task.name for child in tree.children]
    assert names[0] == "fetch"  # priority 0 before the default 2
    assert sorted(names[1:]) == ["publish", "transform"]
    as_dict = tree.to_dict()
    assert as_dict["children"][0]["name"] == "fetch"


async def test_nested_tree_and_subtree_parent_by_id(repo: TaskRepository, clock: Clock) -> None:
    await repo.create_tasks(
        [
            {"id": "root", "name": "root"},
            {"id": "mid", "name": "mid", "parent_id": "root"},
            {"id": "leaf", "name": "leaf", "parent_id": "mid"},
        ]
    )
    # A later single task can join an existing tree and depend on an existing sibling.
    clock.now = NOW + timedelta(seconds=1)
    extra = await repo.create_task(name="extra", parent_id="mid", dependencies=["leaf"])
    assert extra.dependencies == [{"id": "leaf", "required": True}]
    tree = await repo.get_tree("root")
    assert [c.task.id for c in tree.children[0].children] == ["leaf", extra.id]


@pytest.mark.parametrize(
    ("specs", "field"),
    [
        (
            [
                {"name": "root"},
                {"name": "a", "parent_id": "root", "dependencies": ["b"]},
                {"name": "b", "parent_id": "root", "dependencies": ["a"]},
            ],
            "tasks[2].dependencies",  # the edge b -> a closes the cycle
        ),
        (
            [
                {"name": "root"},
                {"name": "a", "parent_id": "root", "dependencies": ["a"]},
            ],
            "tasks[1].dependencies[0].id",
        ),
        (
            [
                {"name": "root"},
                {"name": "a", "parent_id": "root"},
                {"name": "deep", "parent_id": "a"},
                {"name": "b", "parent_id": "root", "dependencies": ["deep"]},
            ],
            "tasks[3].dependencies[0].id",
        ),
        ([{"name": "r1"}, {"name": "r2"}], "tasks"),
        (
            [{"name": "root"}, {"name": "x", "parent_id": "root", "schedule_type": "daily"}],
            "tasks[1].schedule_type",
        ),
        (
            [
                {"name": "root", "user_id": "u1"},
                {"name": "x", "parent_id": "root", "user_id": "u2"},
            ],
            "tasks[1].user_id",
        ),
    ],
    ids=["cycle", "self", "outside-siblings", "two-roots", "child-schedule", "mixed-owner"],
)
async def test_bad_trees_are_refused(
    repo: TaskRepository, database: Database, specs: list, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.create_tasks(specs)
    assert caught.value.field == field
    assert await count_tasks(database) == 0


async def test_cycle_through_update_is_refused(repo: TaskRepository) -> None:
    _, a, _ = await repo.create_tasks(
        [
            {"name": "root"},
            {"name": "a", "parent_id": "root"},
            {"name": "b", "parent_id": "root", "dependencies": ["a"]},
        ]
    )
    with pytest.raises(ValidationError, match="cycle"):
        await repo.update_task(a.id, dependencies=[{"id": "b"}])
    assert (await repo.require_task(a.id)).dependencies == []


async def test_delete_removes_the_whole_subtree(repo: TaskRepository, database: Database) -> None:
    await repo.create_tasks(
        [
            {"id": "root", "name": "root"},
            {"id": "a", "name": "a", "parent_id": "root"},
            {"id": "a1", "name": "a1", "parent_id": "a"},
        ]
    )
    deleted = await repo.delete_task("root")
    assert sorted(deleted) == ["a", "a1", "root"]
    assert await count_tasks(database) == 0


async def test_delete_refused_while_any_part_runs(repo: TaskRepository, database: Database) -> None:
    await repo.create_tasks(
        [{"id": "root", "name": "root"}, {"id": "a", "name": "a", "parent_id": "root"}]
    )
    await set_status(database, "a", "in_progress")
    with pytest.raises(ConflictError):
        await repo.delete_task("root")
    assert await count_tasks(database) == 2


async def test_delete_refused_when_a_sibling_depends_on_it(repo: TaskRepository) -> None:
    await repo.create_tasks(
        [
            {"id": "root", "name": "root"},
            {"id": "a", "name": "a", "parent_id": "root"},
            {"id": "b", "name": "b", "parent_id": "root", "dependencies": ["a"]},
        ]
    )
    with pytest.raises(ConflictError, match="depends"):
        await repo.delete_task("a")
    await repo.delete_task("b")
    await repo.delete_task("a")


async def test_list_filters_and_pages(repo: TaskRepository, clock: Clock) -> None:
    for index in range(5):
        clock.now = NOW + timedelta(seconds=index)
        await repo.create_task(name=f"t{index}", user_id="u1" if index % 2 else "u2")
    page = await repo.list_tasks(user_id="u2", limit=2)
    assert page.total == 3
    assert [t.name for t in page.items] == ["t0", "t2"]
    page = await repo.list_tasks(user_id="u2", limit=2, offset=2)
    assert [t.name for t in page.items] == ["t4"]
    with pytest.raises(ValidationError) as caught:
        await repo.list_tasks(limit=0)
    assert caught.value.field == "limit"
    with pytest.raises(ValidationError) as caught:
        await repo.list_tasks(status="sleeping")
    assert caught.value.field == "status"


# ---------------------------------------------------------------------- schedules


async def test_enabling_a_schedule_computes_next_run(repo: TaskRepository) -> None:
    task = await repo.create_task(name="Daily Report")
    assert task.next_run_at is None
    task = await repo.update_task(
        task.id, schedule_type="daily", schedule_expression="09:00", schedule_enabled=True
    )
    assert task.next_run_at == datetime(2025, 3, 6, 9, 0, tzinfo=UTC)
    task = await repo.update_task(task.id, schedule_enabled=False)
    assert task.next_run_at is None


async def test_interval_grid_anchors_at_enable_time(repo: TaskRepository, clock: Clock) -> None:
    task = await repo.create_task(
        name="poll", schedule_type="interval", schedule_expression="15m", schedule_enabled=True
    )
    assert task.next_run_at == NOW + timedelta(minutes=15)
    # Unrelated updates keep the grid; re-initialising later stays on it.
    clock.now = NOW + timedelta(minutes=40)
    task = await repo.update_task(task.id, name="poll2")
    task = await repo.init_schedule(task.id)
    assert task.next_run_at == NOW + timedelta(minutes=45)


async def test_interval_with_start_bound(repo: TaskRepository) -> None:
    task = await repo.create_task(
        name="poll",
        schedule_type="interval",
        schedule_expression="3600",
        schedule_start_at="2025-03-05T13:30:00Z",
        schedule_enabled=True,
    )
    assert task.next_run_at == datetime(2025, 3, 5, 13, 30, tzinfo=UTC)


async def test_naive_bounds_are_local_to_the_task_zone(repo: TaskRepository) -> None:
    task = await repo.create_task(
        name="x",
        schedule_type="daily",
        schedule_expression="09:00",
        schedule_timezone="America/New_York",
        schedule_start_at="2025-03-10T00:00:00",
        schedule_enabled=True,
    )
    assert task.schedule_start_at == datetime(2025, 3, 10, 4, 0, tzinfo=UTC)  # EDT
    assert task.next_run_at == datetime(2025, 3, 10, 13, 0, tzinfo=UTC)


async def test_once_in_the_past_is_due_now_and_once_disables(repo: TaskRepository) -> None:
    task = await repo.create_task(
        name="x",
        schedule_type="once",
        schedule_expression="2025-03-01T08:00:00Z",
        schedule_enabled=True,
    )
    assert task.next_run_at == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    done = await repo.complete_scheduled(task.id, success=True, result={"ok": 1})
    assert (done.schedule_enabled, done.next_run_at, done.run_count) == (False, None, 1)


async def test_enabling_past_the_end_or_max_runs_is_refused(repo: TaskRepository) -> None:
    with pytest.raises(ValidationError) as caught:
        await repo.create_task(
            name="x",
            schedule_type="daily",
            schedule_expression="09:00",
            schedule_end_at="2025-01-01T00:00:00Z",
            schedule_enabled=True,
        )
    assert caught.value.field == "schedule_end_at"
    task = await repo.create_task(
        name="y", schedule_type="daily", schedule_expression="09:00", max_runs=1
    )
    task = await repo.update_task(task.id, schedule_enabled=True)
    await repo.complete_scheduled(task.id)  # one run: the cap is reached
    assert (await repo.require_task(task.id)).schedule_enabled is False
    with pytest.raises(ValidationError) as caught:
        await repo.update_task(task.id, schedule_enabled=True)
    assert caught.value.field == "max_runs"


async def test_init_from_time_and_disabled_refusal(repo: TaskRepository) -> None:
    task = await repo.create_task(name="x", schedule_type="weekly", schedule_expression="1 09:00")
    with pytest.raises(ValidationError) as caught:
        await repo.init_schedule(task.id)
    assert caught.value.field == "schedule_enabled"
    await repo.update_task(task.id, schedule_enabled=True)
    task = await repo.init_schedule(task.id, from_time="2025-06-01T00:00:00Z")
    assert task.next_run_at == datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
    with pytest.raises(ValidationError) as caught:
        await repo.init_schedule(task.id, from_time="soon")
    assert caught.value.field == "from_time"


# ---------------------------------------------------------------------- the due query


async def make_due(repo: TaskRepository, name: str, **fields) -> Task:
    """A daily 09:00 task whose first occurrence (tomorrow) is moved to the past."""
    return await repo.create_task(
        name=name,
        schedule_type="daily",
        schedule_expression="09:00",
        schedule_enabled=True,
        **fields,
    )


async def test_due_query_honours_every_condition(
    repo: TaskRepository, database: Database, clock: Clock
) -> None:
    due = await make_due(repo, "due", user_id="alice")
    other_user = await make_due(repo, "other-user", user_id="bob")
    running = await make_due(repo, "running", user_id="alice")
    disabled = await make_due(repo, "disabled", user_id="alice")
    capped = await make_due(repo, "capped", user_id="alice", max_runs=5)
    ended = await make_due(repo, "ended", user_id="alice", schedule_end_at="2025-03-20T00:00:00Z")
    await repo.create_task(name="unscheduled", user_id="alice")
    later = await repo.create_task(
        name="later",
        user_id="alice",
        schedule_type="daily",
        schedule_expression="10:00",
        schedule_enabled=True,
    )
    await set_status(database, running.id, "in_progress")
    await repo.update_task(disabled.id, schedule_enabled=False)
    async with database.transaction(write=True) as session:
        # Corrupt rows the way a stale writer could, to prove the query guards them itself.
        await session.execute(update(Task).where(Task.id == capped.id).values(run_count=5))
        await session.execute(
            update(Task)
            .where(Task.id == ended.id)
            .values(schedule_end_at=datetime(2025, 3, 6, 8, 0, tzinfo=UTC))
        )

    clock.now = datetime(2025, 3, 6, 9, 30, tzinfo=UTC)
    names = sorted(t.name for t in await repo.due_tasks())
    assert names == ["due", "other-user"]
    assert [t.name for t in await repo.due_tasks(user_id="alice")] == ["due"]
    assert [t.id for t in await repo.due_tasks(user_id="alice", limit=1)] == [due.id]
    # `before` moves the cutoff: at 10:30 the 10:00 task is due too.
    before = "2025-03-06T10:30:00+00:00"
    assert [t.id for t in await repo.due_tasks(before=before, user_id="alice")] == [
        due.id,
        later.id,
    ]
    assert await repo.due_tasks(before="2025-03-06T08:59:00Z") == []
    assert other_user.id in [t.id for t in await repo.due_tasks()]
    with pytest.raises(ValidationError) as caught:
        await repo.due_tasks(before="2025-03-06T08:59:00")
    assert caught.value.field == "before"


async def test_due_query_respects_jitter(repo: TaskRepository, clock: Clock) -> None:
    task = await make_due(repo, "jittery", schedule_jitter_seconds=600)
    assert task.due_at is not None and task.next_run_at is not None
    delay = task.due_at - task.next_run_at
    assert timedelta(0) <= delay <= timedelta(seconds=600)
    clock.now = task.due_at - timedelta(seconds=1)
    assert await repo.due_tasks() == [] or delay == timedelta(0)
    clock.now = task.due_at
    assert [t.id for t in await repo.due_tasks()] == [task.id]


async def test_scheduled_list_filters(repo: TaskRepository) -> None:
    await make_due(repo, "a", user_id="u1")
    await repo.create_task(
        name="b", user_id="u1", schedule_type="cron", schedule_expression="0 * * * *"
    )
    await repo.create_task(name="c", user_id="u2")
    page = await repo.list_scheduled()
    assert [t.name for t in page.items] == ["a"]
    page = await repo.list_scheduled(enabled_only=False)
    assert sorted(t.name for t in page.items) == ["a", "b"]
    page = await repo.list_scheduled(enabled_only=False, schedule_type="cron")
    assert [t.name for t in page.items] == ["b"]
    page = await repo.list_scheduled(enabled_only=False, user_id="u2")
    assert page.total == 0
    with pytest.raises(ValidationError) as caught:
        await repo.list_scheduled(schedule_type="yearly")
    assert caught.value.field == "schedule_type"


async def test_complete_records_history_and_advances(
    repo: TaskRepository, database: Database, clock: Clock
) -> None:
    task = await make_due(repo, "report")
    clock.now = datetime(2025, 3, 6, 9, 0, 30, tzinfo=UTC)
    done = await repo.complete_scheduled(task.id, success=False, error="boom")
    assert done.status == "failed" and done.error == "boom"
    assert done.run_count == 1
    assert done.next_run_at == datetime(2025, 3, 7, 9, 0, tzinfo=UTC)
    runs = await repo.list_runs(task_id=task.id)
    assert runs.total == 1
    run = runs.items[0]
    assert (run.status, run.trigger, run.scheduled_for) == (
        "failed",
        "api",
        datetime(2025, 3, 6, 9, 0, tzinfo=UTC),
    )
    # The same occurrence reported twice is refused by the history's unique key.
    async with database.transaction(write=True) as session:
        await session.execute(
            update(Task)
            .where(Task.id == task.id)
            .values(next_run_at=datetime(2025, 3, 6, 9, 0, tzinfo=UTC))
        )
    with pytest.raises(ConflictError):
        await repo.complete_scheduled(task.id)
    assert (await repo.list_runs(task_id=task.id)).total == 1


async def test_history_is_pruned_to_the_newest(repo: TaskRepository, clock: Clock) -> None:
    task = await repo.create_task(name="adhoc")
    for minute in range(5):
        clock.now = NOW + timedelta(minutes=minute)
        await repo.complete_scheduled(task.id, calculate_next_run=False)
    runs = await repo.list_runs(task_id=task.id)
    assert runs.total == 3  # run_history_keep=3 in this fixture
    assert [r.started_at for r in runs.items] == [NOW + timedelta(minutes=m) for m in (4, 3, 2)]


async def test_pruning_keeps_running_runs_and_queued_backfill_occurrences(
    repo: TaskRepository, database: Database
) -> None:
    task = await repo.create_task(name="busy")
    rows = [
        run_row(task.id, None, "schedule", NOW - timedelta(minutes=m), status, NOW)
        for m, status in enumerate(["completed"] * 6 + ["running"] + ["queued"] * 5)
    ]
    async with database.transaction(write=True) as session:
        session.add_all([TaskRun(**row) for row in rows])
    async with database.transaction(write=True) as session:
        await prune_runs(session, [task.id], keep=2)
    async with database.transaction() as session:
        kept = list(await session.scalars(select(TaskRun.status).where(TaskRun.task_id == task.id)))
    assert sorted(kept) == ["completed"] * 2 + ["queued"] * 5 + ["running"]


async def test_runs_cascade_with_task(repo: TaskRepository, database: Database) -> None:
    task = await repo.create_task(name="adhoc")
    await repo.complete_scheduled(task.id)
    await repo.delete_task(task.id)
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(TaskRun)) == 0


# ---------------------------------------------------------------------- bounded trees


def chain(levels: int, *, root: str = "level0") -> list[dict[str, Any]]:
    """A tree that is one path: `levels` levels deep."""
    specs: list[dict[str, Any]] = [{"name": root}]
    specs += [{"name": f"level{i}", "parent_id": f"level{i - 1}"} for i in range(1, levels)]
    return specs


async def test_a_tree_is_at_most_a_hundred_levels_deep(repo: TaskRepository) -> None:
    created = await repo.create_tasks(chain(MAX_TREE_DEPTH))
    with pytest.raises(ValidationError) as too_deep:
        await repo.create_tasks(chain(MAX_TREE_DEPTH + 1, root="other"))
    assert too_deep.value.field == "tasks"
    # one more level under the deepest task of the existing tree
    with pytest.raises(ValidationError) as under:
        await repo.create_task(name="deeper", parent_id=created[-1].id)
    assert under.value.field == "parent_id"
    assert "100 levels" in under.value.reason
    assert (await repo.list_tasks(limit=1000)).total == MAX_TREE_DEPTH
    # the whole tree still reads, and deletes, in one piece
    tree = await repo.get_tree(created[-1].id)
    assert tree.task.id == created[0].id
    assert len(await repo.delete_task(created[0].id)) == MAX_TREE_DEPTH


async def test_a_tree_holds_at_most_a_thousand_tasks(repo: TaskRepository) -> None:
    wide = [{"name": "root"}] + [{"name": f"k{i}", "parent_id": "root"} for i in range(998)]
    root = (await repo.create_tasks(wide))[0]
    await repo.create_task(name="the thousandth", parent_id=root.id)
    with pytest.raises(ValidationError) as full:
        await repo.create_task(name="one too many", parent_id=root.id)
    assert full.value.field == "parent_id"
    with pytest.raises(ValidationError) as batch:
        await repo.create_tasks(
            [{"name": "r"}] + [{"name": f"x{i}", "parent_id": "r"} for i in range(1000)]
        )
    assert batch.value.field == "tasks"
    assert (await repo.list_tasks(limit=1000, offset=0)).total == MAX_TREE_TASKS


async def test_a_long_chain_of_dependencies_is_checked_without_recursion(
    repo: TaskRepository,
) -> None:
    """Each sibling depends on the next: the cycle check walks 900 links deep."""
    siblings = [
        {"name": f"s{i}", "parent_id": "root", "dependencies": [f"s{i + 1}"] if i < 899 else []}
        for i in range(900)
    ]
    created = await repo.create_tasks([{"name": "root"}, *siblings])
    assert len(created) == 901
    siblings[-1]["dependencies"] = ["s0"]
    with pytest.raises(ValidationError) as cycle:
        await repo.create_tasks([{"name": "root"}, *siblings])
    assert "cycle" in cycle.value.reason
