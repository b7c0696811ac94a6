"""A bounded outbound queue per session, and the flusher that empties them.

The room fan-out puts each frame with :meth:`SendQueue.put_nowait`, which
refuses (returns False) instead of waiting when the queue is full: the
caller then closes that one member as a slow consumer, and no member can slow
a room down. The session's writer takes everything queued at once with
:meth:`SendQueue.get_batch`.

Most frames never wake a writer: the :class:`Flusher` visits every session
that got frames, once per turn of the event loop, and writes them straight to
a socket that can take them (everything queued in that turn goes in one
write). Only a session whose socket is backed up waits in its writer task.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio

log = logging.getLogger("chat.sendqueue")


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

    def put_nowait(self, frame: str, *, wake: bool = True) -> bool:
        """Queue ``frame``; False (and nothing queued) when full or closed.

        With ``wake=False`` the writer is left asleep: the caller flushes.
        """
        if self._closed or len(self._items) >= self._maxsize:
            return False
        self._items.append(frame)
        if wake:
            self.wake()
        return True

    def take(self) -> list[str]:
        """Everything queued, in order, at once (for a write that does not wait)."""
        batch = self._items
        self._items = []
        return batch

    def put_final(self, frame: str) -> None:
        """Queue ``frame`` past the bound (a last ``bye``), unless closed."""
        if not self._closed:
            self._items.append(frame)
            self.wake()

    def clear(self) -> int:
        """Drop everything queued; returns how many frames were dropped."""
        dropped = len(self._items)
        self._items.clear()
        return dropped

    def close(self) -> None:
        """No more puts; the writer takes what is queued, then gets :class:`QueueClosed`."""
        self._closed = True
        self.wake()

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

    def wake(self) -> None:
        """Wake the writer waiting in :meth:`get_batch`, if any."""
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None


class Flushable(Protocol):
    """A session whose queued frames the :class:`Flusher` writes."""

    def flush(self) -> None:
        """Write what is queued without waiting, or leave it to the session's writer."""
        ...

    def wake_writer(self) -> None:
        """Leave what is queued to the session's writer task."""
        ...


class Flusher:
    """Flushes every session that got frames, once per turn of the event loop.

    One wake-up of one task per turn, whatever the number of sessions and
    frames, instead of a writer task woken per session per frame. While it is
    not running (before the node starts, after it stops), :meth:`add` tells
    the caller to wake its own writer.
    """

    __slots__ = ("_pending", "_running", "_wakeup")

    def __init__(self) -> None:
        self._pending: list[Flushable] = []
        self._wakeup = anyio.Event()
        self._running = False

    def add(self, session: Flushable) -> bool:
        """Flush ``session`` this turn; False when the flusher is not running."""
        if not self._running:
            return False
        if not self._pending:
            self._wakeup.set()
        self._pending.append(session)
        return True

    async def run(self) -> None:
        """Flush until cancelled (in the node's task group)."""
        self._running = True
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                pending, self._pending = self._pending, []
                for session in pending:
                    try:
                        session.flush()
                    except Exception:
                        log.exception("flushing a session failed")
                        session.wake_writer()
        finally:
            self._running = False
            pending, self._pending = self._pending, []
            for session in pending:
                session.wake_writer()
