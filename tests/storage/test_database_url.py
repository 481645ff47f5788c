"""PostgreSQL URLs as libpq tools write them: `?sslmode=...&application_name=...` options are
understood (given to asyncpg as its own arguments), an unknown one is one clear line.

Against the local server, which runs without SSL (`show ssl` is off): `sslmode=disable` and
`prefer` connect, `require` is refused in one line, by the Database class and by
`apflow db upgrade` / `apflow serve` as real processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
from sqlalchemy import text

from apflow_server.core.errors import ApflowError
from apflow_server.storage.database import Database, DatabaseError
from apflow_server.storage.listener import ScheduleListener

APFLOW = str(Path(sys.executable).parent / "apflow")


def with_options(url: str, options: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{options}"


async def scalar(url: str, statement: str) -> object:
    database = Database(url, pool_size=1)
    try:
        async with database.connect() as connection:
            return (await connection.execute(text(statement))).scalar_one()
    finally:
        await database.dispose()


async def test_the_local_server_runs_without_ssl(postgres_url: str) -> None:
    """What the refusal tests below rely on."""
    assert await scalar(postgres_url, "SHOW ssl") == "off"


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
async def test_sslmodes_that_allow_plain_connections_connect(postgres_url: str, mode: str) -> None:
    url = with_options(postgres_url, f"sslmode={mode}")
    assert await scalar(url, "SELECT 1") == 1


async def test_sslmode_require_against_a_server_without_ssl_is_one_line(
    postgres_url: str,
) -> None:
    database = Database(with_options(postgres_url, "sslmode=require"))
    try:
        with pytest.raises(DatabaseError) as caught:
            await database.current_revision()
    finally:
        await database.dispose()
    message = caught.value.message
    assert "\n" not in message
    assert "SSL" in message, message


async def test_application_name_shows_in_pg_stat_activity(postgres_url: str) -> None:
    url = with_options(postgres_url, "application_name=apflow-probe&sslmode=prefer")
    statement = "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    assert await scalar(url, statement) == "apflow-probe"


async def test_the_jit_setting_is_kept_next_to_the_url_ones(postgres_url: str) -> None:
    assert await scalar(with_options(postgres_url, "application_name=x"), "SHOW jit") == "off"


async def test_connect_timeout_and_options_are_understood(postgres_url: str) -> None:
    url = with_options(postgres_url, "connect_timeout=3&options=" + quote("-c search_path=probe"))
    assert await scalar(url, "SHOW search_path") == "probe"


def test_connect_timeout_bounds_the_wait_for_a_server_that_never_answers() -> None:
    """A socket that takes the TCP connection and never says a word: without the option,
    asyncpg waits 60 s for the server's first answer."""
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url = f"postgresql://postgres@127.0.0.1:{port}/x?connect_timeout=2"
        started = time.monotonic()
        with pytest.raises(DatabaseError):
            asyncio.run(_revision(url))
        elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 10, elapsed


async def _revision(url: str) -> str | None:
    database = Database(url)
    try:
        return await database.current_revision()
    finally:
        await database.dispose()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ("sslmode=sometimes", "sslmode"),
        ("connect_timeout=soon", "connect_timeout"),
        ("connect_timeout=0", "connect_timeout"),
        ("target_session_attrs=read-write", "target_session_attrs"),
        ("foo=bar", "foo"),
        ("sslrootcert=/nonexistent/root.crt&sslmode=verify-full", "sslrootcert"),
        ("sslmode=require&sslmode=disable", "sslmode"),
    ],
)
def test_an_option_that_cannot_be_used_is_one_line_naming_it(options: str, named: str) -> None:
    with pytest.raises(ApflowError) as caught:
        Database(f"postgresql://postgres@127.0.0.1/x?{options}")
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("APFLOW_DATABASE_URL: ")
    assert repr(named) in message or f"{named} " in message or f"{named}=" in message, message


def test_a_password_is_never_part_of_the_message() -> None:
    with pytest.raises(ApflowError) as caught:
        Database("postgresql://postgres:hunter2@127.0.0.1/x?foo=bar")
    assert "hunter2" not in caught.value.message


async def test_the_schedule_listener_connects_with_the_same_options(postgres_url: str) -> None:
    """The LISTEN connection is opened by asyncpg directly: connect_timeout must not reach the
    server as a setting (it would refuse it), application_name must."""
    url = with_options(postgres_url, "connect_timeout=3&application_name=apflow-listen-probe")
    connected = asyncio.Event()
    listener = ScheduleListener(url, connected.set)
    listener.start()
    try:
        await asyncio.wait_for(connected.wait(), 10)
        probe = await asyncpg.connect(postgres_url)
        try:
            names = await probe.fetch("SELECT application_name FROM pg_stat_activity")
        finally:
            await probe.close()
        assert "apflow-listen-probe" in {row["application_name"] for row in names}
    finally:
        await listener.stop()


# ---------------------------------------------------------------------- as real processes


def run_apflow(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APFLOW_")}
    env.update(APFLOW_HOME=str(home), APFLOW_DATABASE_URL=url)
    return subprocess.run(
        [APFLOW, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_db_upgrade_with_libpq_options_migrates(fresh_postgres_url: str, tmp_path: Path) -> None:
    url = with_options(fresh_postgres_url, "sslmode=prefer&application_name=apflow-migrate")
    url += "&connect_timeout=5"
    result = run_apflow(tmp_path, url, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "upgraded from an empty database" in result.stdout
    again = run_apflow(tmp_path, url, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert "already at revision" in again.stdout


@pytest.mark.parametrize(
    ("options", "fragment"),
    [("sslmode=require", "SSL"), ("sslmode=on", "sslmode"), ("pool=9", "'pool'")],
)
@pytest.mark.parametrize("command", [("db", "upgrade"), ("serve", "--port", "0")])
def test_refusals_are_one_line_from_the_commands(
    postgres_url: str, tmp_path: Path, options: str, fragment: str, command: tuple[str, ...]
) -> None:
    result = run_apflow(tmp_path, with_options(postgres_url, options), *command)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert lines[0].startswith("Error: ") and fragment in lines[0], lines[0]
    assert "internal error" not in lines[0]


async def test_asyncpgs_own_ssl_option_still_works_as_sslmode(postgres_url: str) -> None:
    """`?ssl=prefer` went straight to asyncpg.connect(ssl=...) before libpq options were
    understood; URLs that use it keep working, with the same modes."""
    assert await scalar(with_options(postgres_url, "ssl=prefer"), "SELECT 1") == 1
    database = Database(with_options(postgres_url, "ssl=require"))
    try:
        with pytest.raises(DatabaseError, match="SSL"):
            await database.current_revision()
    finally:
        await database.dispose()
    with pytest.raises(ApflowError, match="sslmode"):
        Database(with_options(postgres_url, "ssl=require&sslmode=disable"))
