"""Room sequences and recent history, kept in memory. Pure: time comes in as ``now``.

:class:`HistoryStore` gives each room its ``seq`` counter and keeps its last
``size`` messages for ``ttl`` seconds, so a client that reconnects can ask
for what it missed. Memory is bounded three ways: messages per room, seconds
per message, and ``max_bytes`` of text over all rooms (the oldest messages go
first). A room nobody holds is forgotten once its history has expired; it then
starts a new run: ``seq`` from 0 under a new ``epoch``, so that a client
coming back with the old run's ``since`` and ``epoch`` is told it did not
recover, even if the new run has reached the same ``seq``.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chat.envelope import (
    Draft,
    HistoryPage,
    Publication,
    Recovery,
    history_page,
    new_epoch,
    recovery,
)

#: Bytes counted per message on top of its text object (the entry, the
#: publication, its id and bookkeeping), measured with tracemalloc.
ENTRY_OVERHEAD = 350


@dataclass(slots=True)
class _Entry:
    publication: Publication
    at: float
    size: int


@dataclass(slots=True)
class _Room:
    epoch: str
    seq: int = 0
    holders: int = 0
    last_publish: float = 0.0
    entries: deque[_Entry] = field(default_factory=deque)


class HistoryStore:
    """Every room's ``seq`` and history in one process."""

    def __init__(
        self, *, size: int, ttl: float, max_bytes: int, epochs: Callable[[], str] = new_epoch
    ) -> None:
        self._epochs = epochs
        self._size = size
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._rooms: dict[str, _Room] = {}
        #: Every kept entry in publish order across rooms: evicted from the front.
        self._order: deque[tuple[str, _Entry]] = deque()
        #: Entries kept in rooms (``_order`` may also hold ones already dropped).
        self._kept = 0
        self.bytes = 0

    def __len__(self) -> int:
        """Rooms known (held, or with history not yet expired)."""
        return len(self._rooms)

    def publish(self, draft: Draft, now: float) -> Publication:
        """Give ``draft`` its room's next ``seq`` and keep it; returns the publication."""
        room = self._room(draft.room)
        room.seq += 1
        room.last_publish = now
        publication = draft.published(room.seq, room.epoch)
        if self._size and self._ttl:
            entry = _Entry(publication, now, sys.getsizeof(draft.text) + ENTRY_OVERHEAD)
            room.entries.append(entry)
            self._order.append((draft.room, entry))
            self._kept += 1
            self.bytes += entry.size
            if len(room.entries) > self._size:
                self._drop_oldest(room)
            while self.bytes > self._max_bytes and self._order:
                self._evict_front()
            if len(self._order) > 2 * self._kept + 1024:
                self._compact()
        return publication

    def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(self._epochs())
        return room

    def latest(self, room: str) -> int:
        """The room's last ``seq`` (0 if it has none, or was forgotten)."""
        found = self._rooms.get(room)
        return 0 if found is None else found.seq

    def latest_run(self, room: str) -> tuple[str, int] | None:
        """The room's ``(epoch, seq)``, or None if it has no run; changes nothing."""
        found = self._rooms.get(room)
        return None if found is None else (found.epoch, found.seq)

    def recover(
        self, room: str, since: int | None, now: float, epoch: str | None = None
    ) -> Recovery:
        """The latest ``seq`` and ``epoch`` and, with ``since``, the messages after it
        if all are kept and ``epoch`` (when given) is still the room's run."""
        found = self._room(room)
        horizon, after = now - self._ttl, since or 0
        return recovery(
            found.seq,
            found.epoch,
            since,
            epoch,
            lambda: [
                e.publication for e in found.entries if e.at > horizon and e.publication.seq > after
            ],
        )

    def read(
        self, room: str, since: int, limit: int, now: float, epoch: str | None = None
    ) -> HistoryPage:
        """At most ``limit`` kept messages after ``since``, and whether they cover it
        (see :class:`~chat.envelope.HistoryPage`); a room without a run stays without."""
        found = self._rooms.get(room)
        if found is None:
            return history_page(0, None, since, epoch, (), limit)
        horizon = now - self._ttl
        kept = [
            e.publication for e in found.entries if e.at > horizon and e.publication.seq > since
        ]
        return history_page(found.seq, found.epoch, since, epoch, kept, limit)

    def hold(self, room: str) -> None:
        """A subscriber needs ``room``: keep its ``seq`` however old its history."""
        self._room(room).holders += 1

    def release(self, room: str) -> None:
        """One subscriber less; the room may be forgotten once unheld and expired."""
        found = self._rooms.get(room)
        if found is not None and found.holders:
            found.holders -= 1

    def purge(self, now: float) -> None:
        """Drop expired messages, and forget unheld rooms whose history has expired."""
        horizon = now - self._ttl
        while self._order and self._order[0][1].at <= horizon:
            self._evict_front()
        for name in [n for n, r in self._rooms.items() if not r.holders and not r.entries]:
            if self._rooms[name].last_publish <= horizon:
                del self._rooms[name]

    def _drop_oldest(self, room: _Room) -> None:
        entry = room.entries.popleft()
        self._kept -= 1
        self.bytes -= entry.size
        # Its slot in _order goes when it reaches the front (checked by
        # identity), or when _compact rebuilds the order.

    def _evict_front(self) -> None:
        name, entry = self._order.popleft()
        room = self._rooms.get(name)
        if room is not None and room.entries and room.entries[0] is entry:
            room.entries.popleft()
            self._kept -= 1
            self.bytes -= entry.size

    def _compact(self) -> None:
        """Rebuild the global order from the kept entries (dropping stale slots)."""
        kept = [(name, entry) for name, room in self._rooms.items() for entry in room.entries]
        kept.sort(key=lambda item: item[1].at)
        self._order = deque(kept)
