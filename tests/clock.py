"""A clock for tests: :class:`FakeClock` moves only when a test advances it.

The async layer reads and waits on a :class:`chat.clock.Clock`; with this one
a 600-second idle timeout is tested in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

import anyio
import anyio.lowlevel


class FakeClock:
    """A clock that moves only when :meth:`advance` is awaited (for tests).

    Sleepers wake in deadline order, and after each wake-up every task runs
    until it blocks again, so a loop that sleeps repeatedly sees every one of
    its deadlines, as it would in real time.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_767_225_600.0) -> None:
        self._now = start
        self._wall_offset = wall - start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wakeup = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), wakeup))
        await wakeup.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its deadline."""
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wakeup = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            wakeup.set()
            await settle()
        self._now = target
        await settle()


async def settle(rounds: int = 10_000) -> None:
    """Let every other task run until all are blocked (asyncio only; for tests).

    Like ``anyio.wait_all_tasks_blocked`` but without its 0.1 s real sleeps,
    so a fake clock can step through hundreds of deadlines quickly.
    """
    this = asyncio.current_task()
    quiet = 0
    for _ in range(rounds):
        await asyncio.sleep(0)
        for task in asyncio.all_tasks():
            if task is this or task.done():
                continue
            waiter = getattr(task, "_fut_waiter", None)
            if waiter is None or waiter.done():
                quiet = 0
                break
        else:
            # Callbacks scheduled in this very iteration (a wake-up on its way)
            # have not run yet: only a few quiet rounds in a row mean blocked.
            quiet += 1
            if quiet == 3:
                return
