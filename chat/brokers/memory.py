"""The embedded broker: one process, everything in memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from anyio.abc import TaskStatus

from chat.brokers.base import Apply, BrokerUnavailable, Deliver, SessionCount, discount
from chat.clock import Clock
from chat.envelope import (
    DisconnectCommand,
    Draft,
    HistoryPage,
    NodeInfo,
    PresenceChange,
    Publication,
    Recovery,
    Tally,
)
from chat.history import HistoryStore
from chat.idempotency import RecentSends
from chat.roster import Roster

#: Seconds between sweeps of expired history and forgotten rooms.
PURGE_INTERVAL = 5.0


class InMemoryBroker:
    """Rooms of one process. Publishing delivers synchronously, so ``seq`` order is
    publish order and nothing is ever unavailable. History and sequences live
    in a :class:`~chat.history.HistoryStore`, retries are recognised by
    :class:`~chat.idempotency.RecentSends` (both swept every few seconds),
    presence lives in a :class:`~chat.roster.Roster`; a command is applied here,
    the only node there is.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        history_size: int,
        history_ttl: float,
        history_max_bytes: int,
        send_id_window: float = 0.0,
    ) -> None:
        self._clock = clock
        self._deliver: Deliver | None = None
        self._apply: Apply | None = None
        self._subscribed: set[str] = set()
        self._roster = Roster()
        self._claims: Counter[str] = Counter()
        self.store = HistoryStore(size=history_size, ttl=history_ttl, max_bytes=history_max_bytes)
        self.sent = RecentSends(window=send_id_window)

    @property
    def url(self) -> str:
        return "memory://"

    @property
    def healthy(self) -> bool:
        return True

    def statistics(self) -> dict[str, Any]:
        return {}

    async def run(
        self,
        deliver: Deliver,
        sessions: SessionCount,
        *,
        task_status: TaskStatus[None],
        apply: Apply | None = None,
    ) -> None:
        self._deliver = deliver
        self._apply = apply
        task_status.started()
        try:
            while True:
                await self._clock.sleep(PURGE_INTERVAL)
                now = self._clock.now()
                self.store.purge(now)
                self.sent.purge(now)
        finally:
            self._deliver = None
            self._apply = None

    async def publish(self, draft: Draft) -> Publication:
        now = self._clock.now()
        earlier = self.sent.find(draft, now)
        if earlier is not None:
            return draft.published(earlier.seq, earlier.epoch, duplicate=True)
        publication = self.store.publish(draft, now)
        self.sent.remember(draft, publication.seq, publication.epoch, now)
        if self._deliver is not None and draft.room in self._subscribed:
            self._deliver(publication)
        return publication

    async def publish_many(self, drafts: Sequence[Draft]) -> list[Publication | BrokerUnavailable]:
        found: list[Publication | BrokerUnavailable] = []
        for draft in drafts:
            try:
                found.append(await self.publish(draft))
            except BrokerUnavailable as error:  # a test's broker may refuse
                found.append(error)
        return found

    async def subscribe(self, room: str) -> None:
        if room not in self._subscribed:
            self._subscribed.add(room)
            self.store.hold(room)

    async def unsubscribe(self, room: str) -> None:
        if room in self._subscribed:
            self._subscribed.discard(room)
            self.store.release(room)

    async def recover(self, room: str, since: int | None, epoch: str | None = None) -> Recovery:
        return self.store.recover(room, since, self._clock.now(), epoch)

    async def latest(self, room: str) -> tuple[str, int] | None:
        return self.store.latest_run(room)

    async def read(
        self, room: str, since: int, limit: int, epoch: str | None = None
    ) -> HistoryPage:
        return self.store.read(room, since, limit, self._clock.now(), epoch)

    async def presence_enter(self, room: str, user: str) -> tuple[bool, list[str]]:
        return self._roster.add(room, user), self._roster.users(room)

    async def presence_leave(self, room: str, user: str) -> bool:
        return self._roster.remove(room, user)

    async def presence_users(self, room: str) -> list[str]:
        return self._roster.users(room)

    async def presence_counts(self, room: str) -> dict[str, int]:
        return self._roster.counts(room)

    async def announce(self, change: PresenceChange) -> None:
        if self._deliver is not None and change.room in self._subscribed:
            self._deliver(change)

    async def claim_session(self, user: str, cap: int) -> bool:
        if cap and self._claims[user] >= cap:
            return False
        self._claims[user] += 1
        return True

    async def release_session(self, user: str) -> None:
        discount(self._claims, user)

    async def nodes(self) -> list[NodeInfo] | None:
        return None

    async def disconnect(self, command: DisconnectCommand) -> Tally:
        return Tally(self._apply(command) if self._apply is not None else 0)
