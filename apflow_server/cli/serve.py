"""`apflow serve`: the HTTP service (JSON-RPC, webhooks, health, metrics) under uvicorn."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
from sqlalchemy.engine import make_url

from apflow_server.config import CONFIG_FILE, MIN_JWT_SECRET_BYTES, ConfigError, Settings
from apflow_server.core.collector import settle_after_startup
from apflow_server.core.logs import configure_logging
from apflow_server.plugins import load_plugins
from apflow_server.storage.database import Database

if TYPE_CHECKING:
    import uvicorn


HANDLED = (signal.SIGINT, signal.SIGTERM)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def weak_jwt_secret(settings: Settings) -> str | None:
    """Why the JWT secret is too short to trust, or None (no secret, or long enough). The
    message gives its length, never the secret."""
    secret = settings.jwt_secret
    if not secret or len(secret.encode()) >= MIN_JWT_SECRET_BYTES:
        return None
    return (
        f"APFLOW_JWT_SECRET (or jwt_secret in {CONFIG_FILE}) is {len(secret.encode())} bytes; "
        f"at least {MIN_JWT_SECRET_BYTES} bytes are required, as `apflow config init` makes"
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind before starting, so a taken port is one clear error rather than a log line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns TCP_NODELAY on only for sockets that say so, and
    # without it every keep-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def graceful_server(config: uvicorn.Config, started: str = "") -> uvicorn.Server:
    """uvicorn's Server, except that SIGTERM/SIGINT end the process with status 0 after a
    clean shutdown (uvicorn re-raises the signal, which looks like a crash to supervisors), and
    `started` is logged once it serves (uvicorn says nothing of sockets handed to it)."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                settle_after_startup()  # what the app loaded at start-up stays loaded
            if self.started and started:
                logging.getLogger("apflow_server.serve").info("%s", started)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)


def with_allowed_hosts(settings: Settings, host: str) -> Settings:
    """The Host names to answer to: APFLOW_ALLOWED_HOSTS, else the loopback names and the bound
    address when bound to loopback. Elsewhere they must be given: this process cannot know
    the names its clients use, and answering to any name lets a web page that rebinds its
    own DNS name to this address read and drive the service."""
    if settings.allowed_hosts:
        return settings
    if not is_loopback(host):
        raise ConfigError(
            f"serving on {host} needs APFLOW_ALLOWED_HOSTS: the host names clients use to "
            "reach this service (e.g. APFLOW_ALLOWED_HOSTS=apflow.example.com), or * for any"
        )
    return dataclasses.replace(settings, allowed_hosts=(host, "localhost", "127.0.0.1", "::1"))


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-scheduler", is_flag=True, help="Serve the API only; another process schedules.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback address with authentication off (no JWT or webhook secret).",
)
@click.option(
    "--migrate",
    is_flag=True,
    help="Apply database migrations before serving (containers; safe with several replicas).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    host: str, port: int, no_scheduler: bool, insecure: bool, migrate: bool, log_level: str
) -> None:
    """Run the service: JSON-RPC at /tasks/, POST /webhook/trigger/{task_id}, /healthz,
    /readyz and /metrics. The internal scheduler runs in the same process unless
    --no-scheduler."""
    settings = Settings.from_env()
    load_plugins(settings)
    if not settings.jwt_secret and not is_loopback(host) and not insecure:
        raise ConfigError(
            f"refusing to serve on {host} with the JSON-RPC API unauthenticated: set "
            "APFLOW_JWT_SECRET (or run `apflow config init`), or pass --insecure"
        )
    short_secret = weak_jwt_secret(settings)
    if short_secret and not is_loopback(host):
        raise ConfigError(f"refusing to serve on {host}: {short_secret}")
    settings = with_allowed_hosts(settings, host)
    # Imported here so every other command starts without loading the web stack.
    import uvicorn

    from apflow_server.api.app import create_app

    configure_logging(
        getattr(logging, log_level.upper()), settings.log_format, verbose=log_level == "debug"
    )
    if short_secret:
        logging.getLogger("apflow_server.serve").warning(
            "%s (accepted on loopback only)", short_secret
        )
    from .runtime import run_with_database

    async def prepare(database: Database) -> None:
        # The same check the app's lifespan makes, made here first: a database that cannot be
        # used (unreachable, refused SSL, not migrated) is then one line, not a traceback
        # from inside uvicorn.
        if migrate:
            await database.upgrade()
        await database.ensure_schema()

    sock = listening_socket(host, port)
    try:
        app = create_app(settings, run_scheduler=not no_scheduler)
        run_with_database(prepare)
    except BaseException:
        sock.close()
        raise
    # proxy_headers off: X-Forwarded-For is believed only from APFLOW_TRUSTED_PROXIES, by the
    # app itself; uvicorn would otherwise trust it from any loopback peer.
    # log_config None: uvicorn's records go through the root handler configured above.
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=30,
        proxy_headers=False,
    )
    from apflow_server.api import access_log

    access_log.install()  # after uvicorn.Config, which configures its loggers
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    scheduler = "off" if no_scheduler else "on"
    backend = make_url(settings.database_url).get_backend_name()
    server = graceful_server(
        config,
        f"listening on http://{shown}:{bound_port} (JSON-RPC at /tasks/; scheduler {scheduler}; "
        f"database {backend})",
    )
    server.run(sockets=[sock])
    if not server.started:
        raise ConfigError("the server did not start; see the log above")
