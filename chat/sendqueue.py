"""A bounded outbound queue per session: never blocks the producer.

The room fan-out puts each frame with :meth:`SendQueue.put_nowait`, which
refuses (returns False) instead of waiting when the queue is full: the
caller then closes that one member as a slow consumer, and no member can slow
a room down. The session's writer takes everything queued at once with
:meth:`SendQueue.get_batch`.
"""

from __future__ import annotations

import anyio


class QueueClosed(Exception):
    """The queue was closed and everything queued has been taken."""


class SendQueue:
    """Frames (already encoded) waiting for one session's writer. FIFO, bounded."""

    __slots__ = ("_closed", "_items", "_maxsize", "_wakeup")

    def __init__(self, maxsize: int) -> None:
        # A list, swapped out whole by get_batch: lighter than a deque per session.
        self._items: list[str] = []
        self._maxsize = maxsize
        self._wakeup: anyio.Event | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def put_nowait(self, frame: str) -> bool:
        """Queue ``frame``; False (and nothing queued) when full or closed."""
        if self._closed or len(self._items) >= self._maxsize:
            return False
        self._items.append(frame)
        self._wake()
        return True

    def put_final(self, frame: str) -> None:
        """Queue ``frame`` past the bound (a last ``bye``), unless closed."""
        if not self._closed:
            self._items.append(frame)
            self._wake()

    def clear(self) -> int:
        """Drop everything queued; returns how many frames were dropped."""
        dropped = len(self._items)
        self._items.clear()
        return dropped

    def close(self) -> None:
        """No more puts; the writer takes what is queued, then gets :class:`QueueClosed`."""
        self._closed = True
        self._wake()

    async def get_batch(self) -> list[str]:
        """Wait for at least one frame and take every queued frame, in order.

        Raises :class:`QueueClosed` once closed and empty.
        """
        while not self._items:
            if self._closed:
                raise QueueClosed
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        batch = self._items
        self._items = []
        return batch

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
