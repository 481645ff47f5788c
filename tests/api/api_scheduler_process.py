"""One API-mode scheduler (apflow_server.scheduler.api_mode.ApiScheduler) in its own process.

    python tests/api/api_scheduler_process.py [--poll 0.5]

Reads APFLOW_API_SERVER_URL and APFLOW_JWT_SECRET (or config.cli.yaml in APFLOW_HOME), signs
its token with resolve_token, logs at INFO on stderr, prints READY <instance id> once started,
and stops on SIGTERM, printing STOPPED executed=<n>.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from apflow_server.config import Settings
from apflow_server.scheduler.api_mode import ApiScheduler, resolve_token
from apflow_server.scheduler.base import SchedulerConfig


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
    settings = Settings.from_env()
    token = resolve_token(settings, settings.jwt_secret)
    scheduler = ApiScheduler(SchedulerConfig(poll_interval=args.poll), settings, token)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await scheduler.start()
    print(f"READY {scheduler.instance_id}", flush=True)
    await stop.wait()
    await scheduler.stop()
    stats = await scheduler.get_status()
    print(f"STOPPED executed={stats.tasks_executed}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
