"""The service processes' garbage-collector tuning, in a process of its own (freezing is for
the life of a process)."""

from __future__ import annotations

import json
import subprocess
import sys

from apflow_server.core.collector import YOUNG_THRESHOLD

PROBE = """
import gc, json
from apflow_server.core.collector import settle_after_startup
before = gc.get_threshold()
loaded = [object() for _ in range(1000)]  # what start-up keeps
settle_after_startup()
print(json.dumps({"frozen": gc.get_freeze_count(), "before": before, "after": gc.get_threshold()}))
"""


def test_start_up_objects_are_frozen_and_the_young_collected_less_often() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    assert report["frozen"] >= 1000
    assert report["after"] == [YOUNG_THRESHOLD, *report["before"][1:]]
    assert report["before"][0] < YOUNG_THRESHOLD
