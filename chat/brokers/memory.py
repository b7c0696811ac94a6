"""The embedded broker: one process, everything in memory."""

from __future__ import annotations

from collections import OrderedDict

import anyio
from anyio.abc import TaskStatus

from chat.brokers.base import Deliver, Draft, Publication

#: ``seq`` counters kept for rooms nobody is in, oldest forgotten first: a room
#: that empties for a moment (a lone member reconnecting) keeps counting up.
IDLE_ROOMS_KEPT = 10_000


class InMemoryBroker:
    """Rooms of one process. Publishing delivers synchronously, so ``seq`` order is
    publish order and nothing is ever unavailable.

    Memory is bounded: a room's counter lives while the room has a subscriber,
    and afterwards among the last :data:`IDLE_ROOMS_KEPT` rooms to empty.
    """

    def __init__(self, idle_rooms_kept: int = IDLE_ROOMS_KEPT) -> None:
        self._deliver: Deliver | None = None
        self._seq: dict[str, int] = {}
        self._subscribed: set[str] = set()
        self._idle: OrderedDict[str, None] = OrderedDict()
        self._idle_rooms_kept = idle_rooms_kept

    @property
    def url(self) -> str:
        return "memory://"

    @property
    def healthy(self) -> bool:
        return True

    async def run(self, deliver: Deliver, *, task_status: TaskStatus[None]) -> None:
        self._deliver = deliver
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self._deliver = None

    async def publish(self, draft: Draft) -> Publication:
        room = draft.room
        seq = self._seq.get(room, 0) + 1
        self._seq[room] = seq
        publication = Publication(
            room=room, seq=seq, user=draft.user, text=draft.text, id=draft.id, ts=draft.ts
        )
        if room in self._subscribed:
            if self._deliver is not None:
                self._deliver(publication)
        else:
            self._went_idle(room)
        return publication

    async def subscribe(self, room: str) -> None:
        self._subscribed.add(room)
        self._idle.pop(room, None)

    async def unsubscribe(self, room: str) -> None:
        self._subscribed.discard(room)
        if room in self._seq:
            self._went_idle(room)

    def _went_idle(self, room: str) -> None:
        self._idle[room] = None
        self._idle.move_to_end(room)
        while len(self._idle) > self._idle_rooms_kept:
            forgotten, _ = self._idle.popitem(last=False)
            self._seq.pop(forgotten, None)

    async def latest_seq(self, room: str) -> int:
        return self._seq.get(room, 0)
