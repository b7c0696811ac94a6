"""The write side of one session: its outbox to its socket, with one owner.

The node's :class:`~chat.flusher.Flusher` is the one owner of every session's
writes: it visits a session's :class:`Writer` when its outbox changed, and
writes the outbox straight to a socket that takes it, in one write; otherwise
it starts the writer task (in the node's task group), which waits for the
backed-up socket, and sends the close frame once the core is closing and the
outbox is empty. An idle session has no writer task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio

from chat.core import SessionCore
from chat.flusher import Flusher
from chat.protocol import Subprotocol
from chat.transport import Transport

log = logging.getLogger("chat.session")

#: A ``chat.v1.batch`` frame carries at most this many UTF-8 bytes (one larger object goes alone).
MAX_BATCH_BYTES = 65536


class Writer:
    """Writes one session's outbox; see the module docstring. ``failed`` cuts the session."""

    __slots__ = (
        "_batch",
        "_core",
        "_failed",
        "_flusher",
        "_scope",
        "_spawn",
        "_transport",
        "_writing",
        "pending",
        "stopped",
    )

    def __init__(
        self,
        core: SessionCore,
        transport: Transport,
        flusher: Flusher,
        spawn: Callable[..., Any],
        failed: Callable[[], None],
    ) -> None:
        self._core = core
        self._transport = transport
        self._flusher = flusher
        self._spawn = spawn
        self._failed = failed
        #: The flusher will visit this session this turn.
        self.pending = False
        #: The connection was cut: nothing more is written.
        self.stopped = False
        #: A writer task runs: it sends everything queued, then ends.
        self._writing = False
        self._scope: anyio.CancelScope | None = None
        #: ``chat.v1.batch``: the outbox goes out in as few frames as fit.
        self._batch = core.session.protocol is Subprotocol.BATCH

    def schedule(self) -> None:
        """Have the flusher visit this session this turn (it writes, or starts the task)."""
        if self.pending or self._writing:
            return
        self.pending = True
        if not self._flusher.add(self):
            self.start_writer([])

    def stop(self) -> None:
        """Write nothing more (the connection was cut, or ended)."""
        self.stopped = True
        if self._scope is not None:
            self._scope.cancel()

    def flush(self) -> None:
        """Write the outbox now if the socket takes it; else start the task (flusher only)."""
        self.pending = False
        core = self._core
        if self._writing or not core.session.is_live:
            return
        if not core.outbox:
            if core.close_frame is not None:
                self.start_writer([])
            return
        frames = core.outbox.take()
        try:
            written = self._transport.write(self._encoded(frames))
        except Exception:
            log.exception(
                "session %s: write failed", core.session.id, extra=core.session.log_fields()
            )
            self._failed()
            return
        if not written:
            self.start_writer(frames)
            return
        core.sent(len(frames))
        if core.close_frame is not None:
            self.start_writer([])

    def start_writer(self, frames: list[str]) -> None:
        """Start the writer task with ``frames`` first, unless one runs (then it sends them)."""
        self.pending = False
        if self._writing or self.stopped or not self._core.session.is_live:
            return
        if self._spawn(self._write_loop, frames):
            self._writing = True
        else:
            # The node has stopped: nothing can be written any more.
            self._transport.abort()

    async def _write_loop(self, first: list[str]) -> None:
        """Send ``first`` and everything queued, waiting for the socket; then the close frame."""
        core, transport = self._core, self._transport
        try:
            with anyio.CancelScope() as self._scope:
                frames = first or core.outbox.take()
                while frames and not self.stopped:
                    await transport.send(self._encoded(frames))
                    core.sent(len(frames))
                    frames = core.outbox.take()
                close = core.close_frame
                if close is not None and not self.stopped:
                    core.close_frame_sent()
                    await transport.close(*close)
        except Exception:
            log.exception(
                "session %s: writer failed", core.session.id, extra=core.session.log_fields()
            )
            self._failed()
        finally:
            # Nothing was queued since the last take: the flusher writes from here.
            self._writing = False
            self._scope = None

    def _encoded(self, frames: list[str]) -> list[str]:
        """``frames`` as the WebSocket messages this session's protocol sends."""
        return list(_batches(frames)) if self._batch else frames


def _batches(frames: list[str]) -> Iterator[str]:
    """``frames`` joined by newlines into as few frames as :data:`MAX_BATCH_BYTES` allows."""
    batch: list[str] = []
    size = 0
    for frame in frames:
        # isascii() is a flag lookup: only text with other characters is encoded to count.
        length = len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))
        if batch and size + length + 1 > MAX_BATCH_BYTES:
            yield "\n".join(batch)
            batch, size = [], 0
        batch.append(frame)
        size += length + 1
    if batch:
        yield "\n".join(batch)
