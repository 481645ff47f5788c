"""`apflow db ...`: the database schema."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from apflow_server.storage.database import Database, head_revision

from . import output
from .runtime import run_with_database


@click.group("db")
def db_group() -> None:
    """The database schema (Alembic migrations)."""


@db_group.command("upgrade")
def upgrade() -> None:
    """Migrate the database (APFLOW_DATABASE_URL, else APFLOW_HOME/apflow.db) to the latest
    schema. Run it once after installing or upgrading, before starting servers on PostgreSQL."""

    async def work(database: Database) -> tuple[str, str | None, str | None]:
        where = make_url(database.url).render_as_string(hide_password=True)
        before = await database.current_revision()
        with output.console(stderr=True).status(f"Migrating {where} ..."):
            await database.upgrade()
        return where, before, await database.current_revision()

    where, before, after = run_with_database(work)
    if before == after:
        output.line(f"Database {where} is already at revision {after} (the latest).")
    else:
        origin = f"revision {before}" if before else "an empty database"
        latest = " (the latest)" if after == head_revision() else ""
        output.line(f"Database {where} upgraded from {origin} to revision {after}{latest}.")
