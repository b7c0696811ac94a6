"""A bounded queue of frames for one client. Pure.

The room fan-out puts each frame with :meth:`SendQueue.put_nowait`, which
refuses (returns False) instead of waiting when the queue is full: the
caller then closes that one member as a slow consumer, and no member can slow
a room down. The node's :class:`~chat.flusher.Flusher` takes what is queued
and writes it.
"""

from __future__ import annotations


class SendQueue:
    """Frames (already encoded) waiting to be written for one session. FIFO, bounded."""

    __slots__ = ("_closed", "_items", "_maxsize")

    def __init__(self, maxsize: int) -> None:
        # A list, swapped out whole by take(): lighter than a deque per session.
        self._items: list[str] = []
        self._maxsize = maxsize
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: nothing more is queued but a final frame."""
        return self._closed

    def put_nowait(self, frame: str) -> bool:
        """Queue ``frame``; False (and nothing queued) when full or closed."""
        if self._closed or len(self._items) >= self._maxsize:
            return False
        self._items.append(frame)
        return True

    def put_final(self, frame: str) -> None:
        """Queue ``frame`` past the bound (a last ``bye``), unless closed."""
        if not self._closed:
            self._items.append(frame)

    def take(self) -> list[str]:
        """Everything queued, in order, at once."""
        batch = self._items
        self._items = []
        return batch

    def clear(self) -> int:
        """Drop everything queued; returns how many frames were dropped."""
        dropped = len(self._items)
        self._items.clear()
        return dropped

    def close(self) -> None:
        """No more puts; what is queued stays to be taken."""
        self._closed = True
