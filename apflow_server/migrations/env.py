"""Alembic environment: runs on a connection handed over by `Database.upgrade`, or on its own
when invoked as `alembic upgrade head` (then APFLOW_DATABASE_URL / APFLOW_HOME decide)."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from apflow_server.storage.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    from apflow_server.config import Settings

    context.configure(
        url=Settings.from_env().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    from apflow_server.config import Settings
    from apflow_server.storage.database import Database

    database = Database.from_settings(Settings.from_env())
    try:
        async with database.connect(write=True) as connection:
            async with connection.begin():
                await connection.run_sync(_run)
    finally:
        await database.dispose()


def _log_as_configured() -> None:
    """Plain `alembic` logs as alembic.ini says (each migration it runs, at INFO); under
    `Database.upgrade` the service's own logging stays as it is."""
    if context.config.config_file_name is not None:
        fileConfig(context.config.config_file_name, disable_existing_loggers=False)


if context.is_offline_mode():
    _log_as_configured()
    run_migrations_offline()
elif (connection := context.config.attributes.get("connection")) is not None:
    _run(connection)
else:
    _log_as_configured()
    asyncio.run(_run_standalone())
