"""The values brokers carry: messages, recoveries, presence changes, node views. Pure."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from chat.protocol import FrameId, Message, encode


def new_epoch() -> str:
    """A fresh, unguessable name for one run of a room's ``seq``."""
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class Draft:
    """A message a session wants published; the broker gives it a ``seq``."""

    room: str
    user: str
    text: str
    id: FrameId
    ts: float

    def published(self, seq: int, epoch: str, *, duplicate: bool = False) -> Publication:
        """This draft as the message its room's ``seq`` and run made of it."""
        return Publication(self.room, seq, self.user, self.text, self.id, self.ts, epoch, duplicate)


@dataclass(frozen=True, slots=True)
class Publication:
    """A published message: a :class:`Draft` with its room ``seq``."""

    room: str
    seq: int
    user: str
    text: str
    id: FrameId
    ts: float
    #: The run of the room's ``seq`` this message belongs to.
    epoch: str = ""
    #: True for the answer to a retry (see :mod:`chat.idempotency`): the draft was
    #: published before as ``seq``; nothing was published or delivered again.
    duplicate: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a joining session can get: the room's ``latest`` seq and ``epoch``, and,
    when it asked with ``since``, the messages after it.

    ``complete`` is true only when ``publications`` are every message with
    ``since < seq <= latest``, in order (none at all when ``since == latest``),
    of the same run of the room (the client's ``epoch``, when it gave one);
    otherwise ``publications`` is empty and the client must refetch.
    """

    latest: int
    epoch: str
    publications: tuple[Publication, ...] = ()
    complete: bool = False


def recovery(
    latest: int,
    epoch: str,
    since: int | None,
    asked_epoch: str | None,
    kept: Callable[[], Sequence[Publication]],
) -> Recovery:
    """The :class:`Recovery` of a room at ``latest`` in run ``epoch`` for a client that
    asked with ``since`` (and ``asked_epoch``); ``kept()`` is the history after
    ``since``, in order, read only when needed."""
    if since is None or (asked_epoch is not None and asked_epoch != epoch) or since > latest:
        return Recovery(latest, epoch)
    if since == latest:
        return Recovery(latest, epoch, complete=True)
    found = kept()
    if not found or found[0].seq != since + 1 or found[-1].seq != latest:
        return Recovery(latest, epoch)
    return Recovery(latest, epoch, tuple(found), complete=True)


def encode_message(publication: Publication) -> str:
    """The encoded ``message`` frame that delivers ``publication``."""
    return encode(
        Message(
            room=publication.room,
            seq=publication.seq,
            id=publication.id,
            user=publication.user,
            text=publication.text,
            ts=publication.ts,
        )
    )


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """A user's first session entered a room (``join``) or its last one left (``leave``).

    ``origin`` is the session that caused it, on its node: that session is not told.
    """

    room: str
    event: Literal["join", "leave"]
    user: str
    origin: str


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A room's ``seq`` began a new run (its broker state was lost: a Redis that
    restarted empty, or a room that expired): ``epoch`` names it, its next
    message delivered here follows ``seq``, and ``users`` are present now.

    Delivered before the first message of the new run.
    """

    room: str
    epoch: str
    seq: int
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A live node of the cluster as every node sees it."""

    node: str
    sessions: int
    last_seen: float
