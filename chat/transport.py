"""What the domain knows of a WebSocket: the handshake it came with, and a small Transport.

The edge (:mod:`chat.endpoints`) turns each handshake into a :class:`Handshake`
and an object that is both a :class:`Handshaker` and a :class:`Transport`;
the node admits or refuses the first, and a session's driver
(:mod:`chat.connection`) reads from and writes to the second. Whether frames
take Hypercorn's fast path or plain ASGI is the edge's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

#: The peer's close frame arrived (``code`` is the peer's, when the server can tell).
CLIENT_CLOSED = "client_closed"
#: The connection died without a close frame (reset, timeout).
CONNECTION_LOST = "connection_lost"


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The connection ended without the server asking: ``code`` and why, as seen below us."""

    code: int
    reason: str
    by: str = "client"


class Endpoint(StrEnum):
    """Which WebSocket route a handshake came through."""

    #: ``/ws``: each text frame answered with ``Message text was: X``.
    ECHO = "echo"
    #: ``/ws/{room_id}``: plain-text or JSON rooms.
    ROOM = "room"


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the app knows of a WebSocket handshake before accepting it.

    ``token`` came in a header, the query or a ``bearer.`` subprotocol; it is
    never logged nor shown. ``origin`` is the ``Origin`` header (browsers).
    """

    endpoint: Endpoint
    remote: str
    room: str | None = None
    subprotocols: tuple[str, ...] = ()
    user: str | None = None
    since: int | None = None
    epoch: str | None = None
    host: str = ""
    origin: str | None = None
    token: str | None = field(default=None, repr=False)
    #: The HTTP version of the upgrade request ("1.1"; "2" for RFC 8441).
    http_version: str = "1.1"


class Transport(Protocol):
    """One accepted WebSocket as the domain sees it.

    Frames are written by one owner per session (the node's flusher, or the
    session's writer task it started), never from two places at once.
    """

    async def receive(self) -> str | bytes | Disconnect:
        """The next text or binary message, or :class:`Disconnect` once the connection ended."""
        ...

    def pending(self) -> bool:
        """True when more client frames are known to be waiting (or it cannot be known)."""
        ...

    def ready(self) -> bool:
        """True only when a client frame is surely waiting: :meth:`receive` returns at once."""
        ...

    def write(self, texts: list[str]) -> bool:
        """Write text frames at once, in order, if the socket takes them without waiting.

        False, with nothing written, when it cannot (backed up, or no fast path):
        then use :meth:`send`.
        """
        ...

    async def send(self, texts: list[str]) -> None:
        """Send text frames in order, waiting until the socket took them.

        Returns quietly if the connection is gone (the reader sees that).
        """
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame; returns quietly if the connection is already gone."""
        ...

    def abort(self) -> None:
        """Drop the connection now, without waiting for anything."""
        ...


class Handshaker(Protocol):
    """The handshake's answer: accept it (then it is a :class:`Transport`) or refuse it."""

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake, selecting ``subprotocol``."""
        ...

    async def reject(self, status: int, detail: str) -> None:
        """Refuse the handshake with an HTTP ``status`` and a JSON ``detail``."""
        ...


class Socket(Handshaker, Transport, Protocol):
    """A WebSocket from its handshake on: what the edge hands the node."""
