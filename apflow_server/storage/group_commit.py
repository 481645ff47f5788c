"""Group commit: concurrent requests share one transaction, with no added latency when idle.

A request that arrives while no batch is being written starts one at once, alone. Requests
that arrive while a batch is being written wait for it to commit and then go together in the
next one. There is no timer: under light load every request is its own batch, and under heavy
load a batch holds everything that arrived during the previous one (up to `max_batch`), so the
cost of a commit (a round trip and a WAL flush on PostgreSQL, an fsync on SQLite) is shared.

`write` receives the batch and returns one outcome per request, in order: a result, or the
exception to raise to that request alone. If `write` itself raises, every request of the
batch is retried on its own (`write` with a batch of one), so one bad request cannot fail its
neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")

Writer = Callable[[Sequence[Request]], Awaitable[Sequence[Result | BaseException]]]


class GroupCommit(Generic[Request, Result]):
    """`writers` batches may be in flight at once (1 writes strictly one after another): more
    overlap the round trips of one transaction with those of the next, so a request waits
    for about one transaction rather than for the one before it and then its own."""

    def __init__(
        self, write: Writer[Request, Result], *, max_batch: int = 200, writers: int = 1
    ) -> None:
        self._write = write
        self.max_batch = max_batch
        self.writers = writers
        self._waiting: list[tuple[Request, asyncio.Future[Result]]] = []
        self._writing = 0  # writers running; one leaves in the same step it finds no work
        self._tasks: set[asyncio.Task[None]] = set()  # held so they are not collected
        # How many requests each batch held (the last few thousand): for tests and benchmarks.
        self.batch_sizes: list[int] = []

    async def submit(self, request: Request) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._writing < self.writers:
            self._writing += 1
            writer = asyncio.create_task(self._drain())
            self._tasks.add(writer)
            writer.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                self.batch_sizes.append(len(batch))
                del self.batch_sizes[:-4096]
                await self._write_batch(batch)
        finally:
            self._writing -= 1

    async def _write_batch(self, batch: list[tuple[Request, asyncio.Future[Result]]]) -> None:
        requests = [request for request, _ in batch]
        outcomes: Sequence[Result | BaseException]
        try:
            outcomes = await self._write(requests)
        except Exception as exc:
            if len(batch) > 1:
                logger.warning("a batch of %d failed; writing them one by one", len(batch))
                for item in batch:
                    await self._write_batch([item])
                return
            outcomes = [exc]
        except BaseException as exc:  # cancelled: nobody may wait forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller gave up (cancelled); the write stands
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
