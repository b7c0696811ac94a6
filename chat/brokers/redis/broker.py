"""The Redis broker: many processes and hosts share rooms, presence and session caps.

It puts together this package's parts: the :class:`~chat.brokers.redis.link.Link`
(bounded commands and the scripts), the rooms'
:class:`~chat.brokers.redis.streams.Streams` (and their
:class:`~chat.brokers.redis.reader.Reader`), the
:class:`~chat.brokers.redis.feed.Feed` (the subscription), this node's
:class:`~chat.brokers.redis.shares.Shares` (presence, claims, the node list)
and its :class:`~chat.brokers.redis.control.Control` (commands between nodes).
The keys are listed in :mod:`chat.brokers.redis.keys`. Only JSON travels on
the bus.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

import anyio
from anyio.abc import TaskStatus

from chat.brokers.base import Apply, BrokerUnavailable, Deliver, SessionCount
from chat.brokers.redis.control import Control
from chat.brokers.redis.feed import CANARY_INTERVAL, Feed
from chat.brokers.redis.link import Link
from chat.brokers.redis.reader import Reader
from chat.brokers.redis.shares import DEAD_AFTER, HEARTBEAT_INTERVAL, Shares
from chat.brokers.redis.streams import Streams
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

log = logging.getLogger("chat.broker")


class RedisBroker:
    """A :class:`~chat.brokers.base.Broker` over one Redis (``redis://`` or ``rediss://``)."""

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        node_id: str,
        history_size: int,
        history_ttl: float,
        send_id_window: float = 0.0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        self._clock = clock
        self._node = node_id
        self._heartbeat_interval = heartbeat_interval
        self._link = Link(url, node_id)
        self._streams = Streams(
            self._link,
            history_size=history_size,
            history_ttl=history_ttl,
            send_id_window=send_id_window,
        )
        self._shares = Shares(self._link, node_id, dead_after=dead_after)
        self._feed = Feed(
            self._link,
            self._streams,
            clock,
            node_id,
            users=self._shares.users,
            on_ready=self._resync,
        )
        self._sessions: SessionCount = lambda: 0
        self._reader = Reader(self._link, history_ttl=history_ttl, run=lambda: self._streams.run)
        self._control = Control(self._link, clock, node_id, live_nodes=self._live_nodes)

    # -- health ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._link.url

    @property
    def healthy(self) -> bool:
        return self._link.ok and self._feed.healthy and self._control.ready

    @property
    def reconnects(self) -> int:
        """How often the subscription was rebuilt."""
        return self._feed.reconnects

    def statistics(self) -> dict[str, Any]:
        return {
            "reconnects": self._feed.reconnects,
            "last_error": self._link.last_error,
            "canary_lag_ms": self._feed.canary_lag_ms,
        }

    # -- running ---------------------------------------------------------------

    async def run(
        self,
        deliver: Deliver,
        sessions: SessionCount,
        *,
        task_status: TaskStatus[None],
        apply: Apply | None = None,
    ) -> None:
        self._feed.deliver = deliver
        self._control.apply = apply
        self._sessions = sessions
        task_status.started()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._feed.run)
                group.start_soon(self._control.run)
                group.start_soon(self._forever, self._feed.beat_canary, CANARY_INTERVAL)
                group.start_soon(self._forever, self._heartbeat, self._heartbeat_interval)
        finally:
            self._feed.deliver = None
            self._control.apply = None
            self._feed.subscribed = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await self._feed.close()
                # Leave the cluster now rather than wait to be reaped: release
                # whatever this node still counts, and tell the others.
                with suppress(BrokerUnavailable):
                    await self._announce(await self._shares.reap(self._node, leaving=True))
                await self._link.aclose()

    async def _forever(self, beat: Callable[[], Awaitable[None]], interval: float) -> None:
        """Run ``beat`` every ``interval`` seconds; nothing it raises stops the loop."""
        while True:
            try:
                await beat()
            except BrokerUnavailable:
                pass
            except Exception:
                log.exception("redis broker: %s failed", getattr(beat, "__name__", beat))
            await self._clock.sleep(interval)

    async def _heartbeat(self) -> None:
        run = await self._link.call(self._link.run_id())
        if self._feed.subscribed and run != self._streams.run:
            # Redis restarted under us (from a snapshot, or empty): new runs for
            # every room, and this node's share to re-assert. Start over.
            self._feed.restart("redis restarted")
            return
        added = await self._shares.beat(
            self._sessions(), list(self._feed.rooms), self._streams.room_ttl_ms
        )
        if added and self._feed.subscribed:
            # This node was not in the list: reaped while slow, or Redis restarted.
            await self._resync()
        _, dead = await self._shares.nodes()
        for node in dead:
            if node != self._node:
                await self._announce(await self._shares.reap(node))

    async def _resync(self) -> None:
        await self._announce(await self._shares.resync())

    async def _announce(self, changes: list[PresenceChange]) -> None:
        for change in changes:
            await self._shares.announce(change)

    # -- publish and subscribe ---------------------------------------------------------

    async def publish(self, draft: Draft) -> Publication:
        if not self.healthy:
            raise BrokerUnavailable("broker unhealthy")
        return await self._streams.publish(draft)

    async def publish_many(self, drafts: Sequence[Draft]) -> list[Publication | BrokerUnavailable]:
        if not self.healthy:
            return [BrokerUnavailable("broker unhealthy")] * len(drafts)
        return await self._streams.publish_many(drafts)

    async def subscribe(self, room: str) -> None:
        await self._feed.subscribe(room)

    async def unsubscribe(self, room: str) -> None:
        await self._feed.unsubscribe(room)

    # -- history -------------------------------------------------------------------

    async def recover(self, room: str, since: int | None, epoch: str | None = None) -> Recovery:
        found = await self._streams.recover(room, since, epoch)
        self._feed.follow(room, found.epoch, found.latest)
        return found

    async def latest(self, room: str) -> tuple[str, int] | None:
        return await self._streams.latest(room)

    async def read(
        self, room: str, since: int, limit: int, epoch: str | None = None
    ) -> HistoryPage:
        return await self._reader.read(room, since, limit, epoch)

    # -- presence ------------------------------------------------------------------

    async def presence_enter(self, room: str, user: str) -> tuple[bool, list[str]]:
        return await self._shares.enter(room, user)

    async def presence_leave(self, room: str, user: str) -> bool:
        return await self._shares.leave(room, user)

    async def presence_users(self, room: str) -> list[str]:
        return await self._shares.users(room)

    async def presence_counts(self, room: str) -> dict[str, int]:
        return await self._shares.counts(room)

    async def announce(self, change: PresenceChange) -> None:
        await self._shares.announce(change)

    # -- claims and the cluster ----------------------------------------------------------

    async def claim_session(self, user: str, cap: int) -> bool:
        return await self._shares.claim(user, cap)

    async def release_session(self, user: str) -> None:
        await self._shares.release(user)

    async def nodes(self) -> list[NodeInfo] | None:
        return await self._live_nodes()

    async def _live_nodes(self) -> list[NodeInfo]:
        live, _ = await self._shares.nodes()
        return live

    # -- commands ------------------------------------------------------------------

    async def disconnect(self, command: DisconnectCommand) -> Tally:
        return await self._control.disconnect(command)


__all__ = ["DEAD_AFTER", "HEARTBEAT_INTERVAL", "RedisBroker"]
