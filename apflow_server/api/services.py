"""What the HTTP layer works with: the service (every operation users perform, with its
permission checks) and the pieces that are HTTP's own (the metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from apflow_server.api.metrics import Metrics
from apflow_server.config import Settings
from apflow_server.scheduler.internal import InternalScheduler
from apflow_server.service import Service
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository


@dataclass
class Services:
    settings: Settings
    database: Database
    service: Service
    scheduler: InternalScheduler
    metrics: Metrics

    @property
    def repository(self) -> TaskRepository:
        return self.service.repository
