"""The Starlette application: routes, the JWT middleware, and a lifespan that opens the
database and runs the internal scheduler (or, with run_scheduler=False, an executor for the
runs this server starts, without claiming scheduled work)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from apflow_server.api.auth import JWTMiddleware
from apflow_server.api.browsers import LOOPBACK_HOSTS, HostCheck, OriginCheck, public_origin
from apflow_server.api.calendar import ical_feed
from apflow_server.api.metrics import Metrics
from apflow_server.api.rpc import rpc_endpoint
from apflow_server.api.services import Services
from apflow_server.api.webhook import WebhookRateLimit, webhook_trigger
from apflow_server.config import Settings
from apflow_server.core.clock import utcnow
from apflow_server.execution.services import ExecutorServices
from apflow_server.scheduler.base import SchedulerConfig, SchedulerState
from apflow_server.scheduler.internal import InternalScheduler
from apflow_server.service import Service
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository, due_filter
from apflow_server.ui import routes as ui_routes

logger = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    checks: dict[str, Any] = {}
    try:
        async with services.database.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"unavailable: {type(exc).__name__}"
    state = services.scheduler.state
    checks["scheduler"] = state.value
    ready = checks["database"] == "ok" and state in {SchedulerState.RUNNING, SchedulerState.PAUSED}
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    from sqlalchemy import func, select

    from apflow_server.storage import notifications
    from apflow_server.storage.models import Task

    try:
        async with services.database.transaction() as session:
            query = due_filter(select(func.count()).select_from(Task), utcnow(), None)
            services.metrics.backlog.set(await session.scalar(query) or 0)
        pending, oldest = await notifications.backlog(services.database, utcnow())
        services.metrics.notification_backlog.set(pending)
        services.metrics.notification_oldest_age.set(oldest)
    except Exception:
        logger.warning("cannot count the due backlog", exc_info=True)
    services.metrics.active.set((await services.scheduler.get_status()).active_tasks)
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


def middleware(settings: Settings) -> list[Middleware]:
    """Outermost first: the Host check, CORS (only when origins are listed), the Origin check
    for state-changing requests, then the bearer token (see browsers.py and auth.py)."""
    stack = [Middleware(HostCheck, allowed_hosts=settings.allowed_hosts or LOOPBACK_HOSTS)]
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                max_age=600,
            )
        )
    # Behind a proxy that terminates TLS, the browser's origin is the public URL's, not the
    # http:// one uvicorn sees.
    own = (public_origin(settings.public_url),) if settings.public_url else ()
    stack.append(Middleware(OriginCheck, allowed_origins=(*settings.cors_origins, *own)))
    stack.append(Middleware(JWTMiddleware, settings=settings))
    return stack


def create_app(
    settings: Settings | None = None,
    *,
    run_scheduler: bool = True,
    scheduler_config: SchedulerConfig | None = None,
) -> Starlette:
    settings = settings or Settings.from_env()
    metrics_registry = Metrics()
    # Built here, not in the lifespan, so a storage it cannot use is one ConfigError before
    # the server starts rather than a traceback from inside uvicorn.
    webhook_rate_limit = WebhookRateLimit(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database = Database.from_settings(settings)
        await database.ensure_schema()
        # The built-in executors' pooled HTTP client lives as long as the app.
        executor_services = ExecutorServices(settings)
        scheduler = InternalScheduler(
            scheduler_config,
            database=database,
            settings=settings,
            claim=run_scheduler,
            observer=metrics_registry,
            executor_services=executor_services,
        )
        await scheduler.start()
        repository = TaskRepository(database, settings=settings)
        app.state.services = Services(
            settings=settings,
            database=database,
            service=Service(settings, database, repository, scheduler),
            scheduler=scheduler,
            metrics=metrics_registry,
        )
        app.state.webhook_rate_limit = webhook_rate_limit
        try:
            yield
        finally:
            try:
                await scheduler.stop()
            finally:
                await executor_services.aclose()
                await database.dispose()

    async def internal_error(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    return Starlette(
        routes=[
            Route("/tasks", rpc_endpoint, methods=["POST"]),
            Route("/tasks/", rpc_endpoint, methods=["POST"]),
            Route("/webhook/trigger/{task_id}", webhook_trigger, methods=["POST"]),
            Route("/scheduler/ical", ical_feed, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *ui_routes(),
        ],
        middleware=middleware(settings),
        exception_handlers={Exception: internal_error},
        lifespan=lifespan,
    )
