"""The figures' PNGs under docs/, drawn only from the saved results in bench/results/ (the
JSON files that bench/peers.py --results and bench/api.py --out write), so they can be redrawn
without measuring again.

    /tmp/bench-venv/bin/python bench/plots.py            # matplotlib: see bench/README.md

docs/benchmark-lateness.png    lateness CDF, 1,000 one-shot jobs over 60 s: apflow on SQLite,
                               apflow on PostgreSQL, APScheduler 3 (and 4, if measured)
docs/benchmark-throughput.png  runs per second, 10,000 jobs due at once: apflow with one and
                               with two scheduler processes, APScheduler 3 (and 4)
docs/benchmark-api.png         requests per second of bench/api.py's scenarios
docs/benchmark-http-lateness.png    real work (bench/http_work.py): lateness at the HTTP sink,
                               1,000 calls over 60 s, apflow's rest_executor against APScheduler
docs/benchmark-http-throughput.png  calls per second at the sink, 10,000 calls due at once
docs/benchmark-top-of-minute.png    10,000 tasks on `* * * * *`, two scheduler processes:
                               p50/p99 lateness per minute and the history's size under retention
                               (bench/top_of_minute.py's JSON, saved as top-of-minute.json)
docs/benchmark-scale-out.png   echo bursts with 1, 2 and 4 scheduler processes, and direct
                               against PgBouncer (bench/scale_out.py --out scale-out.json)

Prints one JSON line: the files written and the numbers drawn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

ROOT = Path(__file__).resolve().parent.parent
LATENESS = [
    ("apflow-lateness-sqlite.json", "apflow, SQLite", "tab:blue", "-"),
    ("apflow-lateness-postgresql.json", "apflow, PostgreSQL", "tab:blue", "--"),
    ("aps3-lateness-postgresql.json", "APScheduler 3, PostgreSQL", "tab:orange", "-"),
    ("aps4-lateness-postgresql.json", "APScheduler 4 (alpha), PostgreSQL", "tab:red", ":"),
]
BURST = [
    ("apflow-burst-postgresql.json", "apflow\n1 process", "tab:blue"),
    ("apflow-burst-postgresql-2p.json", "apflow\n2 processes", "tab:cyan"),
    ("aps3-burst-postgresql.json", "APScheduler 3\n1 process", "tab:orange"),
    ("aps4-burst-postgresql.json", "APScheduler 4 (alpha)\n1 process", "tab:red"),
]
API = [
    ("ceiling", "bare Starlette\n(ceiling)"),
    ("get", "tasks.get"),
    ("due", "tasks.\nscheduled.due"),
    ("webhook", "webhook\ntrigger"),
]


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def lateness_plot(results: Path, out: Path) -> dict[str, Any]:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn, tasks, spread = {}, 0, 0.0
    for name, label, color, style in LATENESS:
        data = load(results, name)
        if data is None:
            continue
        tasks, spread = data["figures"]["tasks"], data["figures"]["spread_seconds"]
        samples = data.get("lateness_ms")
        if samples:
            ys = [(i + 1) / len(samples) for i in range(len(samples))]
            xs = sorted(max(v, 0.01) for v in samples)
        else:
            xs = [max(v, 0.01) for v in data["lateness_ms_percentiles"]]
            ys = [i / 100 for i in range(101)]
        figures = data["figures"]
        p50, p99 = figures["lateness_p50_ms"], figures["lateness_p99_ms"]
        ax.step(
            xs,
            ys,
            where="post",
            color=color,
            linestyle=style,
            label=f"{label}  (p50 {p50:g} ms, p99 {p99:g} ms)",
        )
        drawn[name] = {"p50_ms": p50, "p99_ms": p99, "max_ms": figures["lateness_max_ms"]}
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("lateness: actual start - scheduled instant (ms, log scale)")
    ax.set_ylabel(f"share of the {tasks:,} jobs")
    ax.set_title(f"Firing lateness, {tasks:,} one-shot jobs spread over {spread:g} s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def throughput_plot(results: Path, out: Path) -> dict[str, Any]:
    labels, values, colors, drawn, tasks = [], [], [], {}, 0
    for name, label, color in BURST:
        data = load(results, name)
        if data is None:
            continue
        tasks = data["figures"]["tasks"]
        rps = data["figures"]["runs_per_second"]
        labels.append(label)
        values.append(rps)
        colors.append(color)
        drawn[name] = rps
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax.set_ylabel(f"runs per second until all {tasks:,} have run")
    ax.set_title(f"Burst: {tasks:,} one-shot jobs due at the same instant, PostgreSQL")
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def api_plot(results: Path, out: Path) -> dict[str, Any]:
    data = load(results, "api.json")
    if data is None:
        return {}
    figures = data["figures"]
    labels, values, colors, hatches, drawn = [], [], [], [], {}
    for key, label in API:
        if key in figures:
            labels.append(label)
            values.append(figures[key]["rps"])
            colors.append("tab:gray" if key == "ceiling" else "tab:blue")
            hatches.append("//" if key == "get_tcp_nodelay" else "")
            drawn[key] = figures[key]["rps"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    bars = ax.bar(labels, values, color=colors, hatch=hatches, edgecolor="white")
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax.set_ylabel("requests per second")
    ax.set_title(
        f"HTTP API, one uvicorn worker, PostgreSQL, wrk -t{figures['threads']} "
        f"-c{figures['connections']} -d{figures['duration_s']}s"
    )
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


HTTP_LATENESS = [
    ("http-lateness-apflow-sqlite.json", "apflow rest_executor, SQLite", "tab:blue", "-"),
    ("http-lateness-apflow-postgresql.json", "apflow rest_executor, PostgreSQL", "tab:blue", "--"),
    ("http-lateness-aps3-postgresql.json", "APScheduler 3 + httpx, PostgreSQL", "tab:orange", "-"),
    ("http-lateness-aps4-postgresql.json", "APScheduler 4 (alpha) + httpx", "tab:red", ":"),
]
HTTP_BURST = [
    ("http-burst-apflow-postgresql.json", "apflow\n1 process", "tab:blue"),
    ("http-burst-apflow-postgresql-2p.json", "apflow\n2 processes", "tab:cyan"),
    ("http-burst-aps3-postgresql.json", "APScheduler 3\n+ httpx", "tab:orange"),
    ("http-burst-aps4-postgresql.json", "APScheduler 4 (alpha)\n+ httpx", "tab:red"),
]


def http_lateness_plot(results: Path, out: Path) -> dict[str, Any]:
    """Lateness as the HTTP sink saw it: arrival minus the scheduled instant."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn, tasks = {}, 0
    for name, label, color, style in HTTP_LATENESS:
        data = load(results, name)
        if data is None:
            continue
        figures = data["figures"]
        tasks = figures["tasks"]
        xs = sorted(max((arrival - due) * 1000, 0.01) for _, due, arrival in data["records"])
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        p50, p99 = figures["lateness_p50_ms"], figures["lateness_p99_ms"]
        ax.step(
            xs,
            ys,
            where="post",
            color=color,
            linestyle=style,
            label=f"{label}  (p50 {p50:g} ms, p99 {p99:g} ms)",
        )
        drawn[name] = {"p50_ms": p50, "p99_ms": p99, "max_ms": figures["lateness_max_ms"]}
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("lateness at the receiver: arrival - scheduled instant (ms, log scale)")
    ax.set_ylabel(f"share of the {tasks:,} HTTP calls")
    ax.set_title(f"Scheduled HTTP calls, {tasks:,} spread over 60 s, by the receiver's clock")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def http_throughput_plot(results: Path, out: Path) -> dict[str, Any]:
    labels, values, colors, drawn, tasks = [], [], [], {}, 0
    for name, label, color in HTTP_BURST:
        data = load(results, name)
        if data is None:
            continue
        tasks = data["figures"]["tasks"]
        rate = data["figures"]["calls_per_second"]
        labels.append(label)
        values.append(rate)
        colors.append(color)
        drawn[name] = rate
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    bars = ax.bar(labels, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax.set_ylabel(f"calls per second at the sink until all {tasks:,} arrived")
    ax.set_title(f"Burst of HTTP calls: {tasks:,} due at the same instant, PostgreSQL")
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def top_of_minute_plot(results: Path, out: Path) -> dict[str, Any]:
    data = load(results, "top-of-minute.json")
    if data is None:
        return {}
    minutes = [row["minute"] for row in data["per_minute"]]
    p50 = [row["p50_ms"] / 1000 for row in data["per_minute"]]
    p99 = [row["p99_ms"] / 1000 for row in data["per_minute"]]
    fig, (late, size) = plt.subplots(2, 1, figsize=(7.5, 6), sharex=False)
    late.plot(minutes, p99, "o-", color="tab:blue", label="p99")
    late.plot(minutes, p50, "o--", color="tab:cyan", label="p50")
    late.axhline(1.5, color="tab:red", linestyle=":", label="target p99 1.5 s")
    late.set_ylabel("lateness (s)")
    late.set_ylim(0, max([*p99, 1.5]) * 1.3)
    late.legend(loc="upper center", ncol=3, fontsize=8)
    slots = f" ({data['max_concurrent']:,} slots each)" if "max_concurrent" in data else ""
    late.set_title(
        f"{data['tasks']:,} tasks on * * * * *, {data['processes']} scheduler processes"
        f"{slots},\nPostgreSQL; {data['duplicates']} duplicates",
        fontsize=10,
    )
    late.tick_params(axis="x", labelsize=8)
    sizes = data["history_rows_each_minute"]
    size.plot(range(len(sizes)), sizes, "s-", color="tab:green")
    size.set_ylabel("history rows")
    size.set_xlabel(f"minute of the run (APFLOW_RUN_HISTORY_KEEP={data['keep']})")
    size.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    size.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {"worst_p99_ms": data["worst_minute_p99_ms"], "largest_history": max(sizes)}


def scale_out_plot(results: Path, out: Path) -> dict[str, Any]:
    data = load(results, "scale-out.json")
    if data is None:
        return {}
    fig, (procs, pooled) = plt.subplots(1, 2, figsize=(9, 4.2))
    counts = sorted(data["processes"], key=int)
    best = [max(run["runs_per_second"] for run in data["processes"][c]) for c in counts]
    worst = [min(run["runs_per_second"] for run in data["processes"][c]) for c in counts]
    bars = procs.bar([f"{c} process{'es' if c != '1' else ''}" for c in counts], best,
                     color="tab:blue")  # fmt: skip
    procs.bar_label(bars, labels=[f"{w:,.0f}-{b:,.0f}" for w, b in zip(worst, best, strict=True)])
    procs.set_ylabel("runs per second (best of the repeats)")
    procs.set_title(f"{data['tasks']:,} echo runs due at once", fontsize=10)
    procs.margins(y=0.15)
    pairs = data["pgbouncer_pairs"]
    direct = [pair["direct"]["runs_per_second"] for pair in pairs]
    through = [pair["pgbouncer"]["runs_per_second"] for pair in pairs]
    index = range(len(pairs))
    procs_width = 0.38
    pooled.bar([i - procs_width / 2 for i in index], direct, procs_width, label="direct",
               color="tab:blue")  # fmt: skip
    pooled.bar([i + procs_width / 2 for i in index], through, procs_width,
               label="through PgBouncer", color="tab:purple")  # fmt: skip
    pooled.set_xticks(list(index), [f"pair {i + 1}\n{pair['ratio']:.2f}x" for i, pair in
                                    enumerate(pairs)])  # fmt: skip
    pooled.set_title("10,000 echo runs, one process: direct and pooled", fontsize=10)
    pooled.legend(loc="upper center", ncol=2, fontsize=8)
    pooled.margins(y=0.2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return {"processes": dict(zip(counts, best, strict=True)), "pgbouncer_ratios": [
        pair["ratio"] for pair in pairs]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    written = {}
    for name, draw in (
        ("benchmark-lateness.png", lateness_plot),
        ("benchmark-throughput.png", throughput_plot),
        ("benchmark-api.png", api_plot),
        ("benchmark-http-lateness.png", http_lateness_plot),
        ("benchmark-http-throughput.png", http_throughput_plot),
        ("benchmark-top-of-minute.png", top_of_minute_plot),
        ("benchmark-scale-out.png", scale_out_plot),
    ):
        drawn = draw(args.results, args.docs / name)
        if drawn:
            written[str(args.docs / name)] = drawn
        else:
            (args.docs / name).unlink(missing_ok=True)
    print(json.dumps(written), flush=True)


if __name__ == "__main__":
    main()
