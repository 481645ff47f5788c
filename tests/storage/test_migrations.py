"""The migrations produce exactly the schema the models describe, on both databases."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from apflow_server.storage.database import Database, head_revision
from apflow_server.storage.models import Base

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


async def test_schema_matches_models_and_is_at_head(database: Database) -> None:
    def diff(connection):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(connection)
        return compare_metadata(context, Base.metadata)

    async with database.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []
    assert await database.current_revision() == head_revision()


async def test_fresh_postgres_refuses_until_upgraded(fresh_postgres_url: str) -> None:
    import pytest

    from apflow_server.storage.database import DatabaseError

    database = Database(fresh_postgres_url)
    try:
        with pytest.raises(DatabaseError, match="apflow db upgrade"):
            await database.ensure_schema()
        await database.upgrade()
        await database.ensure_schema()
        assert await database.current_revision() == head_revision()
    finally:
        await database.dispose()


async def test_a_database_from_a_newer_release_is_named_as_such(database: Database) -> None:
    """A schema migrated by a newer apflow-server: one clear line, not Alembic's 'Can't locate
    revision' as an internal error; nothing is changed."""
    import pytest
    from sqlalchemy import text

    from apflow_server.storage.database import DatabaseError

    async with database.connect(write=True) as connection:
        async with connection.begin():
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    try:
        with pytest.raises(DatabaseError) as refused:
            await database.ensure_schema()
        assert str(refused.value) == (
            "the database is at revision 9999, which this apflow-server does not know (its "
            f"newest is {head_revision()}): it was migrated by a newer release; upgrade "
            "apflow-server"
        )
        assert await database.current_revision() == "9999"
    finally:
        async with database.connect(write=True) as connection:
            async with connection.begin():
                await connection.execute(
                    text("UPDATE alembic_version SET version_num = :head"),
                    {"head": head_revision()},
                )


def test_plain_alembic_migrates_and_says_what_it_ran(tmp_path: Path) -> None:
    """`alembic -c <checkout>/alembic.ini upgrade head` from any folder: it migrates the
    database APFLOW_HOME names and logs each migration (env.py reads the file's logging)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APFLOW_")}
    env["APFLOW_HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "-c", str(ALEMBIC_INI), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stderr, result.stderr
    assert "Running upgrade 0010 -> 0011" in result.stderr
    with sqlite3.connect(tmp_path / "home" / "apflow.db") as db:
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == head_revision()
