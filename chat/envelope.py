"""The values brokers carry: messages, recoveries, presence changes, node views. Pure."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A read of a room's kept history that starts nothing (:meth:`chat.brokers.History.read`).

    ``epoch`` is the room's run (None: it has none; ``latest`` is then 0).
    ``publications`` are the kept messages after the reader's ``since``, in
    ``seq`` order, at most the reader's ``limit`` (``more`` says some were left
    out). ``complete`` is true when nothing after ``since`` is missing from
    the history: ``publications`` start at ``since + 1`` (or there is nothing
    after ``since``), and ``since`` belongs to the room's current run (its
    ``epoch``, when the reader gave one; not ahead of ``latest``).
    """

    latest: int
    epoch: str | None
    publications: tuple[Publication, ...] = ()
    complete: bool = False
    more: bool = False


def history_page(
    latest: int,
    epoch: str | None,
    since: int,
    asked_epoch: str | None,
    kept: Sequence[Publication],
    limit: int,
) -> HistoryPage:
    """The :class:`HistoryPage` of a room at ``latest`` in run ``epoch`` (None: no run)
    for a reader after ``since`` (in ``asked_epoch``); ``kept`` is every kept message
    of the run after ``since``, in order."""
    if epoch is None:
        return HistoryPage(0, None, complete=since == 0 and asked_epoch is None)
    same_run = (asked_epoch is None or asked_epoch == epoch) and since <= latest
    covered = since == latest or (
        bool(kept) and kept[0].seq == since + 1 and kept[-1].seq == latest
    )
    return HistoryPage(
        latest, epoch, tuple(kept[:limit]), complete=same_run and covered, more=len(kept) > limit
    )


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


@dataclass(frozen=True, slots=True)
class DisconnectCommand:
    """Close, on whichever node holds them, the session ``session`` or every session of
    ``user`` (one of the two), with ``detail`` for the client's ``bye``; ``reconnect``
    says whether the client may come back (1013) or not (1008).

    The brokers move it between nodes as it is; each node applies it to its own
    sessions (:meth:`chat.node.Node.close_sessions`).
    """

    session: str | None
    user: str | None
    detail: str
    reconnect: bool


@dataclass(frozen=True, slots=True)
class Tally:
    """How many sessions one :class:`DisconnectCommand` closed: ``here`` (the node that
    sent it), on each other node that answered (``others``), and the live nodes that
    did not answer in time (``unanswered``: they may have closed some, or none)."""

    here: int
    others: Mapping[str, int] = field(default_factory=dict)
    unanswered: tuple[str, ...] = ()
