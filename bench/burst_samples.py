"""bench/burst.py, unchanged, plus its raw samples: runs burst.py's own main() and, just before
it closes the database (before a PostgreSQL database is dropped), reads the run history once
more and writes the lateness samples to --out. Prints burst.py's JSON line with
lateness_p95_ms added.

    .venv/bin/python bench/burst_samples.py --out bench/results/apflow-lateness-sqlite.json \\
        --db sqlite --tasks 1000 --spread 60

Every argument other than --out is burst.py's. The figures are burst.py's own (same seeding,
same scheduler processes, same queries); this file only imports it.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))

import burst

from apflow_server.storage.models import TaskRun

FULL_SAMPLES_UP_TO = 2000  # larger runs keep only percentiles, so result files stay small


def quantiles(values: list[float], steps: int = 100) -> list[float]:
    return [round(burst.percentile(values, i / steps), 2) for i in range(steps + 1)]


class SamplingDatabase(burst.Database):
    """burst.Database that dumps the run history before it is disposed of."""

    out: Path | None = None
    samples: dict[str, object] = {}

    async def dispose(self) -> None:
        try:
            async with self.transaction() as session:
                runs = list(await session.scalars(select(TaskRun)))
            lateness = sorted(
                (r.started_at - r.scheduled_for).total_seconds() * 1000
                for r in runs
                if r.status == "completed" and r.started_at and r.scheduled_for
            )
            first_due = min((r.scheduled_for for r in runs if r.scheduled_for), default=None)
            finished = sorted(
                (r.finished_at - first_due).total_seconds()
                for r in runs
                if r.finished_at and first_due
            )
            SamplingDatabase.samples = {
                "lateness_ms": [round(v, 2) for v in lateness]
                if len(lateness) <= FULL_SAMPLES_UP_TO
                else None,
                "lateness_ms_percentiles": quantiles(lateness),
                "finished_s_after_due_percentiles": quantiles(finished),
                "lateness_p95_ms": round(burst.percentile(lateness, 0.95), 1),
            }
        finally:
            await super().dispose()


def main() -> None:
    argv = sys.argv[1:]
    out: Path | None = None
    if "--out" in argv:
        index = argv.index("--out")
        out = Path(argv[index + 1])
        del argv[index : index + 2]
    sys.argv = [str(Path(burst.__file__)), *argv]
    burst.Database = SamplingDatabase  # type: ignore[misc]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        burst.main()
    lines = [line for line in captured.getvalue().splitlines() if line.startswith("{")]
    figures = json.loads(lines[-1])
    samples = SamplingDatabase.samples
    figures["lateness_p95_ms"] = samples.get("lateness_p95_ms")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "bench/burst.py",
            "argv": argv,
            "figures": figures,
            **{k: v for k, v in samples.items() if k != "lateness_p95_ms"},
        }
        out.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
