"""The PostgreSQL server the tests use, found or started once per test run.

In order:
1. APFLOW_TEST_POSTGRES_URL, when set: that server (the admin database's URL). It must answer.
2. The local server on 127.0.0.1:5432, user postgres, when it answers.
3. A throwaway server of this run's own, when PostgreSQL's programs are installed (initdb and
   pg_ctl on PATH or under /usr/lib/postgresql/*/bin): a fresh cluster in a temporary folder,
   on a free port of 127.0.0.1, trust authentication, no fsync; stopped and removed at the end.
   Run by the `postgres` user when the tests run as root (initdb refuses root).
4. None: the PostgreSQL tests are skipped, saying how to enable them; under CI=true that is an
   error instead, since CI must run them.

The choice is made once, by the process pytest starts (`decide`, from conftest's
pytest_configure), and handed on in the environment, which pytest-xdist's workers inherit.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

URL_VARIABLE = "APFLOW_TEST_POSTGRES_URL"
# Set by `decide` for the workers: why there is no server, or where the throwaway one lives.
MISSING_VARIABLE = "APFLOW_TEST_POSTGRES_MISSING"
DATA_VARIABLE = "APFLOW_TEST_POSTGRES_DATA"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_ENABLE = (
    "install PostgreSQL (Debian: apt install postgresql) so the tests can start a throwaway "
    "server, or set APFLOW_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/postgres"
)


class NoPostgres(Exception):
    """No server could be found or started; the message says why and what to do."""


def admin_url() -> str:
    """The admin database's URL; skips the calling test when there is no server."""
    missing = os.environ.get(MISSING_VARIABLE)
    if missing:
        pytest.skip("no PostgreSQL server (see the last line of the report)")
    return os.environ.get(URL_VARIABLE, DEFAULT_URL)


def database_url(name: str) -> str:
    base, _, _ = admin_url().rpartition("/")
    return f"{base}/{name}"


async def create_database(prefix: str = "apflow_test") -> str:
    """A new, empty database; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(admin_url())
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def drop_database(name: str) -> None:
    connection = await asyncpg.connect(admin_url())
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


# ---------------------------------------------------------------------- finding or starting one


def answers(url: str, timeout: float = 3.0) -> bool:
    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(url, timeout=timeout)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


def program_folder() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for folder in reversed(versions):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


@dataclass
class Throwaway:
    """A PostgreSQL cluster of this test run's own."""

    programs: Path
    data: Path
    port: int
    user: str | None  # run as this user (the tests run as root), else as ourselves

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 120) -> None:
        self._run(str(self.programs / "pg_ctl"), "-D", str(self.data / "cluster"), *args,
                  timeout=timeout)  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self.pg_ctl("-w", "-l", str(self.data / "server.log"), "-o", options, "start")

    def restart(self) -> None:
        # With its log file, as at start: else the new server holds our output pipes open.
        self.pg_ctl("-w", "-m", "fast", "-l", str(self.data / "server.log"), "restart")

    def stop(self) -> None:
        try:
            self.pg_ctl("-w", "-m", "immediate", "stop", timeout=60)
        finally:
            shutil.rmtree(self.data, ignore_errors=True)

    def _run(self, *command: str, timeout: float) -> None:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, user=self.user,
            check=False, cwd=self.data,
        )  # fmt: skip
        if result.returncode != 0:
            raise NoPostgres(
                f"{Path(command[0]).name} failed: {(result.stderr or result.stdout).strip()}"
            )

    @classmethod
    def create(cls, programs: Path) -> Throwaway:
        user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise NoPostgres(
                    "the tests run as root and there is no postgres user to run initdb as"
                ) from None
            user = "postgres"
        data = Path(tempfile.mkdtemp(prefix="apflow-test-postgres-"))
        if user is not None:
            shutil.chown(data, user)
        server = cls(programs, data, free_port(), user)
        try:
            server._run(
                str(programs / "initdb"), "-D", str(data / "cluster"), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--no-sync", timeout=120,
            )  # fmt: skip
            server.start()
        except (NoPostgres, OSError, subprocess.TimeoutExpired):
            shutil.rmtree(data, ignore_errors=True)
            raise
        return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Decision:
    url: str | None
    description: str  # one line for the test report's header
    throwaway: Throwaway | None = None


def decide(environ: dict[str, str] | os._Environ[str] = os.environ) -> Decision:
    """Which server this run uses (see the module's docstring). Raises NoPostgres when a
    server was asked for and is not there: APFLOW_TEST_POSTGRES_URL set, or CI=true."""
    given = environ.get(URL_VARIABLE)
    if given:
        if not answers(given):
            raise NoPostgres(f"{URL_VARIABLE} names a server that does not answer: {given}")
        return Decision(given, f"PostgreSQL: {given} ({URL_VARIABLE})")
    if answers(DEFAULT_URL):
        return Decision(DEFAULT_URL, f"PostgreSQL: the local server ({DEFAULT_URL})")
    programs = program_folder()
    why = "nothing answers on 127.0.0.1:5432"
    if programs is not None:
        try:
            server = Throwaway.create(programs)
        except (NoPostgres, OSError, subprocess.TimeoutExpired) as error:
            why = f"{why}, and a throwaway server did not start ({error})"
        else:
            return Decision(
                server.url,
                f"PostgreSQL: a throwaway server on 127.0.0.1:{server.port} "
                f"({programs / 'initdb'}), removed at the end",
                server,
            )
    else:
        why = f"{why} and PostgreSQL's programs (initdb, pg_ctl) are not installed"
    if environ.get("CI", "").lower() == "true":
        raise NoPostgres(f"CI=true needs PostgreSQL: {why}")
    return Decision(None, f"PostgreSQL tests deselected: {why}; to run them, {HOW_TO_ENABLE}")
