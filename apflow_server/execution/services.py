"""What the built-in executors need from the service that runs them.

Executors are plain callables in a process-wide registry, so anything that depends on one
service's settings, or must live as long as that service (a pooled HTTP client), cannot sit in
them. A scheduler, or the app that owns it, makes one `ExecutorServices` from its Settings and
every run's ExecutionContext carries it (`context.services`); whoever made it closes it when it
stops. A built-in reads its switches from `services.settings` rather than the environment, so
they are read once per service and two services in one process each obey their own.
"""

from __future__ import annotations

import ssl

from apflow_server.config import Settings
from apflow_server.execution.rest.executor import RestExecutor


class ExecutorServices:
    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.rest = RestExecutor(settings, ssl_context=ssl_context)

    async def aclose(self) -> None:
        await self.rest.aclose()
