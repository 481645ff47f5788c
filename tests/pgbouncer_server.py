"""A real PgBouncer (Debian's `pgbouncer` package) in front of the test run's PostgreSQL, in
transaction pooling, for the tests of running behind a pooler. Started on a free port with a
configuration of its own in a temporary folder; run by the `postgres` user when the tests run
as root (PgBouncer refuses root)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import postgres_server
import pytest
from sqlalchemy.engine import make_url


def pgbouncer_program() -> str:
    """The pgbouncer binary; skips without it, and fails under CI=true (.ci/run installs it)."""
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        message = "PgBouncer tests need Debian's pgbouncer: apt-get install pgbouncer"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@contextmanager
def pgbouncer(pool_mode: str = "transaction", pool_size: int = 20) -> Iterator[str]:
    """A running PgBouncer; yields the admin URL through it (the `postgres` database).
    `pool_size` server connections per database: fewer than its clients make consecutive
    transactions of one client land on different server connections."""
    program = pgbouncer_program()
    server = make_url(postgres_server.admin_url())
    folder = Path(tempfile.mkdtemp(prefix="apflow-test-pgbouncer-"))
    port = postgres_server.free_port()
    user = "postgres" if os.geteuid() == 0 else None
    (folder / "userlist.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"pool_mode = {pool_mode}\nauth_type = trust\nauth_file = {folder / 'userlist.txt'}\n"
        f"logfile = {folder / 'pgbouncer.log'}\npidfile = {folder / 'pgbouncer.pid'}\n"
        f"max_client_conn = 500\ndefault_pool_size = {pool_size}\n"
        # asyncpg asks for no other start-up parameter; what apflow sends without
        # APFLOW_DATABASE_POOLER (jit) stays refused, as a real deployment would see it.
        "ignore_startup_parameters = extra_float_digits\n"
    )
    if user is not None:
        shutil.chown(folder, user)
        for file in folder.iterdir():
            shutil.chown(file, user)
    process = subprocess.Popen(
        [program, str(folder / "pgbouncer.ini")],
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        _wait_until_it_answers(url, process, folder)
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # PgBouncer's "shut down now"
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_it_answers(url: str, process: subprocess.Popen[str], folder: Path) -> None:
    async def answers() -> bool:
        try:
            connection = await asyncpg.connect(url, timeout=2, statement_cache_size=0)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await connection.close()
        return True

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_file = folder / "pgbouncer.log"
            log = log_file.read_text() if log_file.exists() else ""
            errors = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"pgbouncer exited {process.returncode}: {errors} {log}")
        if asyncio.run(answers()):
            return
        time.sleep(0.1)
    raise AssertionError("pgbouncer did not answer within 20 s")


def through(pooler_url: str, database: str) -> str:
    """The URL of `database` through the pooler."""
    return pooler_url.rpartition("/")[0] + "/" + database
