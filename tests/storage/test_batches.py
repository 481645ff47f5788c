"""Batch updates and `among` on SQLite and PostgreSQL: the two code paths write the same rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from apflow_server.config import Settings
from apflow_server.storage.batches import (
    among,
    insert_all_then_update,
    insert_rows,
    update_rows,
    update_rows_where,
)
from apflow_server.storage.database import Database
from apflow_server.storage.models import RUNS, TASKS
from apflow_server.storage.repository import TaskRepository

WHEN = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)


@pytest.fixture
async def three(database: Database, tmp_path: Path) -> list[str]:
    repo = TaskRepository(database, settings=Settings(home=tmp_path, database_url=database.url))
    return [(await repo.create_task(name=f"t{index}")).id for index in range(3)]


async def read(database: Database, *columns: str) -> dict[str, tuple[Any, ...]]:
    async with database.transaction() as session:
        rows = await session.execute(select(TASKS.c.id, *(TASKS.c[c] for c in columns)))
        return {row[0]: tuple(row[1:]) for row in rows}


async def test_update_rows_writes_each_row_its_own_values(
    database: Database, three: list[str]
) -> None:
    first, second, untouched = three
    before = await read(database, "status", "result", "completed_at", "run_count")
    columns = ("status", "result", "completed_at", "run_count", "progress", "schedule_enabled")
    rows = [
        {
            "id": first,
            "status": "completed",
            "result": {"nested": [1, "two", None], "ü": "ok"},
            "completed_at": WHEN,
            "run_count": 7,
            "progress": 1.0,
            "schedule_enabled": True,
        },
        {
            "id": second,
            "status": "failed",
            "result": None,
            "completed_at": WHEN + timedelta(hours=1),
            "run_count": 0,
            "progress": 0.25,
            "schedule_enabled": False,
        },
    ]
    async with database.transaction(write=True) as session:
        await update_rows(session, TASKS, "id", columns, rows)
    after = await read(database, *columns)
    nested = {"nested": [1, "two", None], "ü": "ok"}
    assert after[first] == ("completed", nested, WHEN, 7, 1.0, True)
    assert after[second] == ("failed", None, WHEN + timedelta(hours=1), 0, 0.25, False)
    assert after[second][2].tzinfo is not None
    assert (await read(database, "status", "result", "completed_at", "run_count"))[
        untouched
    ] == before[untouched]


async def test_update_rows_with_nothing_to_write_changes_nothing(
    database: Database, three: list[str]
) -> None:
    before = await read(database, "status", "updated_at")
    async with database.transaction(write=True) as session:
        await update_rows(session, TASKS, "id", ("status",), [])
    assert await read(database, "status", "updated_at") == before


async def test_update_rows_refuses_a_column_the_table_lacks(
    database: Database, three: list[str]
) -> None:
    with pytest.raises(KeyError):
        async with database.transaction(write=True) as session:
            await update_rows(session, TASKS, "id", ("nope",), [{"id": three[0], "nope": 1}])
    assert (await read(database, "status"))[three[0]] == ("pending",)


@pytest.mark.parametrize("picked", [0, 1, 3])
async def test_among_matches_exactly_the_given_values(
    database: Database, three: list[str], picked: int
) -> None:
    wanted = set(three[:picked])
    async with database.transaction() as session:
        query = select(TASKS.c.id).where(among(TASKS.c.id, [*wanted, "missing"], database.dialect))
        assert set(await session.scalars(query)) == wanted
        none = select(TASKS.c.id).where(among(TASKS.c.id, [], database.dialect))
        assert list(await session.scalars(none)) == []


def run_row(
    run_id: str, task_id: str, scheduled_for: datetime | None, result: Any
) -> dict[str, Any]:
    return {
        "id": run_id,
        "task_id": task_id,
        "trigger": "schedule",
        "scheduled_for": scheduled_for,
        "status": "completed",
        "attempt": 1,
        "result": result,
        "created_at": WHEN,
    }


async def test_insert_rows_skips_collisions_and_returns_only_the_rows_inserted(
    database: Database, three: list[str]
) -> None:
    task = three[0]
    unique = ("task_id", "scheduled_for")
    async with database.transaction(write=True) as session:
        first = await insert_rows(
            session,
            RUNS,
            [run_row("r1", task, WHEN, {"a": [1, None]}), run_row("r2", task, None, None)],
            unique=unique,
            returning=("task_id", "id"),
        )
    assert sorted(first) == [(task, "r1"), (task, "r2")]
    async with database.transaction(write=True) as session:
        second = await insert_rows(
            session,
            RUNS,
            [run_row("r3", task, WHEN, "again"), run_row("r4", task, None, 5)],
            unique=unique,
            returning=("id",),
        )
        # NULL occurrences (ad-hoc runs) never collide; the same occurrence does.
        assert second == [("r4",)]
        assert (
            await insert_rows(session, RUNS, [run_row("r5", three[1], WHEN, 1)], unique=unique)
            == []
        )
    async with database.transaction() as session:
        stored = {
            row.id: (row.task_id, row.scheduled_for, row.result)
            for row in await session.execute(
                select(RUNS.c.id, RUNS.c.task_id, RUNS.c.scheduled_for, RUNS.c.result)
            )
        }
    assert stored == {
        "r1": (task, WHEN, {"a": [1, None]}),
        "r2": (task, None, None),
        "r4": (task, None, 5),
        "r5": (three[1], WHEN, 1),
    }


async def test_insert_rows_refuses_a_column_the_table_lacks(database: Database) -> None:
    async with database.transaction(write=True) as session:
        with pytest.raises(KeyError):
            await insert_rows(session, RUNS, [{"id": "x", "nope": 1}], unique=("id",))
        assert await insert_rows(session, RUNS, [], unique=("id",)) == []


async def test_insert_all_then_update_writes_both_when_every_row_is_new(
    database: Database, three: list[str]
) -> None:
    first, second, untouched = three
    rows = [run_row("n1", first, WHEN, {"x": 1}), run_row("n2", second, WHEN, None)]
    updates = [
        {"id": first, "status": "in_progress", "result": {"y": [2]}},
        {"id": second, "status": "in_progress", "result": None},
    ]
    async with database.transaction(write=True) as session:
        written = await insert_all_then_update(
            session,
            RUNS,
            rows,
            unique=("task_id", "scheduled_for"),
            then=TASKS,
            key="id",
            columns=("status", "result"),
            updates=updates,
        )
    assert written is True
    tasks = await read(database, "status", "result")
    assert tasks[first] == ("in_progress", {"y": [2]})
    assert tasks[second] == ("in_progress", None)
    assert tasks[untouched] == ("pending", None)
    async with database.transaction() as session:
        runs = dict((await session.execute(select(RUNS.c.id, RUNS.c.result))).all())
    assert runs == {"n1": {"x": 1}, "n2": None}


async def test_insert_all_then_update_updates_nothing_when_a_row_collides(
    database: Database, three: list[str]
) -> None:
    first, second, _ = three
    async with database.transaction(write=True) as session:
        await insert_rows(session, RUNS, [run_row("old", second, WHEN, None)], unique=("id",))
    async with database.transaction(write=True) as session:
        written = await insert_all_then_update(
            session,
            RUNS,
            [run_row("n1", first, WHEN, None), run_row("n2", second, WHEN, None)],
            unique=("task_id", "scheduled_for"),
            then=TASKS,
            key="id",
            columns=("status",),
            updates=[{"id": first, "status": "failed"}, {"id": second, "status": "failed"}],
        )
        assert written is False
        # No task was written; the caller decides what to do with the rows that went in.
        assert set((await read_in(session, "status")).values()) == {("pending",)}
        await session.rollback()
    async with database.transaction() as session:
        assert list(await session.scalars(select(RUNS.c.id))) == ["old"]


async def test_insert_all_then_update_with_no_rows_is_an_update(
    database: Database, three: list[str]
) -> None:
    async with database.transaction(write=True) as session:
        assert await insert_all_then_update(
            session,
            RUNS,
            [],
            unique=("task_id", "scheduled_for"),
            then=TASKS,
            key="id",
            columns=("status",),
            updates=[{"id": three[0], "status": "cancelled"}],
        )
    assert (await read(database, "status"))[three[0]] == ("cancelled",)


async def read_in(session: Any, *columns: str) -> dict[str, tuple[Any, ...]]:
    rows = await session.execute(select(TASKS.c.id, *(TASKS.c[c] for c in columns)))
    return {row[0]: tuple(row[1:]) for row in rows}


async def test_update_rows_where_writes_only_the_rows_that_still_match(
    database: Database, three: list[str]
) -> None:
    first, second, third = three
    async with database.transaction(write=True) as session:
        await update_rows(
            session,
            TASKS,
            "id",
            ("status", "error"),
            [
                {"id": first, "status": "in_progress", "error": None},
                {"id": second, "status": "completed", "error": None},
                {"id": third, "status": "in_progress", "error": None},
            ],
        )
    rows = [{"id": task, "status": "failed", "error": {"why": task}} for task in (first, second)]
    rows.append({"id": "missing", "status": "failed", "error": None})
    async with database.transaction(write=True) as session:
        updated = await update_rows_where(
            session,
            TASKS,
            "id",
            ("status", "result"),
            [{"id": r["id"], "status": r["status"], "result": r["error"]} for r in rows],
            where={"status": "in_progress", "name": "t0"},
        )
    assert updated == {first}
    after = await read(database, "status", "result")
    assert after[first] == ("failed", {"why": first})
    assert after[second] == ("completed", None)  # no longer in_progress: left alone
    assert after[third] == ("in_progress", None)  # not named
    async with database.transaction(write=True) as session:
        assert (
            await update_rows_where(
                session, TASKS, "id", ("status",), [], where={"status": "failed"}
            )
            == set()
        )


@pytest.mark.parametrize("where", [{"status": None}, {"result": {"a": 1}}])
async def test_update_rows_where_refuses_what_the_databases_compare_differently(
    database: Database, three: list[str], where: dict[str, Any]
) -> None:
    async with database.transaction(write=True) as session:
        with pytest.raises(ValueError):
            await update_rows_where(
                session, TASKS, "id", ("status",), [{"id": three[0], "status": "x"}], where=where
            )
