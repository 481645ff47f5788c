"""CPU-bound work off the event loop, bounded in time.

The event loop renews leases, claims due runs and answers /healthz; a request that computes
(a thousand fire times of a rare cron expression took 2.5 s) must not hold it. Such work runs
on one dedicated thread: with a single compute thread the loop waits at most one GIL switch
interval (5 ms) for the interpreter, whereas a pool of busy threads would make it queue behind
each of them. Requests queue for that thread instead, and each request carries a `Budget`
that its computations check as they go, so no request holds the thread for long.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from apflow_server.core.errors import ValidationError

P = ParamSpec("P")
T = TypeVar("T")

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apflow-compute")


async def off_loop(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args, **kwargs)` on the compute thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, functools.partial(function, *args, **kwargs))


class Budget:
    """The compute time one request may use, shared by every call of a batch."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._deadline = clock() + seconds

    def checker(self, field: str, advice: str) -> Callable[[], None]:
        """A callable that long computations call between steps: it raises -32602 naming
        `field` once the budget is spent."""

        def check() -> None:
            if self._clock() > self._deadline:
                raise ValidationError(
                    field,
                    f"this request would compute for more than {self.seconds:g} s; {advice}",
                )

        return check


UNLIMITED = Budget(float("inf"))
