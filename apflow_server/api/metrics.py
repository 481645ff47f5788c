"""Prometheus metrics of one service process, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from apflow_server.storage.runs import ClaimedRun, RunResult

LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "apflow_runs",
            "Runs finished by this process, by status",
            ["status"],
            registry=self.registry,
        )
        self.lateness = Histogram(
            "apflow_firing_lateness_seconds",
            "How late scheduled runs started after their occurrence",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.active = Gauge(
            "apflow_active_runs", "Runs executing in this process", registry=self.registry
        )
        self.backlog = Gauge(
            "apflow_due_backlog",
            "Enabled schedules due now and not yet fired",
            registry=self.registry,
        )
        self.notification_attempts = Counter(
            "apflow_notification_attempts",
            "Notification delivery attempts by this process, by outcome "
            "(delivered, retrying, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.notification_backlog = Gauge(
            "apflow_notification_backlog",
            "Notification deliveries waiting to be delivered (every instance's)",
            registry=self.registry,
        )
        self.notification_oldest_age = Gauge(
            "apflow_notification_oldest_undelivered_seconds",
            "Age of the oldest notification not yet delivered",
            registry=self.registry,
        )
        self.webhook_refusals = Counter(
            "apflow_webhook_refusals",
            "Webhook triggers refused, by reason",
            ["reason"],
            registry=self.registry,
        )

    def notification_attempted(self, outcome: str) -> None:
        self.notification_attempts.labels(outcome=outcome).inc()

    def run_started(self, run: ClaimedRun) -> None:
        if run.lateness is not None:
            self.lateness.observe(max(run.lateness, 0.0))

    def run_finished(self, outcome: RunResult) -> None:
        self.runs.labels(status=outcome.status.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
