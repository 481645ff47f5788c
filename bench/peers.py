"""apflow against APScheduler on the same PostgreSQL, measured the same way, as ratios.

    .venv/bin/python bench/peers.py --what lateness --results bench/results   # about 2.3 min
    .venv/bin/python bench/peers.py --what burst --results bench/results      # about 30 s

lateness: 1,000 one-shot jobs at distinct instants over 60 s, trivial function; lateness is
actual start minus scheduled instant: p50/p95/p99/max. burst: 10,000 jobs due at one instant;
runs per second until all have run. apflow's figures come from bench/burst.py itself, run as a
subprocess through bench/burst_samples.py (which only adds p95 and the raw samples):
`--db postgresql --tasks 1000 --spread 60` and `--db postgresql --tasks 10000`. APScheduler 3
runs in its own process and virtual environment (bench/aps3_worker.py) on its own fresh
database; ratios are apflow / APScheduler (lateness: below 1 means apflow is less late;
runs_per_second: above 1 means apflow is faster).

Options add the other series the plots use: --with-sqlite (apflow on SQLite, lateness),
--with-two-processes (two apflow schedulers, burst), --with-aps4 (APScheduler 4 pre-release,
bench/aps4_worker.py, in its own virtual environment). The virtual environments are made as
bench/README.md says. Prints one JSON line; with --results, every run's raw samples are
written there as small JSON files that bench/plots.py reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from burst import create_pg, drop_pg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LATENESS_KEYS = ("lateness_p50_ms", "lateness_p95_ms", "lateness_p99_ms", "lateness_max_ms")


def run_json(command: list[str], label: str) -> dict[str, Any]:
    """Run one benchmark process; its last JSON line is the result."""
    started = time.monotonic()
    print(f"[peers] {label}: {' '.join(command)}", file=sys.stderr, flush=True)
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"{label} failed with status {completed.returncode}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    print(
        f"[peers] {label}: {time.monotonic() - started:.0f} s, {lines[-1]}",
        file=sys.stderr,
        flush=True,
    )
    return result


def out_args(results: Path | None, name: str) -> list[str]:
    return ["--out", str(results / name)] if results else []


def apflow(
    args: argparse.Namespace, db: str, tasks: int, spread: float, processes: int, name: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(BENCH / "burst_samples.py"),
        *out_args(args.results, name),
        "--db",
        db,
        "--tasks",
        str(tasks),
        "--spread",
        str(spread),
        "--processes",
        str(processes),
    ]
    return run_json(command, f"apflow {db} {tasks} tasks x{processes}")


def peer(
    python: str,
    worker: str,
    driver: str,
    tasks: int,
    spread: float,
    results: Path | None,
    name: str,
    extra: list[str],
) -> dict[str, Any]:
    pg_name, url = asyncio.run(create_pg())
    try:
        url = url.replace("postgresql://", f"postgresql+{driver}://", 1)
        command = [
            python,
            str(BENCH / worker),
            "--url",
            url,
            "--tasks",
            str(tasks),
            "--spread",
            str(spread),
            *out_args(results, name),
            *extra,
        ]
        return run_json(command, f"{worker} {tasks} tasks")
    finally:
        asyncio.run(drop_pg(pg_name))


def ratios(ours: dict[str, Any], theirs: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for key in keys:
        a, b = ours.get(key), theirs.get(key)
        out[key] = round(a / b, 2) if isinstance(a, int | float) and b else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--what", choices=["lateness", "burst", "both"], default="both")
    parser.add_argument("--lateness-tasks", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=60.0)
    parser.add_argument("--burst-tasks", type=int, default=10000)
    parser.add_argument("--aps3-python", default="/tmp/bench-venv/bin/python")
    parser.add_argument("--aps4-python", default="/tmp/aps4-venv/bin/python")
    parser.add_argument("--with-aps4", action="store_true")
    parser.add_argument("--with-sqlite", action="store_true")
    parser.add_argument("--with-two-processes", action="store_true")
    parser.add_argument("--results", type=Path, help="folder for the raw samples (JSON)")
    args = parser.parse_args()

    report: dict[str, Any] = {"load_1m_before": round(os.getloadavg()[0], 2)}
    parts = ["lateness", "burst"] if args.what == "both" else [args.what]
    for part in parts:
        tasks = args.lateness_tasks if part == "lateness" else args.burst_tasks
        spread = args.spread if part == "lateness" else 0.0
        section: dict[str, Any] = {}
        if part == "lateness" and args.with_sqlite:
            section["apflow_sqlite"] = apflow(
                args, "sqlite", tasks, spread, 1, f"apflow-{part}-sqlite.json"
            )
        section["apflow_postgresql"] = apflow(
            args, "postgresql", tasks, spread, 1, f"apflow-{part}-postgresql.json"
        )
        if part == "burst" and args.with_two_processes:
            section["apflow_postgresql_2_processes"] = apflow(
                args, "postgresql", tasks, spread, 2, f"apflow-{part}-postgresql-2p.json"
            )
        section["apscheduler3"] = peer(
            args.aps3_python,
            "aps3_worker.py",
            "psycopg2",
            tasks,
            spread,
            args.results,
            f"aps3-{part}-postgresql.json",
            [],
        )
        if args.with_aps4:
            section["apscheduler4"] = peer(
                args.aps4_python,
                "aps4_worker.py",
                "asyncpg",
                tasks,
                spread,
                args.results,
                f"aps4-{part}-postgresql.json",
                [],
            )
        keys = LATENESS_KEYS + (
            ("runs_per_second", "seconds_until_all_recorded") if part == "burst" else ()
        )
        section["ratio_apflow_over_apscheduler3"] = ratios(
            section["apflow_postgresql"], section["apscheduler3"], keys
        )
        if "apscheduler4" in section:
            section["ratio_apflow_over_apscheduler4"] = ratios(
                section["apflow_postgresql"], section["apscheduler4"], keys
            )
        report[part] = section
    report["load_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
