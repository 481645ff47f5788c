"""Opening the database: engines, transactions and the schema version.

SQLite is the embedded default. It runs in WAL mode with a busy timeout, and write
transactions start with BEGIN IMMEDIATE: a deferred transaction that reads and then writes can
fail at once with "database is locked" when another process wrote in between, whereas an
immediate one waits its turn (busy_timeout) and then sees the latest data.

PostgreSQL connections are pooled. A pooled connection that sat idle for a while is pinged
before use (`_install_stale_check`), so a database restart costs no request; one that was in
use a moment ago is not, because SQLAlchemy's ping is three round trips (BEGIN, `;`,
ROLLBACK) and cost a quarter of a `tasks.get`. A connection that dies while busy fails its
statement once; SQLAlchemy then drops every pooled connection older than the failure.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from apflow_server.config import Settings, ensure_folder, normalise_database_url
from apflow_server.core.errors import ApflowError
from apflow_server.storage.postgres_url import PostgresTarget, postgres_target

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATION_LOCK = 0x61706C6F77  # "aplow": the advisory lock that serialises migrations
# A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


class DatabaseError(ApflowError):
    """The database cannot be used as it is (unreachable, or its schema is out of date)."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _install_stale_check(engine: AsyncEngine) -> None:
    """pool_pre_ping, for connections that sat idle: a failed ping makes the pool replace the
    connection (DisconnectionError) before anyone uses it."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def _through_transaction_pooler(target: PostgresTarget) -> tuple[URL, dict[str, Any]]:
    """Connection settings for PgBouncer in transaction pooling, where consecutive
    transactions of one client may run on different server connections.

    asyncpg prepares every statement (parse and describe, one round trip) before it binds and
    runs it (another). PgBouncer gives the server connection back to its pool at the end of
    each transaction, and outside a transaction that is between those two round trips: the
    statement was prepared on one server connection and run on another, which failed ("does
    not exist") or, for an unnamed statement, ran whatever that connection had last prepared.
    So behind a pooler every statement runs inside a transaction (`Database.read` opens one),
    and nothing is kept prepared from one transaction to the next: asyncpg's statement cache
    and SQLAlchemy's are off, and statements are unnamed, each replacing the last on its
    server connection. (Named ones had to be closed afterwards, a round trip of their own that
    often reached another server connection and left the statement behind on the first: 250
    of them per server connection in a few seconds of load.) No start-up parameters besides
    the ones PgBouncer passes on, so no `jit=off`: set it on the database (`ALTER DATABASE ...
    SET jit = off`)."""
    if target.server_settings.keys() - _POOLER_PARAMETERS:
        raise DatabaseError(
            "behind a transaction pooler the URL cannot set start-up parameters "
            f"({', '.join(sorted(target.server_settings))}): set them on the database "
            "(ALTER DATABASE ... SET) instead"
        )
    url = target.url.update_query_dict({"prepared_statement_cache_size": "0"})
    connect_args = target.connect_args()
    connect_args["statement_cache_size"] = 0
    return url, connect_args


# Start-up parameters PgBouncer forwards (the others make it refuse the connection).
_POOLER_PARAMETERS = frozenset({"application_name"})


class Database:
    """An engine plus the transaction helpers every storage module uses."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        pooler: str = "none",
        listen_url: str | None = None,
    ) -> None:
        self.url = normalise_database_url(url)
        self.pooler = pooler
        self.listen_url = listen_url
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                ensure_folder(
                    Path(database).expanduser().parent,
                    "the SQLite database's folder (APFLOW_HOME, or APFLOW_DATABASE_URL's path)",
                )
            self.engine = create_async_engine(self.url, pool_size=pool_size, max_overflow=0)
            _install_sqlite_hooks(self.engine)
        elif self.dialect == "postgresql":
            target = postgres_target(parsed)  # sslmode=..., application_name=..., ...
            if pooler == "transaction":
                url_or_target, connect_args = _through_transaction_pooler(target)
            else:
                url_or_target = target.url
                # Our statements are short and prepared once. PostgreSQL's generic plan for
                # the claim assumes a third of the table is due, which crosses
                # jit_above_cost, and JIT-compiling it took 11 ms for a query that runs in
                # 0.1 ms.
                connect_args = target.connect_args(server_settings={"jit": "off"})
            self.engine = create_async_engine(
                url_or_target,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args=connect_args,
            )
            _install_stale_check(self.engine)
        else:
            raise DatabaseError(
                f"unsupported database {parsed.drivername!r}: use sqlite:// or postgresql://"
            )

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int = 10) -> Database:
        return cls(
            settings.database_url,
            pool_size=pool_size,
            pooler=settings.database_pooler,
            listen_url=settings.database_listen_url,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            if write and self.is_sqlite:
                connection = await connection.execution_options(sqlite_begin="IMMEDIATE")
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for a read that is a single statement. On PostgreSQL it runs in autocommit
        (one statement is atomic on its own), which spares the BEGIN and COMMIT round trips:
        a third of what `tasks.get` cost. Reads of several statements that must agree use
        `transaction()`, which sees one snapshot. Behind a transaction pooler a statement
        must run inside a transaction (see `_through_transaction_pooler`)."""
        if self.is_sqlite or self.pooler == "transaction":  # SQLite: no round trip to spare
            async with self.transaction() as session:
                yield session
            return
        async with self.engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                yield session

    @asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success and rolled back on error."""
        async with self.connect(write=write) as connection:
            async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                async with session.begin():
                    yield session

    async def dispose(self) -> None:
        await self.engine.dispose()

    # ------------------------------------------------------------------ schema

    async def current_revision(self) -> str | None:
        try:
            async with self.connect() as connection:
                result = await connection.execute(text("SELECT version_num FROM alembic_version"))
                return result.scalar_one_or_none()
        except (OperationalError, ProgrammingError) as exc:
            if "alembic_version" in str(exc):
                return None
            raise DatabaseError(unreachable(exc)) from None
        except (DBAPIError, OSError) as exc:
            raise DatabaseError(unreachable(exc)) from None

    @staticmethod
    async def _check_listen_url(url: str) -> None:
        """The direct connection schedulers LISTEN on answers (a start-up check: a wrong
        one would leave them deaf to changes, silently)."""
        dsn, arguments = postgres_target(make_url(url)).own_connection()
        arguments.setdefault("timeout", 10)
        try:
            connection = await asyncpg.connect(dsn, **arguments)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseError(
                f"cannot reach APFLOW_DATABASE_LISTEN_URL: {failure_reason(exc)}"
            ) from None
        await connection.close()

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to `revision` in one transaction.

        Several replicas may start at once and each migrate: on PostgreSQL a transaction-level
        advisory lock makes them take turns (the later ones find the schema current); SQLite's
        BEGIN IMMEDIATE does the same there.
        """
        async with self.connect(write=True) as connection:
            async with connection.begin():
                if self.dialect == "postgresql":
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                await connection.run_sync(_run_upgrade, revision)

    async def ensure_schema(self) -> None:
        """Bring SQLite up to date; require PostgreSQL to be migrated explicitly.

        The embedded file belongs to this installation, so it migrates itself. A shared
        PostgreSQL database is migrated by an operator (`apflow db upgrade`), once, not by
        whichever replica happens to start first.
        """
        current = await self.current_revision()
        if self.listen_url is not None:
            await self._check_listen_url(self.listen_url)
        if current == head_revision():
            return
        if current is not None and not _known_revision(current):
            raise DatabaseError(
                f"the database is at revision {current}, which this apflow-server does not know "
                f"(its newest is {head_revision()}): it was migrated by a newer release; "
                "upgrade apflow-server"
            )
        if self.is_sqlite:
            await self.upgrade()
            return
        state = "has no schema" if current is None else f"is at revision {current}"
        raise DatabaseError(
            f"the database {state}; run `apflow db upgrade` to migrate it to {head_revision()}"
        )


def _known_revision(revision: str) -> bool:
    scripts = ScriptDirectory.from_config(alembic_config())
    return any(script.revision == revision for script in scripts.walk_revisions())


def _run_upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def unreachable(exc: BaseException) -> str:
    """The line for a database that cannot be used, with the setting a known cause needs."""
    reason = failure_reason(exc)
    if "unsupported startup parameter" in reason:
        # PgBouncer refusing the start-up parameters a direct connection is given.
        reason += " (behind PgBouncer? set APFLOW_DATABASE_POOLER=transaction)"
    return f"cannot reach the database: {reason}"


def failure_reason(exc: BaseException) -> str:
    """The driver's first line about a failure: no SQL, no parameters (they may hold task data)."""
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(exc).__name__
