"""Diagnosis: how long the queries of one scheduler wake-up take, on an idle PostgreSQL
database holding 1,000 future schedules. InternalScheduler._poll_once runs reclaim_expired()
before claim_due(), and a run's started_at is claim_due's clock reading, so reclaim_expired's
time is part of every on-time firing's lateness (docs/benchmarks-api-peers.md).

    .venv/bin/python bench/diag_poll_queries.py

Prints one JSON line: p50 and p95 in ms of 300 calls each (5 ms apart).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from burst import create_pg, drop_pg, percentile, seed

from apflow_server.config import Settings
from apflow_server.storage.database import Database
from apflow_server.storage.runs import RunStore


async def main() -> None:
    name, url = await create_pg()
    database = Database(url)
    try:
        await database.upgrade()
        await seed(database, 1000, datetime.now(UTC) + timedelta(hours=1), 3600)
        home = Path(tempfile.mkdtemp(prefix="apflow-diag-"))
        settings = Settings.from_env({"APFLOW_HOME": str(home), "APFLOW_DATABASE_URL": url})
        store = RunStore(database, settings, "diag")
        calls = {
            "reclaim_expired": store.reclaim_expired,
            "claim_due_nothing_due": lambda: store.claim_due(100),
            "next_wake_at": lambda: store.next_wake_at(None),
        }
        figures: dict[str, object] = {"database": "postgresql", "calls": 300}
        for label, call in calls.items():
            times = []
            for _ in range(300):
                started = time.perf_counter()
                await call()
                times.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.005)
            figures[f"{label}_p50_ms"] = round(percentile(times, 0.5), 2)
            figures[f"{label}_p95_ms"] = round(percentile(times, 0.95), 2)
        print(json.dumps(figures), flush=True)
    finally:
        await database.dispose()
        await drop_pg(name)


if __name__ == "__main__":
    asyncio.run(main())
