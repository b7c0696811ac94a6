"""Rooms in depth on the domain: joins, replay, no duplicates, presence. Fake clock, no server."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from chat.brokers import Deliver, Draft, Publication, Recovery
from chat.brokers.memory import InMemoryBroker
from chat.clock import FakeClock, settle
from tests.domain import running

pytestmark = pytest.mark.anyio


def texts(frames: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for f in frames if f["type"] == "message"]


async def test_sessions_in_different_rooms_are_isolated() -> None:
    async with running() as harness:
        one, _ = await harness.connect("a")
        two, _ = await harness.connect("b")
        one.send_json({"type": "join", "room": "shared"})
        two.send_json({"type": "join", "room": "shared"})
        await settle()
        one.send_json({"type": "send", "room": "a", "text": "only a"})
        two.send_json({"type": "send", "room": "b", "text": "only b"})
        one.send_json({"type": "send", "room": "shared", "text": "both"})
        await settle()
        assert sorted(texts(one.frames())) == ["both", "only a"]
        assert sorted(texts(two.frames())) == ["both", "only b"]
        assert {m["room"] for m in one.of_type("message")} == {"a", "shared"}


async def test_join_with_since_replays_the_missed_messages_before_live_ones() -> None:
    async with running() as harness:
        sender, _ = await harness.connect()
        for n in range(30):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n)})
        await settle()
        late, _ = await harness.connect("elsewhere")
        late.send_json({"type": "join", "room": "lobby", "since": 10})
        await settle()
        sender.send_json({"type": "send", "room": "lobby", "text": "live"})
        await settle()
        frames = [f for f in late.frames() if f.get("room") == "lobby"]
        joined = frames[0]
        assert (joined["type"], joined["seq"], joined["recovered"]) == ("joined", 30, True)
        assert [m["seq"] for m in frames[1:]] == list(range(11, 32))
        assert texts(frames)[-1] == "live"


async def test_connecting_with_since_replays_like_join() -> None:
    async with running() as harness:
        sender, _ = await harness.connect()
        for n in range(5):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n)})
        await settle()
        back, _ = await harness.connect(since=2)
        assert back.frames()[1]["recovered"] is True
        assert [m["seq"] for m in back.of_type("message")] == [3, 4, 5]


async def test_a_gap_larger_than_the_history_is_not_recovered_and_not_replayed() -> None:
    async with running(history_size=10) as harness:
        sender, _ = await harness.connect()
        for n in range(30):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n)})
        await settle()
        back, _ = await harness.connect(since=5)
        joined = back.of_type("joined")[0]
        assert (joined["seq"], joined["recovered"]) == (30, False)
        assert back.of_type("message") == []
        sender.send_json({"type": "send", "room": "lobby", "text": "live"})
        await settle()
        assert [m["seq"] for m in back.of_type("message")] == [31]


async def test_expired_history_is_not_recovered() -> None:
    async with running(history_ttl=60, heartbeat_interval=1000) as harness:
        sender, _ = await harness.connect()
        sender.send_json({"type": "send", "room": "lobby", "text": "old"})
        await settle()
        await harness.advance(61)
        back, _ = await harness.connect(since=0)
        assert back.of_type("joined")[0]["recovered"] is False
        assert back.of_type("message") == []


class SlowRecoveryBroker(InMemoryBroker):
    """Memory broker whose history read takes a while, as over a network (Redis).

    While ``recover`` waits, the test publishes: those live messages reach the
    joining session before its replay is ready.
    """

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, history_size=100, history_ttl=300, history_max_bytes=1 << 20)
        self.reading = anyio.Event()
        self.release = anyio.Event()

    async def recover(self, room: str, since: int | None) -> Recovery:
        if since is None:
            return await super().recover(room, since)
        self.reading.set()
        await self.release.wait()
        return await super().recover(room, since)

    async def run(self, deliver: Deliver, *, task_status: TaskStatus[None]) -> None:
        await super().run(deliver, task_status=task_status)

    async def publish(self, draft: Draft) -> Publication:
        return await super().publish(draft)


async def test_a_live_message_during_the_replay_is_delivered_once_and_after_it() -> None:
    clock = FakeClock()
    broker = SlowRecoveryBroker(clock)
    async with running(broker=broker, clock=clock) as harness:
        sender, _ = await harness.connect()
        for n in range(5):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n)})
        await settle()
        late, _ = await harness.connect("elsewhere")
        late.send_json({"type": "join", "room": "lobby", "since": 2})
        await settle()
        assert broker.reading.is_set()
        # Published after the subscription but before the history read returns:
        # the history will contain 6 and 7, and they also arrive live.
        for text in ["during-1", "during-2"]:
            sender.send_json({"type": "send", "room": "lobby", "text": text})
        await settle()
        assert [m for m in late.of_type("message") if m["room"] == "lobby"] == []
        broker.release.set()
        await settle()
        sender.send_json({"type": "send", "room": "lobby", "text": "after"})
        await settle()
        lobby = [m for m in late.of_type("message") if m["room"] == "lobby"]
        assert [m["seq"] for m in lobby] == [3, 4, 5, 6, 7, 8]
        assert texts(lobby)[-3:] == ["during-1", "during-2", "after"]
        joined = next(f for f in late.frames() if f["type"] == "joined" and f["room"] == "lobby")
        assert (joined["seq"], joined["recovered"]) == (7, True)


async def test_members_list_each_user_once() -> None:
    async with running() as harness:
        await harness.connect(user="ann")
        await harness.connect(user="ann")
        bob, _ = await harness.connect(user="bob")
        assert bob.of_type("joined")[0]["members"] == [{"user": "ann"}, {"user": "bob"}]


async def test_presence_is_announced_once_per_user_however_many_sessions() -> None:
    async with running() as harness:
        watcher, _ = await harness.connect(user="watcher")
        ann_1, _ = await harness.connect(user="ann")
        ann_2, _ = await harness.connect(user="ann")
        ann_1.hang_up()
        await settle()
        assert watcher.of_type("presence") == [
            {"type": "presence", "room": "lobby", "event": "join", "user": "ann"}
        ]
        ann_2.send_json({"type": "leave", "room": "lobby"})
        await settle()
        assert [(p["event"], p["user"]) for p in watcher.of_type("presence")] == [
            ("join", "ann"),
            ("leave", "ann"),
        ]
        # A user's own sessions are not told about that user.
        assert ann_2.of_type("presence") == []


async def test_a_session_that_vanishes_leaves_presence() -> None:
    async with running(heartbeat_interval=10, heartbeat_timeout=5) as harness:
        watcher, _ = await harness.connect(user="watcher")
        ghost, _ = await harness.connect(user="ghost")
        # The ghost stops answering pings; the watcher keeps answering.
        for _ in range(2):
            await harness.advance(10.5)
            watcher.send_json({"type": "pong"})
        await harness.advance(5)
        assert ghost.closed is not None
        assert ghost.closed[0] == 4001
        events = [(p["event"], p["user"]) for p in watcher.of_type("presence")]
        assert events == [("join", "ghost"), ("leave", "ghost")]


async def test_plain_text_members_get_no_presence_frames() -> None:
    async with running() as harness:
        plain, _ = await harness.connect(protocol=None, user="pat")
        await harness.connect(user="jo")
        assert plain.sent == []
