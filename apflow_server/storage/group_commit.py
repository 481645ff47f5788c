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
    def __init__(self, write: Writer[Request, Result], *, max_batch: int = 200) -> None:
        self._write = write
        self.max_batch = max_batch
        self._waiting: list[tuple[Request, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None
        # How many requests each batch held (the last few thousand): for tests and benchmarks.
        self.batch_sizes: list[int] = []

    async def submit(self, request: Request) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            self.batch_sizes.append(len(batch))
            del self.batch_sizes[:-4096]
            await self._write_batch(batch)

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
