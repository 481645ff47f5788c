"""Writing a batch of rows (inserts, and updates each by its key) in one statement.

Claiming and finishing runs write a hundred task and run rows per transaction. An executemany
is the portable way, and on SQLite (in process) it is cheap. On PostgreSQL an executemany
UPDATE is one statement per row, and a multi-row INSERT is rendered anew (1,500 parameters)
for every batch size. There a batch goes as one statement whose text depends only on the
columns, `... unnest($1::type[], $2::type[], ...)` with one array per column, so asyncpg
prepares it once and SQLAlchemy processes no per-row parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, any_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

KEY = "batch_key"


async def update_rows(
    session: AsyncSession,
    table: Table,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Set `columns` of each row whose `key` column equals the row's `key` value."""
    names = tuple(columns)
    _check_columns(table, (key, *names))
    if not rows:
        return
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        arrays = [_column_values(table, name, rows) for name in (key, *names)]
        await connection.exec_driver_sql(_unnest_update(table, key, names), tuple(arrays))
        return
    statement = update(table).where(table.c[key] == bindparam(KEY))
    await session.execute(
        statement, [{KEY: row[key], **{name: row[name] for name in names}} for row in rows]
    )


async def update_rows_where(
    session: AsyncSession,
    table: Table,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    where: Mapping[str, Any],
) -> set[Any]:
    """As `update_rows`, but only the rows whose `where` columns hold those values (checked
    under the row's lock, on its latest version); the keys of the rows it updated. On
    PostgreSQL one statement (UPDATE ... RETURNING), where a SELECT ... FOR UPDATE and then
    the UPDATE took two round trips."""
    names = tuple(columns)
    _check_columns(table, (key, *names, *where))
    for name, value in where.items():  # `=` alike on both databases: no NULL, no JSON
        if value is None or isinstance(table.c[name].type, JSON):
            raise ValueError(f"cannot compare {table.name}.{name} with {value!r}")
    if not rows:
        return set()
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        arrays = [_column_values(table, name, rows) for name in (key, *names)]
        conditions = tuple(where)
        statement = _unnest_update(table, key, names, conditions=conditions)
        values = (*arrays, *(where[name] for name in conditions))
        result = await connection.exec_driver_sql(statement, values)
        return {row[0] for row in result}
    matching = select(table.c[key]).where(
        table.c[key].in_([row[key] for row in rows]),
        *(table.c[name] == value for name, value in where.items()),
    )
    wanted = set(await session.scalars(matching))
    await update_rows(session, table, key, columns, [row for row in rows if row[key] in wanted])
    return wanted


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    unique: Sequence[str],
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert rows (all with the same keys), skipping any that collide on the `unique`
    columns; the `returning` columns of the rows inserted."""
    if not rows:
        return []
    names = tuple(rows[0])
    _check_columns(table, (*names, *unique, *returning))
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        arrays = tuple(_column_values(table, name, rows) for name in names)
        statement = _unnest_insert(table, names, tuple(unique), tuple(returning))
        result = await connection.exec_driver_sql(statement, arrays)
        return [tuple(row) for row in result] if returning else []
    insert = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(unique))
    if returning:
        inserted = await session.execute(insert.returning(*(table.c[n] for n in returning)), rows)
        return [tuple(row) for row in inserted]
    await session.execute(insert, rows)
    return []


async def insert_all_then_update(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    unique: Sequence[str],
    then: Table,
    key: str,
    columns: Sequence[str],
    updates: Sequence[Mapping[str, Any]],
) -> bool:
    """Insert `rows` and, only if none of them collided on the `unique` columns, update
    `updates` (as `update_rows`). True when both were written; False when a row collided:
    then the inserted rows are written but no update is, and the caller rolls back.

    On PostgreSQL this is one statement (an INSERT and an UPDATE in data-modifying CTEs,
    the UPDATE conditioned on the INSERT's count): one round trip less than the two it
    replaces, two less through a pooler that prepares every statement again."""
    if not rows:
        await update_rows(session, then, key, columns, updates)
        return True
    names, updated = tuple(rows[0]), tuple(columns)
    _check_columns(table, (*names, *unique))
    _check_columns(then, (key, *updated))
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        inserted = await insert_rows(session, table, rows, unique=unique, returning=unique)
        if len(inserted) != len(rows):
            return False
        await update_rows(session, then, key, columns, updates)
        return True
    arrays = [_column_values(table, name, rows) for name in names]
    arrays += [_column_values(then, name, updates) for name in (key, *updated)]
    statement = _insert_then_update(table, names, tuple(unique), then, key, updated)
    result = await connection.exec_driver_sql(statement, (*arrays, len(rows)))
    return bool(result.scalar_one())


def among(column: ColumnElement[Any], values: Iterable[Any], dialect: str) -> ColumnElement[bool]:
    """`column IN (values)`. On PostgreSQL written `column = ANY($1)` with one array parameter:
    the statement is then the same for any number of values, compiled and prepared once, where
    an IN list is rendered anew for every length."""
    listed = list(values)
    if dialect == "postgresql":
        return column == any_(bindparam(None, listed, type_=postgresql.ARRAY(column.type)))
    return column.in_(listed)


def _check_columns(table: Table, names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in table.c]
    if unknown:
        raise KeyError(f"{table.name} has no column {unknown[0]!r}")


def _column_values(table: Table, name: str, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    if isinstance(table.c[name].type, JSON):  # sent as text, cast back in the statement
        return [json.dumps(row[name]) for row in rows]
    return [row[name] for row in rows]


_PG = postgresql.base.PGDialect()  # type: ignore[no-untyped-call]
_quote = _PG.identifier_preparer.quote


def _arrays(table: Table, names: Sequence[str], first: int = 1) -> str:
    """`unnest($1::type[], ...) AS v(name, ...)`, numbered from $`first`; JSON travels as
    text."""

    def element_type(name: str) -> str:
        column_type = table.c[name].type
        return "TEXT" if isinstance(column_type, JSON) else column_type.compile(dialect=_PG)

    arrays = ", ".join(
        f"${index}::{element_type(name)}[]" for index, name in enumerate(names, start=first)
    )
    return f"unnest({arrays}) AS v({', '.join(_quote(name) for name in names)})"


def _value(table: Table, name: str) -> str:
    cast = "::json" if isinstance(table.c[name].type, JSON) else ""
    return f"v.{_quote(name)}{cast}"


# The statements below are built from the table's own metadata (every name is checked against
# table.c first), never from input; the values travel as parameters.


@lru_cache(maxsize=32)
def _unnest_update(
    table: Table,
    key: str,
    names: tuple[str, ...],
    first: int = 1,
    conditions: tuple[str, ...] = (),
) -> str:
    """With `conditions`, only rows whose those columns equal the parameters after the
    arrays, returning the keys updated."""
    assignments = ", ".join(f"{_quote(name)} = {_value(table, name)}" for name in names)
    target, matched = _quote(table.name), _quote(key)
    source = _arrays(table, (key, *names), first)
    statement = (
        f"UPDATE {target} AS t SET {assignments} FROM {source} WHERE t.{matched} = v.{matched}"  # noqa: S608
    )
    if conditions:
        after = first + len(names) + 1
        # No cast: the parameter takes the column's type (a cast to VARCHAR(n) would cut a
        # longer value down to one that might match).
        statement += "".join(
            f" AND t.{_quote(name)} = ${index}"
            for index, name in enumerate(conditions, start=after)
        )
        statement += f" RETURNING t.{matched}"
    return statement


@lru_cache(maxsize=32)
def _unnest_insert(
    table: Table, names: tuple[str, ...], unique: tuple[str, ...], returning: tuple[str, ...]
) -> str:
    columns = ", ".join(_quote(name) for name in names)
    values = ", ".join(_value(table, name) for name in names)
    conflict = ", ".join(_quote(name) for name in unique)
    statement = (
        f"INSERT INTO {_quote(table.name)} ({columns}) "  # noqa: S608
        f"SELECT {values} FROM {_arrays(table, names)} "
        f"ON CONFLICT ({conflict}) DO NOTHING"
    )
    if returning:
        statement += " RETURNING " + ", ".join(_quote(name) for name in returning)
    return statement


@lru_cache(maxsize=32)
def _insert_then_update(
    table: Table,
    names: tuple[str, ...],
    unique: tuple[str, ...],
    then: Table,
    key: str,
    updated: tuple[str, ...],
) -> str:
    """The INSERT and the UPDATE run on one snapshot; the UPDATE's condition reads the
    INSERT's RETURNING (a CTE's output), so it applies only when every row went in. (A
    data-modifying CTE runs whether or not it is read.) The count of rows expected is the
    last parameter."""
    insert = _unnest_insert(table, names, unique, (unique[0],))
    update = _unnest_update(then, key, updated, first=len(names) + 1)
    expected = len(names) + len(updated) + 2
    return (
        f"WITH inserted AS ({insert}), "  # noqa: S608
        f"updated AS ({update} AND (SELECT count(*) FROM inserted) = ${expected}::bigint) "
        f"SELECT (SELECT count(*) FROM inserted) = ${expected}::bigint"
    )
