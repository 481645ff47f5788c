"""APScheduler 4 (pre-release), measured like bench/aps3_worker.py: N date-trigger schedules
due at one instant (or spread over --spread seconds) in SQLAlchemyDataStore on PostgreSQL
(asyncpg), then an AsyncScheduler started on that store. Prints one JSON line.

    /tmp/aps4-venv/bin/python bench/aps4_worker.py \\
        --url postgresql+asyncpg://postgres@127.0.0.1:5432/DB --tasks 1000 --spread 60

Settings: APScheduler 4's defaults (AsyncScheduler, LocalEventBroker, max_concurrent_jobs=100,
the default "async" job executor, misfire_grace_time None). Schedules are added with the public
add_schedule (APScheduler 4 stores them in several tables; no bulk path is documented), up to
--seed-concurrency at a time, before the scheduler starts processing; --lead must cover that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_jobs
from apscheduler import AsyncScheduler
from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
from apscheduler.triggers.date import DateTrigger
from sqlalchemy.ext.asyncio import create_async_engine


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="an asyncpg SQLAlchemy URL")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.0)
    parser.add_argument("--lead", type=float, default=None, help="default: 4 s + 2.5 ms/task")
    parser.add_argument("--seed-concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", help="write the raw samples here (JSON)")
    parser.add_argument("--sink", help="the real-work job: GET this sink (bench/sink.py)")
    args = parser.parse_args()
    lead = args.lead if args.lead is not None else 4.0 + 0.0025 * args.tasks

    engine = create_async_engine(args.url, pool_size=args.seed_concurrency + 2)
    store = SQLAlchemyDataStore(engine)
    due = (datetime.now(UTC) + timedelta(seconds=lead + 2)).replace(microsecond=0)
    async with AsyncScheduler(store) as scheduler:
        seeding = time.monotonic()
        gate = asyncio.Semaphore(args.seed_concurrency)

        async def add(index: int) -> None:
            when = due + timedelta(seconds=args.spread * index / args.tasks)
            async with gate:
                job_args: list[object] = [index, when.timestamp()]
                if args.sink:
                    job_args.append(peer_jobs.hit_url(args.sink, index, when.timestamp()))
                await scheduler.add_schedule(
                    peer_jobs.aget if args.sink else peer_jobs.record,
                    DateTrigger(when),
                    id=f"burst-{index}",
                    args=job_args,
                )

        await asyncio.gather(*(add(index) for index in range(args.tasks)))
        seed_seconds = time.monotonic() - seeding
        if datetime.now(UTC) >= due:
            raise SystemExit(f"seeding took {seed_seconds:.1f} s, longer than --lead {lead}")
        await scheduler.start_in_background()
        deadline = time.monotonic() + args.timeout
        while len(peer_jobs.SAMPLES) < args.tasks:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(peer_jobs.SAMPLES)} of {args.tasks} jobs ran")
            await asyncio.sleep(0.05)
        await scheduler.stop()
    await engine.dispose()
    result, raw = peer_jobs.figures(
        list(peer_jobs.SAMPLES),
        due.timestamp(),
        args.tasks,
        scheduler=f"APScheduler {version('apscheduler')}",
        database="postgresql",
        spread_seconds=args.spread,
        processes=1,
        max_concurrent_jobs=100,
        seed_seconds=round(seed_seconds, 1),
    )
    peer_jobs.write_out(args.out, "bench/aps4_worker.py", sys.argv[1:], result, raw)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
