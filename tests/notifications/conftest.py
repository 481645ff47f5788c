"""Fixtures of the notification tests. `settings` here is for deliveries by real processes
(scheduler processes and their delivery children): it is set in the environment, which those
processes inherit; the in-process tests define their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from apflow_server.config import Settings
from apflow_server.service import Service
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository

PROCESS_KEY = "a key the test and its processes share"


@pytest.fixture
def settings(database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    environment = {
        "APFLOW_DATABASE_URL": database.url,
        "APFLOW_SECRET_KEY": PROCESS_KEY,
        "APFLOW_NOTIFY_ALLOW_PRIVATE_URLS": "1",
        "APFLOW_NOTIFY_TIMEOUT_SECONDS": "2",  # an attempt is held 4 s
        "APFLOW_NOTIFY_RETRY_SECONDS": "0,0,0",
        "APFLOW_NOTIFY_IN_SCHEDULER": "process",
        "APFLOW_HOME": str(tmp_path),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


@pytest.fixture
def service(database: Database, settings: Settings) -> Service:
    return Service(settings, database, TaskRepository(database, settings=settings))
