"""APScheduler 3.x, measured the way bench/burst.py measures apflow: N date-trigger jobs due at
one instant (or spread over --spread seconds), bulk-inserted into SQLAlchemyJobStore on
PostgreSQL, then a BackgroundScheduler started on that store; runs per second until every job
has run, and how late each started. Prints one JSON line.

Runs in its own virtual environment (bench/README.md), normally started by bench/peers.py:

    /tmp/bench-venv/bin/python bench/aps3_worker.py \\
        --url postgresql+psycopg2://postgres@127.0.0.1:5432/DB --tasks 1000 --spread 60

Settings: APScheduler's defaults (BackgroundScheduler, ThreadPoolExecutor, max_instances 1,
coalesce off) except max_workers=100 (apflow's burst runs use --max-concurrent 100; the
default is 10) and misfire_grace_time (None by default here, so no job is dropped; apflow's
grace is 60 s; pass --misfire-grace 1 for APScheduler's own default).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import apscheduler
import peer_jobs
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.util import datetime_to_utc_timestamp


def seed(
    url: str, count: int, due: datetime, spread: float, grace: int | None, sink: str | None = None
) -> None:
    """Bulk-insert `count` jobs exactly as SQLAlchemyJobStore.add_job would store them (the
    same row: id, next_run_time, pickled job state), in one transaction."""
    store = SQLAlchemyJobStore(url=url)
    store.jobs_t.create(store.engine, checkfirst=True)
    owner = BackgroundScheduler(timezone=UTC)
    rows = []
    for index in range(count):
        when = due + timedelta(seconds=spread * index / count)
        job = Job(
            owner,
            id=uuid.uuid4().hex,
            func="peer_jobs:get" if sink else "peer_jobs:record",
            trigger=DateTrigger(run_date=when, timezone=UTC),
            executor="default",
            args=(index, when.timestamp())
            + ((peer_jobs.hit_url(sink, index, when.timestamp()),) if sink else ()),
            kwargs={},
            name=f"burst-{index}",
            misfire_grace_time=grace,
            coalesce=False,
            max_instances=1,
            next_run_time=when,
        )
        rows.append(
            {
                "id": job.id,
                "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol),
            }
        )
    with store.engine.begin() as connection:
        for start in range(0, len(rows), 2000):
            connection.execute(store.jobs_t.insert(), rows[start : start + 2000])
    store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="a psycopg2 SQLAlchemy URL")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.0)
    parser.add_argument("--lead", type=float, default=4.0, help="seconds until the burst")
    parser.add_argument("--max-workers", type=int, default=100)
    parser.add_argument(
        "--misfire-grace", default="none", help="seconds, or none (run however late)"
    )
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", help="write the raw samples here (JSON)")
    parser.add_argument("--sink", help="the real-work job: GET this sink (bench/sink.py)")
    args = parser.parse_args()
    grace = None if args.misfire_grace == "none" else int(args.misfire_grace)

    due = (datetime.now(UTC) + timedelta(seconds=args.lead + 2)).replace(microsecond=0)
    seed(args.url, args.tasks, due, args.spread, grace, args.sink)
    if datetime.now(UTC) >= due:
        raise SystemExit("seeding took longer than --lead; raise it")

    missed = errors = 0
    lock = threading.Lock()

    def on_event(event: object) -> None:
        nonlocal missed, errors
        with lock:
            if event.code == EVENT_JOB_MISSED:  # type: ignore[attr-defined]
                missed += 1
            else:
                errors += 1

    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=args.url)},
        executors={"default": ThreadPoolExecutor(max_workers=args.max_workers)},
        timezone=UTC,
    )
    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    scheduler.start()
    deadline = time.monotonic() + args.timeout
    try:
        while len(peer_jobs.SAMPLES) + missed + errors < args.tasks:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(peer_jobs.SAMPLES)} of {args.tasks} jobs ran")
            time.sleep(0.05)
    finally:
        scheduler.shutdown(wait=True)
    result, raw = peer_jobs.figures(
        list(peer_jobs.SAMPLES),
        due.timestamp(),
        args.tasks,
        scheduler=f"APScheduler {apscheduler.__version__}",
        database="postgresql",
        spread_seconds=args.spread,
        processes=1,
        max_workers=args.max_workers,
        misfire_grace_time=grace,
    )
    result["missed"] = missed
    result["errors"] = errors
    peer_jobs.write_out(args.out, "bench/aps3_worker.py", sys.argv[1:], result, raw)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
