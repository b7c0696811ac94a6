"""What the client tells its application: typed events, acks and errors. Pure values.

Every event is a frozen dataclass; :class:`chat.client.Client` yields them in
the order they happened (``async for event in client``) and hands each to the
callbacks registered for its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class ConnectionState(StrEnum):
    """Where the client's connection stands; every change is a :class:`StateChanged`."""

    #: A handshake is under way (the first one, or a reconnect).
    CONNECTING = "connecting"
    #: The server's ``welcome`` arrived: frames flow.
    CONNECTED = "connected"
    #: The connection is gone; the client waits before its next attempt.
    RECONNECTING = "reconnecting"
    #: For good: closed by the application, or a close the client must not undo on its own.
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The connection changed state.

    ``reason`` says why in a few words (``"bye: shutdown"``, ``"close 1011"``,
    ``"refused: 503"``, ``"server silent"``); ``code`` is the close code or
    HTTP status when there was one, ``detail`` the server's ``bye.detail``.
    ``retry_in`` is the delay before the next attempt (``RECONNECTING`` only)
    and ``url`` the server concerned.
    """

    state: ConnectionState
    previous: ConnectionState
    reason: str = ""
    url: str = ""
    code: int | None = None
    detail: str | None = None
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message of a joined room, delivered once, in ``seq`` order per room.

    ``replayed`` is true for a message the client missed while disconnected
    and recovered with ``since`` (always delivered before any live one).
    """

    room: str
    seq: int
    id: str | int | None
    user: str
    text: str
    ts: float
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """``user`` entered (``join``) or left (``leave``) ``room``."""

    room: str
    event: Literal["join", "leave"]
    user: str


@dataclass(frozen=True, slots=True)
class Joined:
    """The client is in ``room``: at ``seq`` of run ``epoch``, with ``members``.

    ``rejoined`` is true after a reconnect; ``recovered`` then says whether
    every missed message follows (if not, a :class:`RoomUnrecoverable` came first).
    """

    room: str
    seq: int
    epoch: str
    members: tuple[str, ...]
    recovered: bool = False
    rejoined: bool = False


@dataclass(frozen=True, slots=True)
class Left:
    """The client left ``room`` (it asked to)."""

    room: str


@dataclass(frozen=True, slots=True)
class RoomUnrecoverable:
    """Messages of ``room`` after ``last_seq`` may be missing and will not be replayed.

    The room's history no longer covered the gap (``reason`` ``"gap"``), or
    the room's ``seq`` started again under a new ``epoch`` (``"new_run"``).
    The stream goes on from ``seq``: refetch what you need (see ``docs/client.md``).
    """

    room: str
    last_seq: int
    last_epoch: str
    seq: int
    epoch: str
    reason: Literal["gap", "new_run"]


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` frame that is not about one of the client's sends (a refused ``join``)."""

    code: str
    detail: str
    id: str | int | None = None


Event = StateChanged | Message | PresenceEvent | Joined | Left | RoomUnrecoverable | ServerError


@dataclass(frozen=True, slots=True)
class Ack:
    """A send was accepted: it is message ``seq`` of ``room``."""

    id: str
    room: str
    seq: int


class ClientError(Exception):
    """Base of the client's errors."""


class OutboxFull(ClientError):
    """Too many sends await their ``ack``; nothing was queued. Retry later."""


class SendFailed(ClientError):
    """The server refused a send for good (``code`` as in ``docs/protocol.md``)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ClientClosed(ClientError):
    """The client is closed (``reason`` says why); pending sends fail with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
