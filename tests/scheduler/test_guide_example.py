"""The scheduler guide's Python API example, as written (package renamed), in a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent

GUIDE_EXAMPLE = """
import asyncio
from apflow_server.scheduler import InternalScheduler
from apflow_server.scheduler.base import SchedulerConfig

# Configure scheduler
config = SchedulerConfig(
    poll_interval=30,  # Check every 30 seconds
    max_concurrent_tasks=5,  # Max 5 parallel tasks
    task_timeout=1800,  # 30 minute timeout
    user_id="user123"  # Optional: filter by user
)

# Create and start scheduler
scheduler = InternalScheduler(config)

async def main():
    # Register completion callback
    def on_complete(task_id, success, result):
        print(f"Task {task_id}: {'completed' if success else 'failed'}", flush=True)

    scheduler.on_task_complete(on_complete)

    # Start scheduler
    await scheduler.start()

    # Run until interrupted
    try:
        while True:
            await asyncio.sleep(1)
    except KeyboardInterrupt:
        await scheduler.stop()

asyncio.run(main())
"""


# Ctrl-C as in a terminal: a process started in the background by a non-interactive shell
# (as CI may start the suite) inherits SIGINT ignored, and Python then leaves it ignored.
AS_FROM_A_TERMINAL = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"


def press_ctrl_c(example: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Ctrl-C, then the example's output once it exits; it is killed if it outlives the wait."""
    example.send_signal(signal.SIGINT)
    try:
        return example.communicate(timeout=timeout)
    finally:
        example.kill()


def test_the_guide_example_runs_a_users_task(tmp_path: Path) -> None:
    env = {**os.environ, "APFLOW_HOME": str(tmp_path)}
    env.pop("APFLOW_DATABASE_URL", None)
    apflow = str(Path(sys.executable).with_name("apflow"))
    due = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()

    def create(user: str) -> str:
        return subprocess.run(
            [apflow, "tasks", "create", "--name", user, "--user-id", user,
             "--executor", "echo_executor", "--schedule-type", "once",
             "--schedule-expression", due, "--schedule-enabled", "-f", "json"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    mine, other = create("user123"), create("someone-else")
    example = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL + GUIDE_EXAMPLE],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(6)
    finally:
        out, err = press_ctrl_c(example, timeout=30)
    mine_id, other_id = json.loads(mine)["id"], json.loads(other)["id"]
    assert f"Task {mine_id}: completed" in out, (out, err)
    assert other_id not in out  # the user filter


def test_the_guide_example_exits_on_ctrl_c_while_a_run_is_executing(tmp_path: Path) -> None:
    """Ctrl-C in the guide's loop cancels every task at once, the finisher included (the
    example's `except KeyboardInterrupt` never sees it: asyncio turns it into cancellation).
    The running run must still be recorded, as cancelled, and the process must exit."""
    env = {**os.environ, "APFLOW_HOME": str(tmp_path)}
    env.pop("APFLOW_DATABASE_URL", None)
    apflow = str(Path(sys.executable).with_name("apflow"))
    # The CLI loads the test executors as a plugin, so it accepts a task naming test_sleep.
    plugged = {
        **env,
        "APFLOW_PLUGINS": "support",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
    }

    def cli(*args: str) -> Any:
        done = subprocess.run(
            [apflow, *args, "-f", "json"], env=plugged, capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)

    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    task = cli(
        "tasks", "create", "--name", "long", "--user-id", "user123", "--executor", "test_sleep",
        "--inputs", '{"seconds": 60}', "--schedule-type", "once",
        "--schedule-expression", due, "--schedule-enabled",
    )  # fmt: skip
    registers_test_executors = "import support\n"  # found through PYTHONPATH
    example = subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL + registers_test_executors + GUIDE_EXAMPLE],
        env={
            **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while cli("tasks", "get", task["id"])["status"] != "in_progress":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.2)
    finally:
        _, err = press_ctrl_c(example, timeout=20)
    runs = cli("tasks", "runs", task["id"])["items"]
    assert [run["status"] for run in runs] == ["cancelled"], (runs, err[-2000:])
    assert cli("tasks", "get", task["id"])["status"] == "cancelled"
