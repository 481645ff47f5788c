"""/healthz, /readyz and /metrics, through the TestClient on both databases."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from api_harness import Service, ServiceFactory
from api_support import JWT_SECRET
from prometheus_client.parser import text_string_to_metric_families


def samples(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = service.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(service: Service, name: str, **labels: str) -> float | None:
    return samples(service).get((name, tuple(sorted(labels.items()))))


def test_healthz(service: Service) -> None:
    response = service.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_database_and_the_scheduler(service: Service) -> None:
    response = service.http.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "scheduler": "running"}


def test_readyz_is_503_when_the_scheduler_stopped(service: Service) -> None:
    scheduler = service.http.app.state.services.scheduler
    service.http.portal.call(scheduler.stop)
    response = service.http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["scheduler"] == "stopped"
    assert response.json()["status"] == "not ready"


def test_health_endpoints_need_no_token(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET)
    assert service.http.get("/healthz").status_code == 200
    assert service.http.get("/readyz").status_code == 200
    assert service.http.get("/metrics").status_code == 200


def test_metrics_expose_every_family(service: Service) -> None:
    names = {name for name, _ in samples(service)}
    assert {
        "apflow_firing_lateness_seconds_count",
        "apflow_firing_lateness_seconds_bucket",
        "apflow_active_runs",
        "apflow_due_backlog",
    } <= names
    text = service.http.get("/metrics").text
    for line in (
        "# TYPE apflow_runs_total counter",
        "# TYPE apflow_firing_lateness_seconds histogram",
        "# TYPE apflow_active_runs gauge",
        "# TYPE apflow_due_backlog gauge",
        "# TYPE apflow_webhook_refusals_total counter",
        "# TYPE apflow_notification_attempts_total counter",
        "# TYPE apflow_notification_backlog gauge",
        "# TYPE apflow_notification_oldest_undelivered_seconds gauge",
    ):
        assert line in text.splitlines(), line


def test_runs_total_counts_by_status(service: Service) -> None:
    good = service.api.create()
    bad = service.api.create(params={"executor_id": "test_fail"})
    service.api.call("tasks.execute", {"task_id": good["id"], "wait": True})
    service.api.call("tasks.execute", {"task_id": good["id"], "wait": True})
    service.api.call("tasks.execute", {"task_id": bad["id"], "wait": True})
    assert value(service, "apflow_runs_total", status="completed") == 2.0
    assert value(service, "apflow_runs_total", status="failed") == 1.0


def test_active_runs_while_a_run_is_in_flight(service: Service) -> None:
    assert value(service, "apflow_active_runs") == 0.0
    task = service.api.create(params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    service.api.call("tasks.execute", {"task_id": task["id"]})
    assert value(service, "apflow_active_runs") == 1.0
    service.api.call("tasks.cancel", {"task_id": task["id"]})


def test_firing_lateness_is_observed_for_scheduled_runs(service: Service) -> None:
    assert value(service, "apflow_firing_lateness_seconds_count") == 0.0
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    task = service.api.create(
        schedule_type="once", schedule_expression=due.isoformat(), schedule_enabled=True
    )
    runs = service.api.wait_run(task["id"])
    assert runs[0]["trigger"] == "schedule"
    assert value(service, "apflow_firing_lateness_seconds_count") == 1.0
    assert (value(service, "apflow_firing_lateness_seconds_sum") or 0) >= 0.5
    assert value(service, "apflow_firing_lateness_seconds_bucket", le="+Inf") == 1.0


def test_due_backlog_counts_due_schedules_not_fired(make_service: ServiceFactory) -> None:
    service = make_service(run_scheduler=False)  # nobody fires them here
    assert value(service, "apflow_due_backlog") == 0.0
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    for index in range(2):
        service.api.create(
            name=f"due{index}",
            schedule_type="once",
            schedule_expression=past,
            schedule_enabled=True,
        )
    service.api.create(
        name="later",
        schedule_type="once",
        schedule_expression=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        schedule_enabled=True,
    )
    assert value(service, "apflow_due_backlog") == 2.0


def test_webhook_refusals_are_counted_by_reason(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET)
    assert value(service, "apflow_webhook_refusals_total", reason="not_found") is None
    assert service.api.webhook("anything").status == 401
    assert service.api.webhook("anything", auth="garbage").status == 401
    refusals = {
        dict(labels).get("reason"): count
        for (name, labels), count in samples(service).items()
        if name == "apflow_webhook_refusals_total"
    }
    assert sum(refusals.values()) == 2.0
    assert all(reason for reason in refusals)


def test_webhook_refusal_reasons_name_the_cause(service: Service) -> None:
    assert service.api.webhook("missing").status == 404
    assert service.api.webhook("missing", query="?async=perhaps").status == 400
    assert value(service, "apflow_webhook_refusals_total", reason="not_found") == 1.0
    assert value(service, "apflow_webhook_refusals_total", reason="bad_request") == 1.0


def test_readyz_is_503_when_the_database_is_unreachable(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = service.http.app.state.services.database

    def unreachable(*args: object, **kwargs: object) -> object:
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(database, "connect", unreachable)
    response = service.http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"].startswith("unavailable")
    assert body["checks"]["scheduler"] == "running"
    assert service.http.get("/healthz").status_code == 200


def test_notification_backlog_and_its_oldest_age(make_service: ServiceFactory) -> None:
    service = make_service(run_scheduler=False, notify_allow_private_urls=True)  # none delivers
    assert value(service, "apflow_notification_backlog") == 0.0
    endpoint = service.api.call(
        "notifications.endpoints.create", {"url": "http://127.0.0.1:9/hook"}
    )
    for _ in range(2):
        service.api.call("notifications.endpoints.test", {"id": endpoint["id"]})
    time.sleep(1.1)
    assert value(service, "apflow_notification_backlog") == 2.0
    assert (value(service, "apflow_notification_oldest_undelivered_seconds") or 0) >= 1.0


def test_notification_attempts_are_counted_by_outcome(make_service: ServiceFactory) -> None:
    service = make_service(notify_allow_private_urls=True)
    endpoint = service.api.call(
        "notifications.endpoints.create",
        {"url": "http://127.0.0.1:9/hook"},  # nobody there
    )
    service.api.call("notifications.endpoints.test", {"id": endpoint["id"]})
    deadline = time.monotonic() + 10
    while value(service, "apflow_notification_attempts_total", outcome="retrying") is None:
        assert time.monotonic() < deadline, "no attempt was counted"
        time.sleep(0.05)
    assert value(service, "apflow_notification_attempts_total", outcome="retrying") == 1.0
    [delivery] = service.api.call("notifications.deliveries.list")["items"]
    assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
    assert delivery["last_error"].startswith("cannot reach the receiver")
