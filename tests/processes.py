"""Real scheduler processes for the multi-process, crash and chaos tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

PROCESS_SCRIPT = Path(__file__).parent / "scheduler_process.py"


def spawn(url: str, journal: Path, *args: str, lease: int = 10) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "APFLOW_DATABASE_URL": url,
        "APFLOW_TEST_JOURNAL": str(journal),
        "APFLOW_LEASE_SECONDS": str(lease),
    }
    process = subprocess.Popen(
        [sys.executable, str(PROCESS_SCRIPT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("READY"):
        process.kill()
        raise AssertionError(f"scheduler process did not start: {line} {process.stderr.read()}")
    return process


def stop(process: subprocess.Popen[str], timeout: float = 20) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err
