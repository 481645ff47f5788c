"""The app under starlette's TestClient (its lifespan running): one `Service` per app instance,
built by a factory that the fixtures of conftest.py hand to the tests."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import support  # noqa: F401  (registers the test_* executors)
from api_support import Api
from sqlalchemy import text

from apflow_server.api.app import create_app
from apflow_server.config import Settings
from apflow_server.scheduler.base import SchedulerConfig
from apflow_server.scheduler.gateway.hooks import unregister_webhook_verify_hook
from apflow_server.storage.database import Database
from apflow_server.storage.models import Base

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx
    from starlette.testclient import TestClient

# A short grace so that a test ending with a run in flight does not wait 30 s at shutdown.
FAST = SchedulerConfig(poll_interval=0.5, shutdown_grace_seconds=0.2, heartbeat_interval=5)


async def empty_tables(url: str) -> None:
    database = Database(url)
    try:
        tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
        async with database.connect() as connection:
            async with connection.begin():
                await connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    finally:
        await database.dispose()


@dataclass
class Service:
    """One app instance under a TestClient."""

    http: Any  # TestClient
    settings: Settings
    api: Api

    def as_user(self, auth: str | None) -> Api:
        return self.api.as_user(auth)


ServiceFactory = Callable[..., Service]


def service_factory(url: str, home: Path) -> Iterator[ServiceFactory]:
    """Yields make(**settings) -> Service; every app made is shut down afterwards and the
    webhook verify hook unregistered."""
    clients: list[Any] = []

    def make(
        *,
        run_scheduler: bool = True,
        client: tuple[str, int] = ("testclient", 50000),
        auth: str | None = None,
        scheduler_config: SchedulerConfig | None = None,
        **settings: Any,
    ) -> Service:
        settings.setdefault("allowed_hosts", ("testserver",))  # the TestClient's Host
        config = Settings(home=home, database_url=url, **settings)
        app = create_app(
            config, run_scheduler=run_scheduler, scheduler_config=scheduler_config or FAST
        )
        http = TestClient(app, client=client, raise_server_exceptions=False)
        http.__enter__()
        clients.append(http)
        return Service(http, config, Api(http, auth))

    try:
        yield make
    finally:
        unregister_webhook_verify_hook()
        for http in reversed(clients):
            http.__exit__(None, None, None)
