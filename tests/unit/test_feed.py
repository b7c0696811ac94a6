"""The Redis feed's ordering: gaps and new runs filled from the stream, nothing lost or doubled.

A stand-in for the rooms' streams answers the fills; messages arrive as the
pub/sub connection hands them over. No Redis needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import pytest

from chat.brokers.base import BrokerUnavailable
from chat.brokers.redis.feed import Feed
from chat.envelope import PresenceChange, Publication, RunStarted
from tests.clock import FakeClock, settle

pytestmark = pytest.mark.anyio

ROOM = "lobby"


def publication(epoch: str, seq: int) -> Publication:
    return Publication(ROOM, seq, "ann", f"{epoch}:{seq}", None, 1.0, epoch)


class Streams:
    """The rooms' streams as a fill reads them: ``(latest, epoch, kept)`` after ``since``."""

    def __init__(
        self, epoch: str, kept: list[Publication], *, latest: int = 0, fails: bool = False
    ) -> None:
        self.epoch = epoch
        self.kept = kept
        #: The room's seq (what was published, kept or not).
        self.latest = max([latest, *(p.seq for p in kept)])
        self.fails = fails

    async def kept_after(self, room: str, since: int | None) -> tuple[int, str, list[Publication]]:
        if self.fails:
            raise BrokerUnavailable("down", uncertain=False)
        return self.latest, self.epoch, [p for p in self.kept if p.seq > (since or 0)]


async def users(room: str) -> list[str]:
    return ["ann", "bo"]


async def ready() -> None:
    return None


def message(item: Publication | PresenceChange) -> dict[str, Any]:
    """What the pub/sub connection hands over for ``item``."""
    body: dict[str, Any]
    if isinstance(item, PresenceChange):
        body = {"k": "p", "room": item.room, "event": item.event, "user": item.user}
        body["origin"] = item.origin
    else:
        body = {
            "k": "m",
            "room": item.room,
            "seq": item.seq,
            "epoch": item.epoch,
            "user": item.user,
            "text": item.text,
            "id": item.id,
            "ts": item.ts,
        }
    return {"type": "message", "channel": f"chat:room:{item.room}", "data": orjson.dumps(body)}


@asynccontextmanager
async def feed_of(streams: Streams, at: tuple[str, int]) -> AsyncIterator[tuple[Feed, list[Any]]]:
    """A feed following ``ROOM`` from ``at`` (epoch, seq), and what it delivers."""
    feed = Feed(None, streams, FakeClock(), "node-a", users=users, on_ready=ready)  # type: ignore[arg-type]
    delivered: list[Any] = []
    feed.deliver = delivered.append
    feed.rooms.add(ROOM)
    feed.follow(ROOM, *at)
    async with anyio.create_task_group() as group:
        feed._group = group
        yield feed, delivered
        group.cancel_scope.cancel()


async def test_the_next_message_goes_straight_through_and_a_seen_one_is_dropped() -> None:
    async with feed_of(Streams("e1", []), ("e1", 5)) as (feed, delivered):
        feed._on_message(message(publication("e1", 6)))
        feed._on_message(message(publication("e1", 6)))
        await settle()
        assert delivered == [publication("e1", 6)]


async def test_a_gap_is_filled_from_the_stream_before_what_waited() -> None:
    kept = [publication("e1", seq) for seq in (6, 7, 8)]
    async with feed_of(Streams("e1", kept), ("e1", 5)) as (feed, delivered):
        feed._on_message(message(publication("e1", 8)))
        change = PresenceChange(ROOM, "join", "cy", "")
        feed._on_message(message(change))
        feed._on_message(message(publication("e1", 9)))
        await settle()
        assert delivered == [*kept, change, publication("e1", 9)]


def together(*items: Publication) -> dict[str, Any]:
    """What the pub/sub connection hands over for one round trip's messages of a room."""
    bodies = [orjson.loads(message(item)["data"]) for item in items]
    return {"type": "message", "channel": f"chat:room:{ROOM}", "data": orjson.dumps(bodies)}


async def test_a_round_trips_messages_in_one_array_are_placed_one_by_one() -> None:
    kept = [publication("e1", seq) for seq in (6, 7)]
    async with feed_of(Streams("e1", kept), ("e1", 5)) as (feed, delivered):
        feed._on_message(together(publication("e1", 6), publication("e1", 7)))
        feed._on_message(together(publication("e1", 7), publication("e1", 8)))  # 7 seen
        feed._on_message(together(publication("e1", 10), publication("e1", 11)))  # 9 missed
        feed._on_message({**together(), "data": b"[{}]"})  # malformed: ignored
        await settle()
        assert [p.seq for p in delivered] == [6, 7, 8, 10, 11]
        assert feed._filling == {}  # a fill ran for 9 (its history is gone): nothing waits


@pytest.mark.parametrize("kept", [[], [1, 2]], ids=["no-history", "history"])
async def test_a_new_run_is_announced_then_delivered_from_its_first_message(
    kept: list[int],
) -> None:
    live = publication("e2", 3 if kept else 1)
    # The live message was published (the room's seq counts it), kept or not.
    streams = Streams("e2", [publication("e2", seq) for seq in kept], latest=live.seq)
    async with feed_of(streams, ("e1", 5)) as (feed, delivered):
        feed._on_message(message(live))
        await settle()
        first = min([*kept, live.seq])
        assert delivered[0] == RunStarted(ROOM, "e2", first - 1, ("ann", "bo"))
        assert [p.seq for p in delivered[1:]] == list(range(first, live.seq + 1))


async def test_what_waited_still_goes_out_when_the_fill_fails_new_run_included() -> None:
    async with feed_of(Streams("e1", [], fails=True), ("e1", 5)) as (feed, delivered):
        feed._on_message(message(publication("e1", 7)))
        feed._on_message(message(publication("e2", 3)))
        await settle()
        assert delivered == [publication("e1", 7), publication("e2", 3)]


async def test_a_room_left_during_its_fill_gets_nothing_more_and_keeps_no_cursor() -> None:
    async with feed_of(Streams("e1", [publication("e1", 6)]), ("e1", 5)) as (feed, delivered):
        feed._on_message(message(publication("e1", 7)))
        await feed.unsubscribe(ROOM)
        await settle()
        assert delivered == []
        # A stale cursor would keep a later first member's view from being followed.
        assert ROOM not in feed._cursors
