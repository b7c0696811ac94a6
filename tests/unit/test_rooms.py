"""Rooms in depth on the domain: joins, replay, no duplicates, presence. Fake clock, no server."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from chat.brokers import BrokerUnavailable, Draft, Recovery
from chat.brokers.memory import InMemoryBroker
from chat.envelope import PresenceChange, Publication, RunStarted
from chat.session import SessionState
from tests.clock import FakeClock, settle
from tests.domain import running
from tests.fakes import FakeTransport

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

    async def recover(self, room: str, since: int | None, epoch: str | None = None) -> Recovery:
        if since is None:
            return await super().recover(room, since, epoch)
        self.reading.set()
        await self.release.wait()
        return await super().recover(room, since, epoch)


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


async def test_a_session_that_vanishes_leaves_presence_by_its_heartbeat_deadline() -> None:
    async with running(heartbeat_interval=10, heartbeat_timeout=5, drain_timeout=5) as harness:
        watcher, _ = await harness.connect(user="watcher")
        # A dead peer: it answers neither pings nor the close frame.
        ghost, _ = await harness.connect(user="ghost", transport=FakeTransport(answers_close=False))
        await harness.advance(10.5)
        watcher.send_json({"type": "pong"})
        await harness.advance(4)
        assert [p["event"] for p in watcher.of_type("presence")] == ["join"]
        # The deadline is ping (10 s) + timeout (5 s), checked every tick (1 s here).
        await harness.advance(1.5)
        assert ghost.closed is not None
        assert ghost.closed[0] == 4001
        assert ghost.aborted
        events = [(p["event"], p["user"]) for p in watcher.of_type("presence")]
        assert events == [("join", "ghost"), ("leave", "ghost")]


async def test_plain_text_members_get_no_presence_frames() -> None:
    async with running() as harness:
        plain, _ = await harness.connect(protocol=None, user="pat")
        await harness.connect(user="jo")
        assert plain.sent == []


async def test_a_forgotten_room_starts_a_new_epoch_and_an_old_since_does_not_recover() -> None:
    async with running(history_ttl=60, heartbeat_interval=1000) as harness:
        ann, _ = await harness.connect(user="ann")
        for n in range(3):
            ann.send_json({"type": "send", "room": "lobby", "text": f"old {n}"})
        await settle()
        old_epoch = ann.of_type("joined")[0]["epoch"]
        ann.hang_up()
        await settle()
        await harness.advance(70)  # nobody holds the room and its history expired
        bob, _ = await harness.connect(user="bob")
        for n in range(5):
            bob.send_json({"type": "send", "room": "lobby", "text": f"new {n}"})
        await settle()
        back, _ = await harness.connect("elsewhere", user="ann")
        back.send_json({"type": "join", "room": "lobby", "since": 3, "epoch": old_epoch})
        await settle()
        joined = back.of_type("joined")[-1]
        assert joined["epoch"] != old_epoch
        assert (joined["seq"], joined["recovered"]) == (5, False)
        assert [m for m in back.of_type("message") if m["room"] == "lobby"] == []


async def test_rejoining_with_an_older_since_sends_nothing_twice() -> None:
    async with running() as harness:
        client, _ = await harness.connect()
        for n in range(3):
            client.send_json({"type": "send", "room": "lobby", "text": str(n)})
        await settle()
        client.send_json({"type": "leave", "room": "lobby"})
        client.send_json({"type": "join", "room": "lobby", "since": 0})
        await settle()
        assert [m["seq"] for m in client.of_type("message")] == [1, 2, 3]
        assert client.of_type("joined")[-1]["recovered"] is True


async def test_a_replay_that_would_not_fit_the_send_queue_is_reported_not_recovered() -> None:
    async with running(send_queue=20, history_size=19) as harness:
        sender, _ = await harness.connect()
        for n in range(19):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n)})
            await settle()
        back, _ = await harness.connect(since=0)
        joined = back.of_type("joined")[0]
        assert (joined["seq"], joined["recovered"]) == (19, False)
        assert back.of_type("message") == []
        assert back.closed is None


class GatedBroker(InMemoryBroker):
    """Memory broker whose subscribe waits for the test and may fail once."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, history_size=100, history_ttl=300, history_max_bytes=1 << 20)
        self.gate = anyio.Event()
        self.fail_next_subscribe = False
        self.fail_unsubscribe = False

    async def subscribe(self, room: str) -> None:
        await self.gate.wait()
        if self.fail_next_subscribe:
            self.fail_next_subscribe = False
            raise BrokerUnavailable("subscribe failed")
        await super().subscribe(room)

    async def unsubscribe(self, room: str) -> None:
        if self.fail_unsubscribe:
            raise BrokerUnavailable("unsubscribe failed")
        await super().unsubscribe(room)


class SlowPresenceBroker(InMemoryBroker):
    """Memory broker whose ``presence_enter`` counts the user, then waits for the test."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, history_size=100, history_ttl=300, history_max_bytes=1 << 20)
        self.gate = anyio.Event()
        self.entering = anyio.Event()

    async def presence_enter(self, room: str, user: str) -> tuple[bool, list[str]]:
        counted = await super().presence_enter(room, user)
        self.entering.set()
        await self.gate.wait()
        return counted


async def test_a_session_closed_while_presence_is_counted_releases_it() -> None:
    clock = FakeClock()
    broker = SlowPresenceBroker(clock)
    async with running(broker=broker, clock=clock, idle_after=5, idle_timeout=10) as harness:
        client, session = await harness.connect("lobby", user="alice")
        await broker.entering.wait()
        assert await broker.presence_users("lobby") == ["alice"]
        await harness.advance(11)  # the idle timeout: the close starts mid-join
        assert session.state is SessionState.CLOSING
        broker.gate.set()
        await settle()
        await harness.advance(3)  # past the drain timeout, whatever the client answered
        assert (session.state, session.close_reason) == (SessionState.CLOSED, "idle_timeout")
        assert await broker.presence_users("lobby") == []
        assert client.of_type("joined") == []


def draft(room: str, text: str) -> Draft:
    return Draft(room=room, user="x", text=text, id=None, ts=1.0)


async def test_a_second_joiner_waits_for_the_rooms_subscription() -> None:
    clock = FakeClock()
    broker = GatedBroker(clock)
    async with running(broker=broker, clock=clock) as harness:
        first, _ = await harness.connect()
        second, _ = await harness.connect()
        assert first.of_type("joined") == []
        assert second.of_type("joined") == []
        broker.gate.set()
        await settle()
        await broker.publish(draft("lobby", "after"))
        await settle()
        for client in (first, second):
            joined = client.of_type("joined")[0]
            assert [m["seq"] for m in client.of_type("message")] == [joined["seq"] + 1]


async def test_when_the_first_subscribe_fails_the_others_try_again() -> None:
    clock = FakeClock()
    broker = GatedBroker(clock)
    broker.gate.set()
    async with running(broker=broker, clock=clock, heartbeat_interval=1000) as harness:
        home, _ = await harness.connect("home")
        watcher, _ = await harness.connect("games", user="watcher")
        broker.gate = anyio.Event()
        broker.fail_next_subscribe = True
        home.send_json({"type": "join", "room": "lobby", "id": "j1"})
        other, _ = await harness.connect()
        broker.gate.set()
        await settle()
        error = home.of_type("error")[-1]
        assert (error["code"], error["id"]) == ("unavailable", "j1")
        assert other.of_type("joined")[0]["room"] == "lobby"
        await broker.publish(draft("lobby", "hello"))
        await settle()
        assert [m["text"] for m in other.of_type("message")] == ["hello"]
        assert [m for m in home.of_type("message") if m["room"] == "lobby"] == []
        assert await harness.node.broker.presence_users("lobby") == [other_user(other)]
        assert watcher.of_type("presence") == []


def other_user(client: FakeTransport) -> str:
    return str(client.of_type("welcome")[0]["user"])


async def test_an_unsubscribe_failure_is_logged_and_the_session_still_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    broker = GatedBroker(clock)
    broker.gate.set()
    broker.fail_unsubscribe = True
    async with running(broker=broker, clock=clock) as harness:
        client, session = await harness.connect()
        with caplog.at_level(logging.WARNING, logger="chat"):
            client.hang_up()
            await settle()
        assert session.close_reason == "client_closed"
        assert len(harness.node.registry) == 0
        assert harness.node.rooms.counts() == {}
        assert any("unsubscribing room lobby failed" in r.getMessage() for r in caplog.records)


async def test_live_messages_held_during_a_slow_recovery_are_bounded() -> None:
    clock = FakeClock()
    broker = SlowRecoveryBroker(clock)
    async with running(broker=broker, clock=clock, send_queue=10, history_size=5) as harness:
        sender, _ = await harness.connect(protocol=None)
        late, session = await harness.connect("elsewhere")
        late.send_json({"type": "join", "room": "lobby", "since": 0})
        await settle()
        for n in range(11):
            await broker.publish(draft("lobby", str(n)))
            await settle()
        assert late.closed is not None
        assert late.closed[0] == 1013
        broker.release.set()
        await settle()
        await harness.advance(3)
        assert (session.close_code, session.close_reason) == (1013, "slow_consumer")
        assert sender.closed is None


# -- a room whose broker state was lost --------------------------------------------------


def frames_of(client: FakeTransport, room: str) -> list[tuple[str, Any]]:
    """``(type, seq)`` of the frames about ``room``, in order."""
    return [(f["type"], f.get("seq")) for f in client.frames() if f.get("room") == room]


async def test_a_new_run_is_announced_with_a_fresh_joined_before_its_first_message() -> None:
    async with running() as harness:
        ann, _ = await harness.connect(user="ann")
        plain, _ = await harness.connect(protocol=None, user="pat")
        for n in range(3):
            ann.send_json({"type": "send", "room": "lobby", "text": f"old {n}"})
        await settle()
        rooms = harness.node.rooms
        rooms.dispatch(RunStarted("lobby", "new-run", 0, ("ann", "pat", "zed")))
        rooms.dispatch(Publication("lobby", 1, "zed", "new 0", None, 1.0, "new-run"))
        await settle()
        joined = ann.of_type("joined")[-1]
        assert joined == {
            "type": "joined",
            "room": "lobby",
            "seq": 0,
            "epoch": "new-run",
            "recovered": False,
            "members": [{"user": "ann"}, {"user": "pat"}, {"user": "zed"}],
        }
        assert frames_of(ann, "lobby")[-2:] == [("joined", 0), ("message", 1)]
        assert plain.sent[-2:] == ["old 2", "new 0"]


async def test_a_new_run_without_its_notice_is_announced_by_its_first_message() -> None:
    async with running() as harness:
        ann, _ = await harness.connect(user="ann")
        ann.send_json({"type": "send", "room": "lobby", "text": "old"})
        await settle()
        harness.node.rooms.dispatch(Publication("lobby", 4, "bo", "new", None, 1.0, "new-run"))
        harness.node.rooms.dispatch(Publication("lobby", 5, "bo", "newer", None, 1.0, "new-run"))
        await settle()
        assert frames_of(ann, "lobby")[-3:] == [("joined", 3), ("message", 4), ("message", 5)]
        joined = ann.of_type("joined")[-1]
        assert (joined["epoch"], joined["recovered"]) == ("new-run", False)
        assert joined["members"] == [{"user": "ann"}]


async def test_presence_that_tells_nobody_anything_new_is_not_passed_on() -> None:
    async with running() as harness:
        ann, _ = await harness.connect(user="ann")
        bo, _ = await harness.connect(user="bo")
        rooms = harness.node.rooms
        # A broker that rebuilt its state after an outage announces everyone again.
        for user in ["ann", "bo"]:
            rooms.dispatch(PresenceChange("lobby", "join", user, ""))
        rooms.dispatch(PresenceChange("lobby", "leave", "nobody-here", ""))
        await settle()
        assert [(p["event"], p["user"]) for p in ann.of_type("presence")] == [("join", "bo")]
        assert bo.of_type("presence") == []
        # Real changes still go through, to everyone but the user's own sessions.
        rooms.dispatch(PresenceChange("lobby", "join", "cy", ""))
        rooms.dispatch(PresenceChange("lobby", "leave", "bo", ""))
        await settle()
        assert [(p["event"], p["user"]) for p in ann.of_type("presence")] == [
            ("join", "bo"),
            ("join", "cy"),
            ("leave", "bo"),
        ]
        assert [(p["event"], p["user"]) for p in bo.of_type("presence")] == [("join", "cy")]


async def test_a_join_some_member_missed_reaches_them_though_others_knew() -> None:
    async with running() as harness:
        rooms = harness.node.rooms
        ann, _ = await harness.connect(user="ann")
        # cy's join was counted but not yet announced when bo joined: bo's list has
        # cy, ann's does not.
        await harness.node.broker.presence_enter("lobby", "cy")
        bo, _ = await harness.connect(user="bo")
        assert {"user": "cy"} in bo.of_type("joined")[0]["members"]
        rooms.dispatch(PresenceChange("lobby", "join", "cy", ""))
        await settle()
        assert ("join", "cy") in [(p["event"], p["user"]) for p in ann.of_type("presence")]


async def test_what_departed_members_were_told_does_not_filter_for_the_next_ones() -> None:
    clock = FakeClock()
    broker = SlowRecoveryBroker(clock)
    async with running(broker=broker, clock=clock) as harness:
        rooms = harness.node.rooms
        ann, _ = await harness.connect(user="ann")
        rooms.dispatch(PresenceChange("lobby", "join", "ghost", ""))
        await settle()
        assert ann.of_type("presence")[-1]["user"] == "ghost"
        # bo is joining (its history read is slow) when ann, the only present member, goes.
        bo, _ = await harness.connect(user="bo", since=0)
        ann.hang_up()
        await settle()
        broker.release.set()
        await settle()
        assert {"user": "ghost"} not in bo.of_type("joined")[0]["members"]
        # What ann was told is gone with her: ghost's leave tells bo nothing.
        rooms.dispatch(PresenceChange("lobby", "leave", "ghost", ""))
        await settle()
        assert bo.of_type("presence") == []


async def test_a_new_run_a_member_already_follows_keeps_what_it_was_told_of_presence() -> None:
    async with running() as harness:
        rooms = harness.node.rooms
        alice, _ = await harness.connect(user="alice")
        rooms.dispatch(PresenceChange("lobby", "join", "bob", ""))
        epoch = alice.of_type("joined")[0]["epoch"]
        # alice already follows this run (she joined during the fill): she is not told,
        # and the run's list (read before bob's node re-asserted him) lacks bob.
        rooms.dispatch(RunStarted("lobby", epoch, 0, ("alice",)))
        rooms.dispatch(PresenceChange("lobby", "leave", "bob", ""))
        await settle()
        assert len(alice.of_type("joined")) == 1
        assert [(p["event"], p["user"]) for p in alice.of_type("presence")] == [
            ("join", "bob"),
            ("leave", "bob"),
        ]
