"""What `apflow serve` writes to its log, in its own process on a real port: the address it
listens on, one line per run start and end (a failed run too), and with APFLOW_LOG_FORMAT=json
one JSON object per line, uvicorn's access lines included, credentials redacted."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from api_support import Api, ServerProcess, client_for, server_env, wait_until


def test_text_log_names_the_address_and_every_run(tmp_path: Path) -> None:
    server = ServerProcess(server_env(tmp_path))
    try:
        server.wait_ready()
        with client_for(server) as http:
            api = Api(http)
            task = api.create(name="fails", params={"executor_id": "test_fail"})
            api.call("tasks.execute", {"task_id": task["id"], "wait": True})
        wait_until(lambda: "run finished" in server.output)
    finally:
        server.stop()
    lines = server.output.splitlines()
    assert any(f"listening on http://127.0.0.1:{server.port} " in line for line in lines)
    started = [line for line in lines if "run started" in line]
    finished = [line for line in lines if "run finished" in line]
    assert len(started) == 1 and f"task={task['id']}" in started[0]
    assert "trigger=api" in started[0] and " INFO " in started[0]
    assert len(finished) == 1 and "status=failed" in finished[0] and "error=" in finished[0]


def test_json_log_is_one_object_per_line(tmp_path: Path) -> None:
    server = ServerProcess(server_env(tmp_path, APFLOW_LOG_FORMAT="json"))
    try:
        server.wait_ready()
        with client_for(server) as http:
            api = Api(http)
            due = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
            task = api.create(
                name="soon",
                schedule_type="once",
                schedule_expression=due.isoformat(),
                schedule_enabled=True,
            )
            http.get("/scheduler/ical", params={"api_key": "afk_not-a-real-key"})
        wait_until(lambda: "run finished" in server.output, timeout=15)
        time.sleep(0.2)  # the access lines
    finally:
        server.stop()
    records = [json.loads(line) for line in server.output.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    (started,) = [r for r in records if r.get("event") == "run.started"]
    (finished,) = [r for r in records if r.get("event") == "run.finished"]
    assert started["task"] == task["id"] and started["trigger"] == "schedule"
    assert datetime.fromisoformat(started["scheduled_for"]) == due
    assert 0 <= started["lateness_s"] < 1
    assert finished["status"] == "completed" and finished["duration_s"] >= 0
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any("/scheduler/ical?api_key=[redacted]" in r["message"] for r in access)
    assert "afk_not-a-real-key" not in server.output
