"""Where a consumer is in one room's stream of publications, and what a new one means. Pure.

A room's messages form runs: ``seq`` rises by 1 per message within a run,
named by its ``epoch``; a new run (the broker lost the room's state) starts
again from 1. Two consumers keep such a position per room and ask it where
each arriving publication stands: the Redis broker for its node
(:mod:`chat.brokers.redis`: a gap means missed messages to fill from the
room's stream), and each session for its client (:mod:`chat.membership`: a
seen ``seq`` is never sent twice, a new run is announced first). The rules
are written once, here.
"""

from __future__ import annotations

from enum import Enum

from chat.envelope import Publication


class Place(Enum):
    """Where a publication stands relative to a :class:`Cursor`."""

    #: The next one: ``seq`` is one more than the last handed on, in the same run.
    NEXT = "next"
    #: Further on in the same run: the ones between were missed.
    AHEAD = "ahead"
    #: Handed on already (or older): drop it.
    SEEN = "seen"
    #: Of another run of the room than the cursor's.
    OTHER_RUN = "other_run"


# Looked up once: an enum member read from its class costs a descriptor call.
_NEXT, _AHEAD, _SEEN, _OTHER_RUN = Place.NEXT, Place.AHEAD, Place.SEEN, Place.OTHER_RUN


class Cursor:
    """The run (``epoch``) of a room and the last ``seq`` handed on in it."""

    __slots__ = ("epoch", "seq")

    def __init__(self, epoch: str, seq: int) -> None:
        self.epoch = epoch
        self.seq = seq

    def place(self, publication: Publication) -> Place:
        """Where ``publication`` stands; changes nothing."""
        if publication.epoch != self.epoch:
            return _OTHER_RUN
        if publication.seq <= self.seq:
            return _SEEN
        return _NEXT if publication.seq == self.seq + 1 else _AHEAD

    def take(self, publication: Publication) -> Place:
        """:meth:`place`, and past ``publication`` when it is further on in the same run
        (:attr:`Place.NEXT` or :attr:`Place.AHEAD`): what a consumer that hands
        everything on does, in one step (it runs once per delivery)."""
        if publication.epoch != self.epoch:
            return _OTHER_RUN
        seq = publication.seq
        if seq <= self.seq:
            return _SEEN
        place = _NEXT if seq == self.seq + 1 else _AHEAD
        self.seq = seq
        return place

    def advance(self, publication: Publication) -> None:
        """``publication`` (of this run) was handed on."""
        self.seq = publication.seq

    def restart(self, epoch: str, seq: int) -> None:
        """Follow a new run of the room, whose next message comes after ``seq``."""
        self.epoch = epoch
        self.seq = seq

    def __repr__(self) -> str:
        return f"Cursor({self.epoch!r}, {self.seq})"
