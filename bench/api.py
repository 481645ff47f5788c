"""HTTP API throughput and latency: wrk against one uvicorn worker on PostgreSQL.

    .venv/bin/python bench/api.py                          # about 2 min 15 s
    .venv/bin/python bench/api.py --duration 30 --connections 64

Scenarios, each after a warm-up (`wrk -d{warmup}s`, not counted), then
`wrk -t{threads} -c{connections} -d{duration}s --latency -s bench/wrk/<script>.lua`:

  ceiling   bench/api_ceiling.py: a bare Starlette endpoint doing tasks.get's database read
            (select the task row by id, return it as JSON), under uvicorn like `apflow serve`
  get       JSON-RPC `tasks.get` of one existing task       (apflow serve --no-scheduler)
  due       JSON-RPC `tasks.scheduled.due` (limit --due-limit, 1,000 due tasks stored)
  webhook   POST /webhook/trigger/{id}, async (202), authentication off, round-robin over
            --webhook-tasks tasks (echo executor); the server runs them: `apflow serve` with its
            default internal scheduler, on its own fresh database. After wrk stops, the runs
            still queued are waited for, so executed runs per second is reported too.
  get_info_log  `tasks.get` again with `apflow serve`'s default --log-level info (uvicorn's
            access log on): what the default logging costs.
  *_1conn   the same request on one connection (wrk -t1 -c1 -d{single_duration}s): the
            latency of a request alone, for ceiling and get.

Every server is one uvicorn process (`python -m apflow_server.cli.main serve --port P
--log-level warning`, or the ceiling under `python -m uvicorn`), on a fresh PostgreSQL database
that is dropped afterwards. wrk, the server and PostgreSQL share the machine's cores. Prints one
JSON line: per scenario requests/s, latency p50/p90/p99/max (ms, from wrk's latency
distribution), non-2xx share; and get_rps / ceiling_rps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from burst import ADMIN_URL, create_pg, drop_pg, seed

from apflow_server.storage.database import Database
from apflow_server.storage.models import Task, TaskRun

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WRK = shutil.which("wrk") or "/usr/bin/wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One server process, started and stopped around a scenario."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.database = env["APFLOW_DATABASE_URL"].rsplit("/", 1)[1]
        self.log = log
        handle = open(log, "wb")
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=handle, stderr=handle)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def apflow_server(url: str, home: Path, *, scheduler: bool, log_level: str, name: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APFLOW_")} | {
        "APFLOW_DATABASE_URL": url,
        "APFLOW_HOME": str(home),
    }
    command = [
        sys.executable, "-m", "apflow_server.cli.main",
        "serve", "--port", str(port), "--log-level", log_level,
    ]  # fmt: skip
    if not scheduler:
        command.append("--no-scheduler")
    return Server(command, env, port, home / f"{name}.log")


def ceiling_server(url: str, home: Path) -> Server:
    port = free_port()
    env = dict(os.environ) | {"APFLOW_DATABASE_URL": url}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "api_ceiling:app",
        "--app-dir",
        str(BENCH),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return Server(command, env, port, home / "ceiling.log")


def wrk(
    args: argparse.Namespace,
    url: str,
    script: str,
    env: dict[str, str],
    duration: int,
    single: bool = False,
) -> dict[str, Any]:
    command = [
        WRK,
        f"-t{1 if single else args.threads}",
        f"-c{1 if single else args.connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(BENCH / "wrk" / script),
        url,
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(os.environ) | {"WRK_LUA_DIR": str(BENCH / "wrk")} | env,
    )
    if completed.returncode != 0:
        raise SystemExit(f"wrk failed: {completed.stderr}")
    line = next(x for x in completed.stdout.splitlines() if x.startswith("WRKJSON "))
    data = json.loads(line[len("WRKJSON ") :])
    data["text"] = completed.stdout
    return data


def measure(
    args: argparse.Namespace,
    server: Server,
    path: str,
    script: str,
    env: dict[str, str],
    after_warmup: Any = None,
    single: bool = False,
) -> dict[str, Any]:
    """wrk after a warm-up; `single`: one connection (-t1 -c1) for --single-duration s."""
    url = f"http://127.0.0.1:{server.port}{path}"
    wrk(args, url, script, env, 1 if single else args.warmup, single)
    if after_warmup is not None:
        after_warmup()
    sessions_before = pg_sessions(server.database)
    data = wrk(args, url, script, env, args.single_duration if single else args.duration, single)
    sessions_opened = pg_sessions(server.database) - sessions_before
    seconds = data["duration_us"] / 1e6
    errors = data["errors"]
    latency = data["latency_us"]
    return {
        "requests": data["requests"],
        "rps": round(data["requests"] / seconds, 1),
        "latency_p50_ms": round(latency["p50"] / 1000, 2),
        "latency_p90_ms": round(latency["p90"] / 1000, 2),
        "latency_p99_ms": round(latency["p99"] / 1000, 2),
        "latency_max_ms": round(latency["max"] / 1000, 2),
        "non_2xx": errors["status"],
        "non_2xx_share": round(errors["status"] / max(1, data["requests"]), 4),
        "socket_errors": errors["connect"] + errors["read"] + errors["write"],
        "timeouts": errors["timeout"],
        "pg_connections_opened_per_s": round(sessions_opened / seconds, 1),
        "_wrk_text": data["text"],
    }


def pg_sessions(database: str) -> int:
    """PostgreSQL's count of sessions ever opened on `database` (pg_stat_database.sessions):
    its growth during a run is the server's new connections (pool churn)."""

    async def query() -> int:
        connection = await asyncpg.connect(ADMIN_URL)
        try:
            return await connection.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = $1", database
            )
        finally:
            await connection.close()

    with ThreadPoolExecutor(1) as pool:  # main()'s loop is busy running wrk
        return pool.submit(asyncio.run, query()).result()


def rpc_body(method: str, params: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})


def check(server: Server, path: str, body: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
    if "result" not in answer:
        raise SystemExit(f"{path} answered {answer}")
    return answer["result"]


async def seed_webhook_tasks(database: Database, count: int, overlap: str) -> list[str]:
    now = datetime.now(UTC)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    rows = [
        {
            "id": task_id,
            "name": f"hook-{index}",
            "status": "pending",
            "priority": 2,
            "inputs": {"n": index},
            "params": {"executor_id": "echo_executor"},
            "schemas": {},
            "dependencies": [],
            "progress": 0.0,
            "created_at": now,
            "updated_at": now,
            "schedule_timezone": "UTC",
            "schedule_enabled": False,
            "run_count": 0,
            "schedule_misfire": "run_once",
            "schedule_overlap": overlap,
            "schedule_jitter_seconds": 0,
        }
        for index, task_id in enumerate(ids)
    ]
    async with database.transaction(write=True) as session:
        for start in range(0, len(rows), 2000):
            await session.execute(insert(Task), rows[start : start + 2000])
    return ids


async def count_runs(database: Database) -> tuple[int, int]:
    async with database.transaction() as session:
        total = await session.scalar(select(func.count()).select_from(TaskRun))
        done = await session.scalar(
            select(func.count())
            .select_from(TaskRun)
            .where(TaskRun.status.in_(["completed", "failed", "cancelled"]))
        )
    return total or 0, done or 0


def count_runs_once(url: str) -> Any:
    async def once() -> tuple[int, int]:
        database = Database(url)
        try:
            return await count_runs(database)
        finally:
            await database.dispose()

    return once()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--single-duration",
        type=int,
        default=5,
        help="seconds of the one-connection runs (ceiling_1conn, get_1conn, ...); 0: none",
    )
    parser.add_argument("--due-tasks", type=int, default=1000)
    parser.add_argument("--due-limit", type=int, default=10)
    parser.add_argument("--webhook-tasks", type=int, default=5000)
    parser.add_argument("--overlap", default="skip", choices=["skip", "cancel_other"])
    parser.add_argument(
        "--scenarios",
        default="ceiling,get,due,webhook,get_info_log",
        help="comma-separated subset of the default",
    )
    parser.add_argument("--out", help="write the figures and wrk's text output here (JSON)")
    args = parser.parse_args()
    scenarios = args.scenarios.split(",")

    load_before = os.getloadavg()[0]
    home = Path(tempfile.mkdtemp(prefix="apflow-api-bench-"))
    results: dict[str, Any] = {}
    read_name, read_url = await create_pg()
    hook_name, hook_url = await create_pg()
    databases = [Database(read_url), Database(hook_url)]
    try:
        for database in databases:
            await database.upgrade()
        read_db, hook_db = databases
        await seed(read_db, args.due_tasks, datetime.now(UTC) - timedelta(hours=2), 3600)
        async with read_db.transaction() as session:
            task_id = await session.scalar(select(Task.id).order_by(Task.id).limit(1))
        get_body = rpc_body("tasks.get", {"task_id": task_id})
        due_body = rpc_body("tasks.scheduled.due", {"limit": args.due_limit})

        if "ceiling" in scenarios:
            server = ceiling_server(read_url, home)
            try:
                check(server, "/", get_body)
                results["ceiling"] = measure(args, server, "/", "post.lua", {"WRK_BODY": get_body})
                if args.single_duration:
                    results["ceiling_1conn"] = measure(
                        args, server, "/", "post.lua", {"WRK_BODY": get_body}, single=True
                    )
            finally:
                server.stop()
        for name, level in (("get", "warning"), ("get_info_log", "info")):
            if name not in scenarios and not (name == "get" and "due" in scenarios):
                continue
            server = apflow_server(
                read_url,
                home,
                scheduler=False,
                log_level=level,
                name=name,
            )
            try:
                if name in scenarios:
                    assert check(server, "/tasks/", get_body)["id"] == task_id
                    results[name] = measure(
                        args, server, "/tasks/", "post.lua", {"WRK_BODY": get_body}
                    )
                    if args.single_duration and name != "get_info_log":
                        results[f"{name}_1conn"] = measure(
                            args,
                            server,
                            "/tasks/",
                            "post.lua",
                            {"WRK_BODY": get_body},
                            single=True,
                        )
                if name == "get" and "due" in scenarios:
                    due = check(server, "/tasks/", due_body)
                    assert len(due["items"]) == min(args.due_limit, args.due_tasks), due
                    results["due"] = measure(
                        args, server, "/tasks/", "post.lua", {"WRK_BODY": due_body}
                    )
            finally:
                server.stop()

        if "webhook" in scenarios:
            ids = await seed_webhook_tasks(hook_db, args.webhook_tasks, args.overlap)
            ids_file = home / "webhook-ids.txt"
            ids_file.write_text("\n".join(ids) + "\n")
            server = apflow_server(
                hook_url, home, scheduler=True, log_level="warning", name="webhook"
            )
            try:
                url = f"http://127.0.0.1:{server.port}/webhook/trigger/"
                probe = urllib.request.Request(url + ids[0], data=b"", method="POST")
                assert urllib.request.urlopen(probe, timeout=10).status == 202
                env = {"WRK_IDS": str(ids_file)}
                marks: dict[str, Any] = {}

                def mark() -> None:  # after the warm-up: its runs are not counted
                    time.sleep(0.5)  # the warm-up's last requests finish
                    with ThreadPoolExecutor(1) as pool:  # main()'s loop is busy running wrk
                        marks["before"] = pool.submit(
                            asyncio.run, count_runs_once(hook_url)
                        ).result()
                    marks["started"] = time.monotonic()

                row = measure(args, server, "", "webhook.lua", env, after_warmup=mark)
                stopped = time.monotonic()
                before_total, started = marks["before"][0], marks["started"]
                total, done = await count_runs(hook_db)
                while done < total and time.monotonic() - stopped < 120:
                    await asyncio.sleep(0.2)
                    total, done = await count_runs(hook_db)
                drained = time.monotonic()
                accepted = total - before_total
                row.update(
                    {
                        "overlap": args.overlap,
                        "tasks": args.webhook_tasks,
                        "runs_started_during_wrk": accepted,
                        "seconds_to_finish_after_wrk": round(drained - stopped, 2),
                        "runs_all_finished": done >= total,
                        "runs_executed_per_second": round(accepted / (drained - started), 1),
                    }
                )
                results["webhook"] = row
            finally:
                server.stop()
    finally:
        for database in databases:
            await database.dispose()
        await drop_pg(read_name)
        await drop_pg(hook_name)

    figures: dict[str, Any] = {
        "threads": args.threads,
        "connections": args.connections,
        "duration_s": args.duration,
        "database": "postgresql",
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    for name, row in results.items():
        figures[name] = {k: v for k, v in row.items() if not k.startswith("_")}
    if "get" in results and "ceiling" in results:
        figures["get_over_ceiling"] = round(results["get"]["rps"] / results["ceiling"]["rps"], 3)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        raw = {
            "benchmark": "bench/api.py",
            "argv": sys.argv[1:],
            "figures": figures,
            "wrk_output": {name: row["_wrk_text"] for name, row in results.items()},
        }
        Path(args.out).write_text(json.dumps(raw, indent=1) + "\n")
    shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
