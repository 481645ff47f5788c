"""Group commit, alone (no database): who shares a batch, and what one failure costs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from apflow_server.storage.group_commit import GroupCommit


class Recorder:
    """A writer that takes `delay` per batch and records the batches it was given."""

    def __init__(self, delay: float = 0.05, fail_on: frozenset[int] = frozenset()) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[list[int]] = []

    async def write(self, requests: Sequence[int]) -> list[str | BaseException]:
        self.batches.append(list(requests))
        await asyncio.sleep(self.delay)
        if len(requests) > 1 and self.fail_on & set(requests):
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"refused {n}") if n in self.fail_on else f"done {n}" for n in requests]


async def test_an_idle_request_goes_at_once_alone() -> None:
    recorder = Recorder(delay=0)
    commit = GroupCommit(recorder.write)
    assert await commit.submit(1) == "done 1"
    assert await commit.submit(2) == "done 2"
    assert recorder.batches == [[1], [2]]


async def test_requests_that_arrive_during_a_write_share_the_next_one() -> None:
    recorder = Recorder(delay=0.05)
    commit = GroupCommit(recorder.write)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.01)  # the first batch is being written
    rest = [asyncio.create_task(commit.submit(n)) for n in range(1, 21)]
    results = await asyncio.gather(first, *rest)
    assert results == [f"done {n}" for n in range(21)]
    assert recorder.batches == [[0], list(range(1, 21))]


async def test_a_batch_is_at_most_max_batch() -> None:
    recorder = Recorder(delay=0.02)
    commit = GroupCommit(recorder.write, max_batch=8)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.005)
    rest = [asyncio.create_task(commit.submit(n)) for n in range(1, 21)]
    await asyncio.gather(first, *rest)
    assert [len(batch) for batch in recorder.batches] == [1, 8, 8, 4]


async def test_a_refused_request_fails_alone() -> None:
    recorder = Recorder(delay=0.02, fail_on=frozenset({3}))
    commit = GroupCommit(recorder.write)

    async def refused_is_ok(n: int) -> str:
        try:
            return await commit.submit(n)
        except ValueError as refused:
            return str(refused)

    first = asyncio.create_task(refused_is_ok(0))
    await asyncio.sleep(0.005)
    results = await asyncio.gather(first, *(refused_is_ok(n) for n in range(1, 6)))
    assert results == ["done 0", "done 1", "done 2", "refused 3", "done 4", "done 5"]


async def test_a_failed_batch_is_written_again_one_by_one() -> None:
    recorder = Recorder(delay=0.02, fail_on=frozenset({2}))
    commit = GroupCommit(recorder.write)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.005)
    rest = [asyncio.create_task(commit.submit(n)) for n in (1, 2, 3)]
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    assert outcomes[:2] == ["done 0", "done 1"]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3] == "done 3"
    assert recorder.batches == [[0], [1, 2, 3], [1], [2], [3]]


async def test_a_caller_that_gives_up_does_not_break_the_batch() -> None:
    recorder = Recorder(delay=0.05)
    commit = GroupCommit(recorder.write)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.01)
    impatient = asyncio.create_task(commit.submit(1))
    patient = asyncio.create_task(commit.submit(2))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await patient == "done 2"
    assert await first == "done 0"
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert recorder.batches == [[0], [1, 2]]  # written all the same: it was already queued


async def test_with_two_writers_a_second_request_does_not_wait_for_the_first() -> None:
    recorder = Recorder(delay=0.05)
    commit = GroupCommit(recorder.write, writers=2)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0.01)
    third = [asyncio.create_task(commit.submit(n)) for n in (2, 3)]
    started = asyncio.get_running_loop().time()
    assert await second == "done 1"
    assert asyncio.get_running_loop().time() - started < 0.05  # did not queue behind the first
    await asyncio.gather(first, *third)
    assert recorder.batches == [[0], [1], [2, 3]]
