"""The subscription: every local room's messages from Redis to this node, in order, once.

One pub/sub connection per process carries every local room, subscribed once
per room (the rooms layer counts members), and this node's canary. Health is
judged end to end: every second the node publishes a canary to itself, and it
is unhealthy when the canary stops coming back within :data:`CANARY_DEADLINE`,
which also catches a subscription that went deaf silently.

The subscriber runs in a loop that cannot die: it reconnects with capped,
jittered backoff (reset once a canary came back), resubscribes every local
room, has this node's share of presence and sessions re-asserted, and fills
each room's gap from its stream while holding that room's live messages (and
presence changes) back. Where a publication stands is the one rule of
:class:`chat.ordering.Cursor`; a new run of a room is announced
(:class:`~chat.envelope.RunStarted`) before its first message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
from anyio.abc import TaskGroup
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.client import PubSub

from chat.brokers.base import BrokerUnavailable, Deliver
from chat.brokers.redis import keys
from chat.brokers.redis.link import COMMAND_TIMEOUT, Link
from chat.brokers.redis.streams import Streams, parse_messages
from chat.clock import Clock
from chat.envelope import PresenceChange, Publication, RunStarted
from chat.ordering import Cursor, Place

log = logging.getLogger("chat.broker")

#: Seconds between canaries, and without one before the broker is unhealthy.
CANARY_INTERVAL = 1.0
CANARY_DEADLINE = 3.0
#: Reconnect backoff: doubled from the first to the cap, jittered, reset on success.
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
#: Rooms whose gaps are filled at once after a reconnect.
FILL_CONCURRENCY = 16
#: Messages already read handed over in one go, at most, before the loop has a turn.
DRAIN_MAX = 1000


# Looked up once: placing runs for every message of every room.
_NEXT, _SEEN, _OTHER_RUN = Place.NEXT, Place.SEEN, Place.OTHER_RUN


class Feed:
    """The subscription of one node; :meth:`run` it in the broker's task group."""

    def __init__(
        self,
        link: Link,
        streams: Streams,
        clock: Clock,
        node_id: str,
        *,
        users: Callable[[str], Awaitable[list[str]]],
        on_ready: Callable[[], Awaitable[None]],
    ) -> None:
        self._link = link
        self._streams = streams
        self._clock = clock
        self._users = users
        self._on_ready = on_ready
        self._canary = keys.canary(node_id)
        self.deliver: Deliver | None = None
        #: Rooms this node wants delivered (subscribed, or to resubscribe).
        self.rooms: set[str] = set()
        #: Where this node is in each room's stream (what it handed to ``deliver``).
        self._cursors: dict[str, Cursor] = {}
        #: Rooms being filled from their streams: what arrives meanwhile, in order.
        self._filling: dict[str, list[Publication | PresenceChange]] = {}
        self._fill_slots = anyio.Semaphore(FILL_CONCURRENCY)
        self._confirmations: dict[str, anyio.Event] = {}
        self._pubsub: PubSub | None = None
        self._group: TaskGroup | None = None
        self.subscribed = False
        self._canary_seen: float | None = None
        self._canary_heard = False
        self.canary_lag_ms: float | None = None
        self.reconnects = 0

    @property
    def healthy(self) -> bool:
        """Subscribed, and this node's canary came back within the deadline."""
        seen = self._canary_seen
        return self.subscribed and seen is not None and self._clock.now() - seen < CANARY_DEADLINE

    def restart(self, why: str) -> None:
        """Rebuild the subscription (Redis restarted, or it went deaf)."""
        self.subscribed = False
        self._link.last_error = why
        self._link.trouble.set()

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Keep one subscription carrying every local room, whatever happens."""
        backoff = BACKOFF_FIRST
        async with anyio.create_task_group() as group:
            self._group = group
            while True:
                self._canary_heard = False
                try:
                    await self._serve()
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception as error:
                    if self.subscribed:
                        log.warning(
                            "redis subscription lost (%s); reconnecting", type(error).__name__
                        )
                    self._link.last_error = type(error).__name__
                if self._canary_heard:  # it had really worked: start the backoff over
                    backoff = BACKOFF_FIRST
                self.subscribed = False
                self.reconnects += 1
                await self.close()
                await self._clock.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_CAP)

    async def _serve(self) -> None:
        self._link.trouble = anyio.Event()
        self._streams.run = await self._link.run_id()
        await self._link.forget_connections()
        pubsub = self._pubsub = self._link.listener.pubsub()
        channels = [self._canary, *(keys.channel(room) for room in self.rooms)]
        with anyio.fail_after(COMMAND_TIMEOUT * 4):
            await pubsub.subscribe(*channels)
            pending = set(channels)
            while pending:
                message = await pubsub.get_message(timeout=COMMAND_TIMEOUT)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    pending.discard(message["channel"])
                else:
                    self._on_message(message)
        self.subscribed = True
        self._canary_seen = self._clock.now()
        log.info("redis subscription ready: %d rooms", len(self.rooms))
        await self._on_ready()
        for room in list(self.rooms):
            self._start_fill(room)
        while not self._link.trouble.is_set():
            message = await pubsub.get_message(timeout=COMMAND_TIMEOUT)
            if message is not None:
                self._on_message(message)
                await self._drain(pubsub)
        raise ConnectionError("reconnect requested")

    async def _drain(self, pubsub: PubSub) -> None:
        """Hand over every message already read from the socket, without a wait.

        :meth:`PubSub.get_message` would return the same replies one call at a
        time, each wrapped in a retry, a timeout, a debug string and a dict: a
        sixth of a receiving node's CPU. A room's message is handed over as it
        comes; anything else (a subscription's confirmation) goes through
        redis-py's :meth:`PubSub.handle_message`, which keeps its own books.
        Without hiredis (its reader is what holds the parsed replies) there is
        nothing to drain here and ``get_message`` reads them all.
        """
        parser = getattr(pubsub.connection, "_parser", None)
        reader: Any = getattr(parser, "_reader", None)
        if not isinstance(parser, _AsyncHiredisParser) or reader is None:
            return
        for _ in range(DRAIN_MAX):
            response = reader.gets()
            if response is NOT_ENOUGH_DATA:
                return
            if isinstance(response, Exception):
                raise response  # as redis-py's read would: the subscription is rebuilt
            if isinstance(response, list) and len(response) == 3 and response[0] == "message":
                self._on_publish(response[1], response[2])
                continue
            message = await pubsub.handle_message(response)  # type: ignore[no-untyped-call]
            if message is not None:
                self._on_message(message)

    async def close(self) -> None:
        """Close the subscription's connection as it can (a dead one included)."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(COMMAND_TIMEOUT),
                suppress(Exception),
            ):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def beat_canary(self) -> None:
        """Publish the canary; rebuild a subscription that no longer hears it."""
        await self._link.call(self._link.commands.publish(self._canary, str(self._clock.now())))
        seen = self._canary_seen
        if self.subscribed and (seen is None or self._clock.now() - seen > CANARY_DEADLINE):
            # Commands work but the subscription hears nothing.
            self.restart("canary lost")

    # -- rooms -----------------------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        """Deliver ``room`` from now on; returns once Redis confirmed the subscription."""
        pubsub = self._pubsub
        if not self.healthy or pubsub is None:
            raise BrokerUnavailable("broker unhealthy")
        channel = keys.channel(room)
        confirmed = self._confirmations[channel] = anyio.Event()
        self.rooms.add(room)
        try:
            await self._link.call(pubsub.subscribe(channel))
            with anyio.fail_after(COMMAND_TIMEOUT * 2):
                await confirmed.wait()
        except BaseException as error:
            self.rooms.discard(room)
            self._confirmations.pop(channel, None)
            if isinstance(error, BrokerUnavailable | TimeoutError):
                self._link.trouble.set()
                raise BrokerUnavailable("subscribe failed") from None
            raise

    async def unsubscribe(self, room: str) -> None:
        self.rooms.discard(room)
        self._cursors.pop(room, None)
        pubsub = self._pubsub
        if pubsub is not None and self.subscribed:
            await self._link.call(pubsub.unsubscribe(keys.channel(room)))

    def follow(self, room: str, epoch: str, seq: int) -> None:
        """The first local member's view of ``room``: later gaps are filled from here."""
        if room in self.rooms and room not in self._cursors:
            self._cursors[room] = Cursor(epoch, seq)

    # -- what arrives ----------------------------------------------------------------

    def _on_message(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "subscribe":
            confirmed = self._confirmations.pop(channel, None)
            if confirmed is not None:
                confirmed.set()
            return
        if kind == "message":
            self._on_publish(channel, message["data"])

    def _on_publish(self, channel: str, data: str | bytes) -> None:
        """A message on ``channel``: a room's, or this node's canary."""
        if channel == self._canary:
            now = self._clock.now()
            self._canary_seen = now
            self._canary_heard = True
            with suppress(ValueError):
                self.canary_lag_ms = round((now - float(data)) * 1000, 1)
            return
        items = parse_messages(data)
        if items is None:
            log.warning("ignoring a malformed message on %s", channel)
            return
        for item in items:
            self._hand_over(item)

    def _hand_over(self, item: Publication | PresenceChange) -> None:
        """Deliver ``item`` once, in order; a gap or a new run is filled from the stream first."""
        room = item.room
        if room not in self.rooms:
            return
        held = self._filling.get(room)
        if held is not None:
            held.append(item)  # after the fill, in arrival order
            return
        cursor = self._cursors.get(room)
        if isinstance(item, Publication) and cursor is not None:
            place = cursor.place(item)
            if place is _SEEN:
                return
            if place is not _NEXT:
                # Missed messages (a deaf spell), or a new run begun meanwhile.
                self._start_fill(room)
                self._filling[room].append(item)
                return
        self._deliver(item)

    def _deliver(
        self, item: Publication | PresenceChange | RunStarted, *, any_run: bool = False
    ) -> None:
        """Hand ``item`` on unless it was handed on already, or is of a run not
        announced (unless ``any_run``: a fill that failed hands on what waited)."""
        if isinstance(item, Publication):
            if item.room not in self.rooms:
                return  # unsubscribed meanwhile
            cursor = self._cursors.get(item.room)
            if cursor is None:
                self._cursors[item.room] = cursor = Cursor(item.epoch, item.seq - 1)
            place = cursor.place(item)
            if place is _OTHER_RUN and any_run:
                # The sessions notice the new run themselves (a joined first).
                cursor.restart(item.epoch, item.seq - 1)
            elif place is _SEEN or place is _OTHER_RUN:
                return
            cursor.advance(item)
        if self.deliver is not None:
            self.deliver(item)

    def _start_fill(self, room: str) -> None:
        if room in self._filling or room not in self._cursors or self._group is None:
            return
        self._filling[room] = []
        self._group.start_soon(self._fill, room)

    async def _fill(self, room: str) -> None:
        """Deliver what the stream has after what this node last delivered, then what waited.

        Whatever is kept is delivered, even when the history no longer covers
        the whole gap (clients see the gap in ``seq`` and recover themselves).
        """
        failed = False
        try:
            async with self._fill_slots:
                cursor = self._cursors[room]
                _, current, kept = await self._streams.kept_after(room, cursor.seq)
                if current != cursor.epoch:
                    latest, current, kept = await self._streams.kept_after(room, 0)
                    users = await self._users(room)
                    # The new run goes on from its first message known here: kept,
                    # or waiting (with no history kept), else after its latest.
                    firsts = [p.seq for p in kept[:1]] + [
                        p.seq
                        for p in self._filling.get(room, ())
                        if isinstance(p, Publication) and p.epoch == current
                    ]
                    start = min(firsts) - 1 if firsts else latest
                    cursor.restart(current, start)
                    self._deliver(RunStarted(room, current, start, tuple(users)))
                for publication in kept:
                    self._deliver(publication)
        except (BrokerUnavailable, KeyError):
            failed = True  # what waited still goes out; the next reconnect fills again
        finally:
            for item in self._filling.pop(room, []):
                self._deliver(item, any_run=failed)
