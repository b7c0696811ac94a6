"""Each connection's handle: what the app may know and do about its own TCP connection.

Hypercorn gives the app no way to drop a peer that stopped reading, to learn
the peer's close code (its issue #127: the app always sees 1000 or 1006), or
to write without its per-frame send path. ``TCPServer.run`` is wrapped so
that each connection gets a :class:`ConnectionHandle` in a context variable,
which the app's task inherits.

The direct write path (:meth:`ConnectionHandle.write_now`) writes server text
frames, unmasked and without permessage-deflate state, straight to the
socket, many in one write: a fifth of the server's CPU per delivery of
Hypercorn's own send path for plain text, half for ``chat.v1.batch`` (the
figures are in :mod:`chat.hypercorn_hooks`).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState

if TYPE_CHECKING:
    from hypercorn.asyncio.tcp_server import TCPServer

#: :meth:`ConnectionHandle.write_now` is not used while more than this waits
#: unsent in the socket's buffer: the session's writer then waits for it to drain.
WRITE_NOW_LIMIT = 64 * 1024


class Input(Protocol):
    """What Hypercorn has read for the app (:class:`chat.hypercorn_hooks.lean.AppQueue`)."""

    def qsize(self) -> int: ...


class ConnectionHandle:
    """What the app may know and do about its own TCP connection under Hypercorn."""

    __slots__ = ("app_queue", "closed_with", "deflate", "pinger", "writer", "wsproto")

    def __init__(self, writer: asyncio.StreamWriter | None) -> None:
        self.writer = writer
        #: Hypercorn's protocol-ping task for this connection, if pings are on.
        self.pinger: asyncio.Task[Any] | None = None
        #: ``(code, reason, by)`` of the first close seen below the app.
        self.closed_with: tuple[int, str, str] | None = None
        #: permessage-deflate was negotiated: frames must go through wsproto.
        self.deflate = False
        #: wsproto's state machine for this connection, once the handshake began.
        self.wsproto: WsConnection | None = None
        #: What Hypercorn has read for the app and the app has not taken yet.
        self.app_queue: Input | None = None

    def writable_now(self) -> bool:
        """True when :meth:`write_now` may write: the socket is open and not backed up.

        Server frames are unmasked and, without permessage-deflate, need no
        state: what :meth:`write_now` writes is what Hypercorn would write,
        without its per-frame cost (several coroutine hops, and a socket send
        per frame).
        """
        writer = self.writer
        return (
            writer is not None
            and self._raw_frames_allowed()
            and not writer.transport.is_closing()
            and writer.transport.get_write_buffer_size() < WRITE_NOW_LIMIT
        )

    def input_pending(self) -> bool:
        """True when Hypercorn holds more client messages for the app (or cannot say)."""
        return self.app_queue is None or self.app_queue.qsize() > 0

    def input_waiting(self) -> bool:
        """True only when Hypercorn surely holds a client message for the app."""
        return self.app_queue is not None and self.app_queue.qsize() > 0

    def _raw_frames_allowed(self) -> bool:
        # No deflate state to keep, and no close frame sent or received yet
        # (from then on, Hypercorn knows what may still be sent).
        return (
            not self.deflate
            and self.wsproto is not None
            and self.wsproto.state is ConnectionState.OPEN
        )

    def write_now(self, texts: list[str]) -> None:
        """Write ``texts`` as text frames in one write; only after :meth:`writable_now`."""
        assert self.writer is not None
        self.writer.write(b"".join(map(text_frame, texts)))

    async def send_texts(self, texts: list[str]) -> bool:
        """Write ``texts`` in one write, then wait until the socket took them.

        Returns False, having sent nothing, when the caller must send through
        ASGI instead (permessage-deflate, a close under way, not Hypercorn).
        """
        writer = self.writer
        if writer is None or not self._raw_frames_allowed():
            return False
        if writer.transport.is_closing():
            return True  # gone: the reader sees the disconnect
        self.write_now(texts)
        with suppress(OSError):  # a lost connection: the reader sees it
            await writer.drain()
        return True

    def record(self, code: int, reason: str, by: str) -> None:
        """Remember how the connection ended (the first record wins)."""
        if self.closed_with is None:
            self.closed_with = (code, reason, by)

    def release(self) -> None:
        """The session is over: stop Hypercorn's ping task."""
        if self.pinger is not None and not self.pinger.done():
            self.pinger.cancel()
        self.pinger = None

    def abort(self) -> None:
        """Drop the TCP connection now, discarding what the peer never read."""
        self.release()
        if self.writer is not None:
            self.writer.transport.abort()


def text_frame(text: str) -> bytes:
    """One unmasked, final text frame (RFC 6455 section 5.2)."""
    data = text.encode()
    length = len(data)
    if length < 126:
        return b"\x81" + bytes((length,)) + data
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + data
    return b"\x81\x7f" + length.to_bytes(8, "big") + data


_current: ContextVar[ConnectionHandle | None] = ContextVar("chat_connection", default=None)


def current_connection() -> ConnectionHandle | None:
    """The handle of the connection this task serves; None outside a hooked Hypercorn."""
    return _current.get()


def patch_tcp_server() -> None:
    """Give each connection Hypercorn serves a :class:`ConnectionHandle`."""
    # Imported here, not at import: install() checks the private names first.
    from hypercorn.asyncio.tcp_server import TCPServer

    original_run = TCPServer.run

    async def run(self: TCPServer) -> None:
        _current.set(ConnectionHandle(self.writer))
        await original_run(self)

    TCPServer.run = run  # type: ignore[method-assign]
