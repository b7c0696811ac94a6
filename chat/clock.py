"""Time, injected: the async layer reads and waits on a :class:`Clock`, never on ``time``.

:class:`MonotonicClock` is the real one. The tests' ``tests.clock.FakeClock``
only moves when a test advances it, so a 600-second idle timeout is tested in
milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio


class Clock(Protocol):
    """What the async layer needs of time."""

    def now(self) -> float:
        """Monotonic seconds: for deadlines and durations."""
        ...

    def time(self) -> float:
        """Wall-clock Unix seconds: for timestamps shown to people."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``anyio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


async def wait_within(
    clock: Clock, seconds: float, waiter: Callable[[], Awaitable[object]]
) -> bool:
    """Await ``waiter()`` for at most ``seconds`` of ``clock``; True if it finished."""
    finished = False
    async with anyio.create_task_group() as group:

        async def expire() -> None:
            await clock.sleep(seconds)
            group.cancel_scope.cancel()

        group.start_soon(expire)
        await waiter()
        finished = True
        group.cancel_scope.cancel()
    return finished
