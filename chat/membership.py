"""The rooms one session is in, and where it is in each room's stream. Pure.

Each joined room has a :class:`~chat.ordering.Cursor`: nothing at or below
its ``seq`` reaches the client again, and a message of another run of the
room is announced first. While a join reads the room's history, the room's
live messages are held back and come after the replay. A room left keeps
its cursor for a while, so a rejoin on the same connection never resends
what the client already had.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from chat.envelope import Publication, Recovery
from chat.ordering import Cursor, Place


class Verdict(Enum):
    """What to do with a live publication for this session."""

    #: Send it.
    SEND = "send"
    #: Drop it: the client had it already.
    DROP = "drop"
    #: Held back until the room's join is done.
    HELD = "held"
    #: Too much held back for a room being joined: the session cannot keep up.
    OVERFLOW = "overflow"
    #: It belongs to a new run of the room: announce the run, then send it.
    NEW_RUN = "new_run"


# Looked up once: place() runs once per delivery.
_SEND, _DROP, _NEW_RUN = Verdict.SEND, Verdict.DROP, Verdict.NEW_RUN
_SEEN, _OTHER_RUN = Place.SEEN, Place.OTHER_RUN


@dataclass(frozen=True, slots=True)
class Entry:
    """How a join came out: what to tell the client, in this order."""

    #: The cursor's ``seq`` after the join (``joined.seq``).
    seq: int
    epoch: str
    #: True when ``replay`` is every message after the client's ``since``.
    recovered: bool
    replay: tuple[Publication, ...]
    #: Live messages that arrived during the join, as they came (each to :meth:`place`).
    held: tuple[tuple[Publication, str], ...]


class Membership:
    """A session's rooms: ``rooms`` is the session record's list (shown in status)."""

    __slots__ = ("_cursors", "_hold_limit", "_holding", "_left", "_left_limit", "rooms")

    def __init__(self, rooms: list[str], *, hold_limit: int, left_limit: int) -> None:
        #: Joined (and being joined) rooms, in join order.
        self.rooms = rooms
        self._cursors: dict[str, Cursor] = {}
        self._holding: dict[str, list[tuple[Publication, str]]] = {}
        self._hold_limit = hold_limit
        #: ``(epoch, seq)`` of rooms left, at most ``left_limit`` of them.
        self._left: dict[str, tuple[str, int]] = {}
        self._left_limit = left_limit

    def __contains__(self, room: str) -> bool:
        return room in self.rooms

    def cursor(self, room: str) -> Cursor | None:
        """Where the session is in a joined ``room`` (None while it is being joined)."""
        return self._cursors.get(room)

    def joining(self, room: str) -> None:
        """A join of ``room`` began: it counts as joined, its live messages are held."""
        self.rooms.append(room)
        self._holding[room] = []

    def abandon(self, room: str) -> None:
        """The join of ``room`` failed or was cut short: the room is not joined."""
        self._holding.pop(room, None)
        if room in self.rooms and room not in self._cursors:
            self.rooms.remove(room)

    def entered(self, room: str, recovery: Recovery, room_for: int) -> Entry:
        """The join of ``room`` read ``recovery``; ``room_for`` frames fit in the send queue.

        Messages this connection had before it left the room are not replayed;
        a replay that would not fit is not sent (``recovered`` false).
        """
        held = tuple(self._holding.pop(room, ()))
        epoch, before = self._left.pop(room, ("", 0))
        sent_before = before if epoch == recovery.epoch else 0
        seq = max(recovery.latest, sent_before)
        self._cursors[room] = Cursor(recovery.epoch, seq)
        replay = tuple(p for p in recovery.publications if p.seq > sent_before)
        recovered = recovery.complete and len(replay) + 2 <= room_for
        return Entry(seq, recovery.epoch, recovered, replay if recovered else (), held)

    def place(self, publication: Publication, frame: str) -> Verdict:
        """What to do with a live ``publication`` (``frame`` encodes it); advances the cursor."""
        room = publication.room
        if self._holding:
            held = self._holding.get(room)
            if held is not None:
                if len(held) >= self._hold_limit:
                    return Verdict.OVERFLOW
                held.append((publication, frame))
                return Verdict.HELD
        cursor = self._cursors.get(room)
        if cursor is None:
            return _DROP
        place = cursor.take(publication)
        if place is _SEEN:
            return _DROP
        return _NEW_RUN if place is _OTHER_RUN else _SEND

    def restart(self, room: str, epoch: str, seq: int) -> bool:
        """Follow a new run of a joined ``room``; False (nothing changed) if it is the
        run the session is in, or the room is not joined (or still being joined)."""
        cursor = self._cursors.get(room)
        if cursor is None or room in self._holding or cursor.epoch == epoch:
            return False
        cursor.restart(epoch, seq)
        return True

    def leave(self, room: str) -> None:
        """Leave ``room``, remembering where the session was in it."""
        if room in self.rooms:
            self.rooms.remove(room)
        self.forget(room)

    def forget(self, room: str) -> None:
        """Drop the room's cursor (kept as ``left``); the rooms list stays as it is."""
        self._holding.pop(room, None)
        cursor = self._cursors.pop(room, None)
        if cursor is not None:
            self._left[room] = (cursor.epoch, cursor.seq)
            while len(self._left) > self._left_limit:
                del self._left[next(iter(self._left))]
