"""`apflow scheduler status` and `apflow scheduler trigger` against `apflow serve` running in
its own process with its scheduler (60 s poll): the scheduler is seen live in every sample,
its heartbeat never older than its interval allows, and a trigger is taken and run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_support import Api, ServerProcess, client_for, server_env

HEARTBEAT = 1


def apflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "apflow"
    return subprocess.run(
        [str(executable), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_status_sees_the_servers_scheduler_in_every_sample_and_trigger_runs(
    tmp_path: Path,
) -> None:
    env = server_env(tmp_path, APFLOW_HEARTBEAT_SECONDS=str(HEARTBEAT))
    server = ServerProcess(env)
    try:
        server.wait_ready()
        ages = []
        for _ in range(20):
            shown = apflow(env, "scheduler", "status", "-f", "json")
            assert shown.returncode == 0, shown.stderr
            instances = json.loads(shown.stdout)["instances"]
            assert [i["mode"] for i in instances] == ["internal"], instances
            beat = datetime.fromisoformat(instances[0]["heartbeat_at"])
            ages.append((datetime.now(UTC) - beat).total_seconds())
            time.sleep(0.3)
        # 20 samples over several heartbeat intervals, all fresh although the scheduler
        # polls only every 60 s.
        assert max(ages) < 2 * HEARTBEAT + 1, ages

        with client_for(server) as http:
            task = Api(http).create(name="now", params={"executor_id": "echo_executor"})
        triggered = apflow(env, "scheduler", "trigger", task["id"], "--wait", "-f", "json")
        assert triggered.returncode == 0, triggered.stderr
        assert "running it in this process" not in triggered.stderr  # the server's took it
        assert json.loads(triggered.stdout)["status"] == "completed"
    finally:
        server.stop()
