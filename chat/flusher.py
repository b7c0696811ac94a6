"""The flusher: the one owner of every session's writes.

Frames are not written by a task per session: the :class:`Flusher` visits
every session that got frames, once per turn of the event loop, and writes
everything queued in that turn straight to a socket that can take it, in one
write. It is the one owner of each session's writes: only a session whose
socket is backed up (or that is closing) gets a writer task, started by the
flusher, which waits for the socket and ends once the queue is empty. An
idle session has no task of its own besides its reader. Besides its own turn,
the flusher runs when a session's reader has read every frame that waited
(:meth:`Flusher.flush_now`), so that a reply goes out in the turn that caused it.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio

log = logging.getLogger("chat.flusher")


class Flushable(Protocol):
    """A session whose queued frames the :class:`Flusher` writes."""

    def flush(self) -> None:
        """Write what is queued without waiting, or leave it to the session's writer."""
        ...

    def start_writer(self, frames: list[str]) -> None:
        """Leave ``frames`` and what is queued to a writer task of the session's own."""
        ...


class Flusher:
    """Flushes every session that got frames, once per turn of the event loop.

    One wake-up of one task per turn, whatever the number of sessions and
    frames, instead of a writer task woken per session per frame. While it is
    not running (before the node starts, after it stops), :meth:`add` tells
    the caller to start a writer instead.
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

    def flush_now(self) -> None:
        """Flush every session added so far, without waiting for the end of the turn."""
        pending, self._pending = self._pending, []
        for session in pending:
            try:
                session.flush()
            except Exception:
                log.exception("flushing a session failed")
                try:
                    session.start_writer([])
                except Exception:
                    log.exception("starting a writer failed")

    async def run(self) -> None:
        """Flush until cancelled (in the node's task group)."""
        self._running = True
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                self.flush_now()
        finally:
            self._running = False
            pending, self._pending = self._pending, []
            for session in pending:
                session.start_writer([])
