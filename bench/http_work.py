"""Real work: schedulers whose jobs are HTTP calls, measured at the receiving end.

    .venv/bin/python bench/http_work.py --what burst --results bench/results      # ~2 min
    .venv/bin/python bench/http_work.py --what lateness --results bench/results   # ~5 min

Every job is a GET to a local sink (bench/sink.py, a small asyncio HTTP server in its own
process) that records when each request arrives, by its own clock: that is when the work
happened, whatever the scheduler's history says.

burst: --tasks (10,000) jobs due at one instant; calls per second = tasks / (last arrival -
due). Series: apflow on PostgreSQL with one scheduler process and with two, APScheduler 3
(BackgroundScheduler, SQLAlchemyJobStore, 100 worker threads, one shared httpx.Client), and
with --with-aps4 APScheduler 4 (AsyncScheduler, SQLAlchemyDataStore, one shared
httpx.AsyncClient). apflow's job is a `rest_executor` task (`apflow scheduler start
--max-concurrent 100`, APFLOW_REST_ALLOW_PRIVATE_URLS=1 since the sink is on loopback).

lateness: --tasks (1,000) jobs at distinct instants spread over --spread (60) seconds;
lateness = arrival at the sink - scheduled instant, p50/p95/p99/max. Series: apflow on SQLite
and on PostgreSQL, APScheduler 3 (and 4) on PostgreSQL. poll_interval stays at its default
(60 s): the scheduler sleeps until the next due instant.

Every series gets its own fresh database and sink. The peers run in their own virtual
environments (bench/README.md; they need httpx too). Prints one JSON line; ratios are apflow /
APScheduler 3 (calls_per_second above 1: apflow faster; lateness below 1: apflow less late).
With --results, each series' sink records are written there for bench/plots.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from burst import create_pg, drop_pg, percentile, seed
from peer_jobs import hit_url

from apflow_server.storage.database import Database

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APS3_PYTHON = os.environ.get("APS3_PYTHON", "/tmp/bench-venv/bin/python")
APS4_PYTHON = os.environ.get("APS4_PYTHON", "/tmp/aps4-venv/bin/python")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SinkProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH / "sink.py"), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("READY"), line

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (arrived := self.get("/__count")) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {arrived} of {count} calls reached the sink")
            time.sleep(0.1)

    def stop(self) -> list[tuple[int, float, float]]:
        records = [tuple(record) for record in self.get("/__dump")]
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        return records  # type: ignore[return-value]


def figures(records: list[tuple[int, float, float]], tasks: int, **extra: Any) -> dict[str, Any]:
    """The sink's view: every call, how late it arrived, how fast they came."""
    lateness = [(arrival - due) * 1000 for _, due, arrival in records]
    first_due = min(due for _, due, _ in records)
    span = max(arrival for *_, arrival in records) - first_due
    return {
        **extra,
        "tasks": tasks,
        "calls_arrived": len(records),
        "duplicates": len(records) - len({index for index, *_ in records}),
        "seconds_until_all_arrived": round(span, 3),
        "calls_per_second": round(len(records) / span, 1),
        "lateness_p50_ms": round(percentile(lateness, 0.5), 1),
        "lateness_p95_ms": round(percentile(lateness, 0.95), 1),
        "lateness_p99_ms": round(percentile(lateness, 0.99), 1),
        "lateness_max_ms": round(max(lateness), 1),
    }


async def apflow_series(
    db: str, tasks: int, spread: float, processes: int, lead: float
) -> tuple[dict[str, Any], list[tuple[int, float, float]]]:
    workdir = Path(tempfile.mkdtemp(prefix="apflow-http-bench-"))
    pg_name = None
    if db == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        pg_name, url = await create_pg()
    database = Database(url)
    sink = SinkProcess()
    schedulers: list[subprocess.Popen[bytes]] = []
    try:
        await database.upgrade()
        due = (datetime.now(UTC) + timedelta(seconds=lead + 2)).replace(microsecond=0)
        await seed(
            database,
            tasks,
            due,
            spread,
            executor="rest_executor",
            inputs_of=lambda index, when: {"url": hit_url(sink.url, index, when.timestamp())},
        )
        env = {
            **os.environ,
            "APFLOW_DATABASE_URL": url,
            "APFLOW_HOME": str(workdir),
            "APFLOW_REST_ALLOW_PRIVATE_URLS": "1",
        }
        command = [
            sys.executable,
            "-m",
            "apflow_server.cli.main",
            "scheduler",
            "start",
            "--max-concurrent",
            "100",
        ]
        for index in range(processes):
            log = open(workdir / f"scheduler-{index}.log", "wb")
            schedulers.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
        await asyncio.to_thread(sink.wait_for, tasks, 600 + spread)
        records = sink.stop()
        label = f"apflow {db}" + (f" x{processes}" if processes > 1 else "")
        return figures(records, tasks, series=label, database=db, processes=processes), records
    finally:
        for process in schedulers:
            process.send_signal(signal.SIGTERM)
        for process in schedulers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if sink.process.poll() is None:
            sink.process.kill()
        await database.dispose()
        if pg_name:
            await drop_pg(pg_name)


async def peer_series(
    which: str, tasks: int, spread: float
) -> tuple[dict[str, Any], list[tuple[int, float, float]]]:
    python, worker, driver = {
        "aps3": (APS3_PYTHON, "aps3_worker.py", "postgresql+psycopg2"),
        "aps4": (APS4_PYTHON, "aps4_worker.py", "postgresql+asyncpg"),
    }[which]
    pg_name, url = await create_pg()
    sink = SinkProcess()
    try:
        command = [
            python,
            str(BENCH / worker),
            "--url",
            url.replace("postgresql://", f"{driver}://"),
            "--tasks",
            str(tasks),
            "--spread",
            str(spread),
            "--sink",
            sink.url,
        ]
        completed = await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, capture_output=True, text=True
        )
        if completed.returncode != 0:
            sys.stderr.write(completed.stdout + completed.stderr)
            raise SystemExit(f"{which} failed with status {completed.returncode}")
        own = json.loads([line for line in completed.stdout.splitlines() if line][-1])
        records = sink.stop()
        label = {"aps3": "APScheduler 3", "aps4": "APScheduler 4"}[which]
        return (
            figures(records, tasks, series=label, database="postgresql", version=own["scheduler"]),
            records,
        )
    finally:
        if sink.process.poll() is None:
            sink.process.kill()
        await drop_pg(pg_name)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--what", choices=["burst", "lateness"], required=True)
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--spread", type=float, default=60.0)
    parser.add_argument("--with-aps4", action="store_true")
    parser.add_argument("--results", help="write each series' sink records here")
    parser.add_argument("--only", help="comma-separated series keys to run (default: all)")
    args = parser.parse_args()
    burst = args.what == "burst"
    tasks = args.tasks or (10_000 if burst else 1000)
    spread = 0.0 if burst else args.spread
    lead = 6.0 if burst else 4.0

    plan: list[tuple[str, Any]] = (
        [
            ("apflow-postgresql", lambda: apflow_series("postgresql", tasks, spread, 1, lead)),
            ("apflow-postgresql-2p", lambda: apflow_series("postgresql", tasks, spread, 2, lead)),
            ("aps3-postgresql", lambda: peer_series("aps3", tasks, spread)),
        ]
        if burst
        else [
            ("apflow-sqlite", lambda: apflow_series("sqlite", tasks, spread, 1, lead)),
            ("apflow-postgresql", lambda: apflow_series("postgresql", tasks, spread, 1, lead)),
            ("aps3-postgresql", lambda: peer_series("aps3", tasks, spread)),
        ]
    )
    if args.with_aps4:
        plan.append(("aps4-postgresql", lambda: peer_series("aps4", tasks, spread)))
    if args.only:
        wanted = set(args.only.split(","))
        plan = [(key, run) for key, run in plan if key in wanted]

    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    for key, run in plan:
        print(f"[http_work] {args.what} {key} ...", file=sys.stderr, flush=True)
        row, records = await run()
        print(f"[http_work] {key}: {json.dumps(row)}", file=sys.stderr, flush=True)
        results[key] = row
        if args.results:
            out = Path(args.results) / f"http-{args.what}-{key}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"figures": row, "records": records}) + "\n")
    ratios: dict[str, Any] = {}
    peer = results.get("aps3-postgresql")
    if peer is not None:
        for key, row in results.items():
            if key.startswith("apflow"):
                metric = "calls_per_second" if burst else "lateness_p99_ms"
                ratios[f"{key}/aps3 {metric}"] = round(row[metric] / peer[metric], 2)
    print(
        json.dumps(
            {
                "what": args.what,
                "tasks": tasks,
                "spread_seconds": spread,
                "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
                "series": results,
                "ratios": ratios,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
