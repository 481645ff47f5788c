"""Scaling out on PostgreSQL: echo bursts with 1, 2 and 4 scheduler processes, and direct
against through PgBouncer (transaction pooling), alternated so both see the same machine.

    .venv/bin/python bench/scale_out.py --tasks 20000 --repeats 2 --out bench/results/scale-out.json

Each figure is one run of bench/burst.py (its own fresh database, real scheduler processes);
the PgBouncer pairs use --tasks 10000 like the write-up's earlier runs. Prints one JSON line
and, with --out, writes it there for bench/plots.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def burst(*options: str) -> dict[str, Any]:
    command = [sys.executable, str(BENCH / "burst.py"), "--db", "postgresql", *options]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"[scale_out] {' '.join(options)}: {figures['runs_per_second']} runs/s, "
          f"{figures['duplicates']} duplicates", file=sys.stderr, flush=True)  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    processes: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for count in (1, 2, 4):
            run = burst("--tasks", str(args.tasks), "--processes", str(count))
            processes.setdefault(str(count), []).append(run)
    pairs = []
    for _ in range(args.repeats):
        direct = burst("--tasks", "10000")
        pooled = burst("--tasks", "10000", "--pgbouncer")
        pairs.append(
            {
                "direct": direct,
                "pgbouncer": pooled,
                "ratio": round(pooled["runs_per_second"] / direct["runs_per_second"], 2),
            }
        )
    summary = {"tasks": args.tasks, "processes": processes, "pgbouncer_pairs": pairs}
    line = json.dumps(summary)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
