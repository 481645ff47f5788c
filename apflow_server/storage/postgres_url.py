"""The options of a PostgreSQL URL, as libpq tools write them, turned into asyncpg's arguments.

Managed databases and psql hand out URLs such as
`postgresql://app@db/app?sslmode=require&application_name=apflow`. SQLAlchemy passes every
query option to `asyncpg.connect` as a keyword argument, and asyncpg has no `sslmode`
keyword, so such a URL failed on first use with a TypeError. Here each understood option goes
where asyncpg expects it:

- `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslcrl`: into a query-only `dsn` argument.
  asyncpg applies libpq's rules to these (what each mode verifies, which default files it
  reads) only when they come in a DSN; host, user and database still come from the URL.
- `application_name`, `options`: startup parameters (`server_settings`), as libpq sends them.
- `connect_timeout`: asyncpg's `timeout`, in seconds.

`ssl` (asyncpg's own keyword, which such URLs used before the libpq names were understood)
is read as `sslmode`. `host`, `port` and `prepared_statement_cache_size` stay in the URL:
SQLAlchemy's asyncpg dialect reads them itself (a socket directory, several hosts, its
statement cache). Any other option is refused by name, before anything connects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.engine import URL

from apflow_server.core.errors import ApflowError

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
SSL_OPTIONS = ("sslmode", *SSL_FILES)
STARTUP_OPTIONS = ("application_name", "options")
TIMEOUT_OPTION = "connect_timeout"
SQLALCHEMY_OPTIONS = ("host", "port", "prepared_statement_cache_size")
SSLMODE_ALIAS = "ssl"
UNDERSTOOD = (
    *SSL_OPTIONS,
    *STARTUP_OPTIONS,
    TIMEOUT_OPTION,
    *SQLALCHEMY_OPTIONS,
    SSLMODE_ALIAS,
)
SETTING = "APFLOW_DATABASE_URL"


class DatabaseUrlError(ApflowError):
    """A PostgreSQL URL option that cannot be used; the message names it."""


@dataclass(frozen=True)
class PostgresTarget:
    """Where and how to connect: `url` without the options handled here, plus asyncpg's
    arguments for them."""

    url: URL
    ssl_query: dict[str, str] = field(default_factory=dict)
    server_settings: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None

    def connect_args(self, server_settings: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for `asyncpg.connect` (SQLAlchemy's `connect_args`), with
        `server_settings` of the caller's own under the URL's."""
        args: dict[str, Any] = {
            "server_settings": {**(server_settings or {}), **self.server_settings}
        }
        if self.ssl_query:
            args["dsn"] = "postgresql://?" + urlencode(self.ssl_query)
        if self.timeout is not None:
            args["timeout"] = self.timeout
        return args

    def own_connection(self) -> tuple[str, dict[str, Any]]:
        """The DSN and keyword arguments for a connection asyncpg opens by itself (the
        schedule listener, the start-up check of a listen URL)."""
        arguments = self.connect_args()
        arguments.pop("dsn", None)  # its SSL options are in the DSN
        return self.asyncpg_dsn(), arguments

    def asyncpg_dsn(self) -> str:
        """The DSN for a connection asyncpg opens by itself (the schedule listener): the URL's
        address and credentials plus the SSL options, which asyncpg reads from a DSN anyway.
        Use it with `connect_args()` minus `dsn`."""
        url = self.url.set(drivername="postgresql")
        query = {k: v for k, v in url.query.items() if k != "prepared_statement_cache_size"}
        url = url.set(query={**query, **self.ssl_query})
        return url.render_as_string(hide_password=False)


def postgres_target(url: URL) -> PostgresTarget:
    """Split the libpq options off a PostgreSQL URL; DatabaseUrlError names one that cannot be
    used (unknown, repeated, a bad value, a certificate file that does not exist)."""
    ssl_query: dict[str, str] = {}
    server_settings: dict[str, str] = {}
    timeout: float | None = None
    if SSLMODE_ALIAS in url.query and "sslmode" in url.query:
        raise DatabaseUrlError(f"{SETTING}: give sslmode or ssl, not both")
    for given, raw in url.query.items():
        name = "sslmode" if given == SSLMODE_ALIAS else given
        if name not in UNDERSTOOD:
            raise DatabaseUrlError(
                f"{SETTING}: unknown option {name!r}; understood: {', '.join(UNDERSTOOD)}"
            )
        if name in SQLALCHEMY_OPTIONS:
            continue
        if not isinstance(raw, str):
            raise DatabaseUrlError(f"{SETTING}: option {name!r} is given more than once")
        if name == "sslmode" and raw not in SSL_MODES:
            raise DatabaseUrlError(
                f"{SETTING}: sslmode {raw!r} is not one of {', '.join(SSL_MODES)}"
            )
        if name in SSL_FILES and not Path(raw).expanduser().is_file():
            raise DatabaseUrlError(f"{SETTING}: {name} {raw!r} is not a readable file")
        if name in SSL_OPTIONS:
            ssl_query[name] = raw
        elif name in STARTUP_OPTIONS:
            server_settings[name] = raw
        else:
            timeout = _timeout(raw)
    remaining = {k: v for k, v in url.query.items() if k in SQLALCHEMY_OPTIONS}
    return PostgresTarget(url.set(query=remaining), ssl_query, server_settings, timeout)


def _timeout(raw: str) -> float:
    # libpq reads 0 as "wait forever"; a service should not, so whole seconds from 1 up.
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise DatabaseUrlError(f"{SETTING}: {TIMEOUT_OPTION} must be whole seconds, at least 1")
    return float(seconds)
