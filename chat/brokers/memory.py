"""The embedded broker: one process, everything in memory."""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from chat.brokers.base import Deliver, Draft, Publication


class InMemoryBroker:
    """Rooms of one process. Publishing delivers synchronously, so ``seq`` order is
    publish order and nothing is ever unavailable.

    A room's ``seq`` counter is freed when its last subscriber leaves.
    """

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._seq: dict[str, int] = {}
        self._subscribed: set[str] = set()

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
        seq = self._seq.get(draft.room, 0) + 1
        self._seq[draft.room] = seq
        publication = Publication(
            room=draft.room, seq=seq, user=draft.user, text=draft.text, id=draft.id, ts=draft.ts
        )
        if self._deliver is not None and draft.room in self._subscribed:
            self._deliver(publication)
        return publication

    async def subscribe(self, room: str) -> None:
        self._subscribed.add(room)

    async def unsubscribe(self, room: str) -> None:
        self._subscribed.discard(room)
        self._seq.pop(room, None)

    async def latest_seq(self, room: str) -> int:
        return self._seq.get(room, 0)
