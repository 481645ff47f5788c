"""The service: every operation, over one database, one repository and the scheduler that
runs what is started here."""

from __future__ import annotations

from dataclasses import dataclass, field

from apflow_server.config import Settings
from apflow_server.scheduler.internal import InternalScheduler
from apflow_server.service.audit import Audit
from apflow_server.service.calendars import Calendars
from apflow_server.service.feeds import Feeds
from apflow_server.service.notifications import Notifications
from apflow_server.service.runs import Runs
from apflow_server.service.schedules import Schedules
from apflow_server.service.tasks import Tasks
from apflow_server.storage.database import Database
from apflow_server.storage.repository import TaskRepository


@dataclass
class Service:
    settings: Settings
    database: Database
    repository: TaskRepository
    # Runs started here execute in this scheduler; None where nothing is started (the CLI's
    # reads and writes).
    scheduler: InternalScheduler | None = None
    # Who the local operator (no principal) is in the audit log: `cli:<os user>` for the CLI.
    local_actor: str = "local"
    audit: Audit = field(init=False)
    tasks: Tasks = field(init=False)
    runs: Runs = field(init=False)
    schedules: Schedules = field(init=False)
    feeds: Feeds = field(init=False)
    notifications: Notifications = field(init=False)
    calendars: Calendars = field(init=False)

    def __post_init__(self) -> None:
        self.audit = Audit(self.database, self.local_actor, self.repository.clock)
        self.tasks = Tasks(self.repository, self.audit)
        self.runs = Runs(self.repository, self.tasks, self.scheduler, self.audit)
        self.schedules = Schedules(self.repository, self.tasks, self.audit)
        self.feeds = Feeds(self.database, self.audit)
        self.notifications = Notifications(
            self.database, self.settings, self.audit, self.repository.clock
        )
        self.calendars = Calendars(self.database, self.audit, self.repository.clock)
