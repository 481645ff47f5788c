"""The job the peer schedulers run, and the figures computed from what it recorded.

Standard library only: imported by bench/aps3_worker.py and bench/aps4_worker.py, each in its
own virtual environment (see bench/README.md). The job records when it started and ended and
the instant it was scheduled for, so lateness is measured the way bench/burst.py measures
apflow's (start minus scheduled instant), from the job's own clock readings.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

SAMPLES: list[tuple[int, float, float, float]] = []  # (index, scheduled, started, ended)
FULL_SAMPLES_UP_TO = 2000


def record(index: int, scheduled: float) -> None:
    """The trivial job: note the start, the scheduled instant and the end."""
    started = time.time()
    SAMPLES.append((index, scheduled, started, time.time()))


_HTTP_LOCK = threading.Lock()
_HTTP_CLIENT: Any = None
_ASYNC_CLIENTS: dict[Any, Any] = {}


def get(index: int, scheduled: float, url: str) -> None:
    """The real-work job, threaded: a GET with one httpx client shared by every job (pooled,
    keep-alive), as a well-written APScheduler 3 job would do it; then note the times."""
    global _HTTP_CLIENT
    import httpx

    started = time.time()
    with _HTTP_LOCK:
        if _HTTP_CLIENT is None:
            _HTTP_CLIENT = httpx.Client(
                timeout=30, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
            )
    _HTTP_CLIENT.get(url).raise_for_status()
    SAMPLES.append((index, scheduled, started, time.time()))


async def aget(index: int, scheduled: float, url: str) -> None:
    """The real-work job, async: a GET with one httpx.AsyncClient per event loop."""
    import asyncio

    import httpx

    started = time.time()
    loop = asyncio.get_running_loop()
    client = _ASYNC_CLIENTS.get(loop)
    if client is None:
        client = _ASYNC_CLIENTS[loop] = httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
        )
    (await client.get(url)).raise_for_status()
    SAMPLES.append((index, scheduled, started, time.time()))


def hit_url(sink: str, index: int, scheduled: float) -> str:
    """The sink URL one job calls: the sink records the index, the due instant and arrival."""
    return f"{sink}/hit?i={index}&due={scheduled:.6f}"


def percentile(values: list[float], fraction: float) -> float:
    """The same nearest-rank percentile as bench/burst.py."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def figures(
    samples: list[tuple[int, float, float, float]], due: float, tasks: int, **extra: object
) -> tuple[dict[str, object], dict[str, object]]:
    """burst.py's figure names from the job's records; and the raw samples for --out."""
    lateness = sorted((started - scheduled) * 1000 for _, scheduled, started, _ in samples)
    finished = sorted(ended - due for *_, ended in samples)
    span = max(finished) if finished else float("nan")
    result: dict[str, object] = {
        "tasks": tasks,
        **extra,
        "runs_recorded": len(samples),
        "duplicates": len(samples) - len({index for index, *_ in samples}),
        "seconds_until_all_recorded": round(span, 3),
        "runs_per_second": round(len(samples) / span, 1) if samples else 0.0,
        "lateness_p50_ms": round(percentile(lateness, 0.5), 1),
        "lateness_p95_ms": round(percentile(lateness, 0.95), 1),
        "lateness_p99_ms": round(percentile(lateness, 0.99), 1),
        "lateness_max_ms": round(max(lateness), 1) if lateness else None,
    }
    raw: dict[str, object] = {
        "lateness_ms": [round(v, 2) for v in lateness]
        if len(lateness) <= FULL_SAMPLES_UP_TO
        else None,
        "lateness_ms_percentiles": [round(percentile(lateness, i / 100), 2) for i in range(101)],
        "finished_s_after_due_percentiles": [
            round(percentile(finished, i / 100), 3) for i in range(101)
        ],
    }
    return result, raw


def write_out(path: str | None, benchmark: str, argv: list[str], result: dict, raw: dict) -> None:
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": benchmark, "argv": argv, "figures": result, **raw}
    out.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
