"""Cron iterators are lent out and reused (building one parses the expression): iterations in
progress never share one, and a reused one starts where its new iteration starts."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from itertools import islice

from apflow_server.schedules.expressions import parse_cron


def test_interleaved_iterations_of_one_expression_keep_their_own_place() -> None:
    every_quarter = parse_cron("*/15 * * * *")
    first = every_quarter.iter_local(datetime(2026, 1, 1, 0, 0))
    second = every_quarter.iter_local(datetime(2026, 6, 1, 12, 7))
    assert next(first) == datetime(2026, 1, 1, 0, 0)
    assert next(second) == datetime(2026, 6, 1, 12, 15)
    assert next(first) == datetime(2026, 1, 1, 0, 15)
    assert next(second) == datetime(2026, 6, 1, 12, 30)


def test_a_reused_iterator_starts_at_the_new_start() -> None:
    weekdays = parse_cron("0 9 * * 1-5")
    for start, expected in [
        (datetime(2026, 12, 4, 9, 0), datetime(2026, 12, 4, 9, 0)),  # a Friday, inclusive
        (datetime(2026, 12, 4, 9, 1), datetime(2026, 12, 7, 9, 0)),  # then Monday
        (datetime(2025, 1, 1, 0, 0), datetime(2025, 1, 1, 9, 0)),  # back in time
    ]:
        assert next(weekdays.iter_local(start)) == expected  # each closed, then reused


def test_threads_iterating_one_expression_each_get_their_own_sequence() -> None:
    hourly = parse_cron("30 * * * *")
    failures: list[str] = []

    def walk(offset: int) -> None:
        start = datetime(2026, 1, 1) + timedelta(days=offset)
        for _ in range(200):
            got = list(islice(hourly.iter_local(start), 3))
            want = [start + timedelta(minutes=30, hours=h) for h in range(3)]
            if got != want:
                failures.append(f"{start}: {got}")

    threads = [threading.Thread(target=walk, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
