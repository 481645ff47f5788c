"""A scheduler in its own OS process, for the multi-process and crash tests.

    python tests/scheduler_process.py --poll 60 --max-concurrent 50 [--duration S]

Uses APFLOW_DATABASE_URL and APFLOW_LEASE_SECONDS from the environment; registers the test
executors of tests/support.py; prints READY <instance id> once started; stops gracefully on
SIGTERM/SIGINT or after --duration seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import support  # noqa: F401  (registers the test executors; a script's own folder is on sys.path)

from apflow_server.scheduler import InternalScheduler, SchedulerConfig


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--poll", type=float, default=60)
    parser.add_argument("--max-concurrent", type=int, default=10)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--grace", type=float, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(process)d %(levelname)s %(message)s")
    scheduler = InternalScheduler(
        SchedulerConfig(
            poll_interval=args.poll,
            max_concurrent_tasks=args.max_concurrent,
            shutdown_grace_seconds=args.grace,
            heartbeat_interval=1,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await scheduler.start()
    print(f"READY {scheduler.instance_id}", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), args.duration)
    except TimeoutError:
        pass
    await scheduler.stop()
    stats = await scheduler.get_status()
    print(f"STOPPED executed={stats.tasks_executed}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
