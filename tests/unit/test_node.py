"""The async domain with a fake clock and fake transports: no server, no real waiting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import anyio
import pytest

from chat.brokers import BrokerUnavailable, Draft, Publication
from chat.envelope import DisconnectCommand, PresenceChange
from chat.replies import UNAVAILABLE_DETAIL, UNCERTAIN_DETAIL
from chat.session import SessionState
from chat.transport import Endpoint
from tests.clock import settle
from tests.domain import Harness, flag, running, state
from tests.fakes import FakeTransport

pytestmark = pytest.mark.anyio

# -- greeting and rooms ------------------------------------------------------------


async def test_json_session_gets_welcome_then_joined() -> None:
    async with running() as harness:
        client, session = await harness.connect(user="alice")
        assert client.subprotocol == "chat.v1"
        welcome, joined = client.frames()[:2]
        assert welcome["type"] == "welcome"
        assert welcome["session"] == session.id
        assert welcome["user"] == "alice"
        assert welcome["heartbeat"] == {"interval": 25.0, "timeout": 10.0}
        epoch = joined.pop("epoch")
        assert isinstance(epoch, str)
        assert epoch
        assert joined == {
            "type": "joined",
            "room": "lobby",
            "seq": 0,
            "recovered": False,
            "members": [{"user": "alice"}],
        }
        assert state(session) is SessionState.ACTIVE


async def test_messages_reach_every_member_with_rising_seq_and_the_sender_gets_ack() -> None:
    async with running() as harness:
        alice, _ = await harness.connect(user="alice")
        bob, _ = await harness.connect(user="bob")
        for n in range(3):
            alice.send_json({"type": "send", "room": "lobby", "text": f"hi {n}", "id": n})
        await settle()
        for client in (alice, bob):
            messages = client.of_type("message")
            assert [m["seq"] for m in messages] == [1, 2, 3]
            assert [m["text"] for m in messages] == ["hi 0", "hi 1", "hi 2"]
            assert {m["user"] for m in messages} == {"alice"}
        assert [(a["id"], a["seq"]) for a in alice.of_type("ack")] == [(0, 1), (1, 2), (2, 3)]
        assert bob.of_type("ack") == []


async def test_a_retried_send_is_acked_with_the_first_seq_from_any_session_of_its_user() -> None:
    async with running() as harness:
        alice, _ = await harness.connect(user="alice")
        bob, _ = await harness.connect(user="bob")
        alice.send_json({"type": "send", "room": "lobby", "text": "once", "id": "m-1"})
        await settle()
        # The connection was lost before the ack, say: the retry comes on a new session.
        again, _ = await harness.connect(user="alice")
        again.send_json({"type": "send", "room": "lobby", "text": "once", "id": "m-1"})
        alice.send_json({"type": "send", "room": "lobby", "text": "once", "id": "m-1"})
        await settle()
        for client in (alice, again):
            assert [(a["id"], a["seq"]) for a in client.of_type("ack")][-1] == ("m-1", 1)
        assert [m["text"] for m in bob.of_type("message")] == ["once"]
        assert again.of_type("message") == []


async def test_what_a_join_queued_is_written_before_its_presence_is_announced() -> None:
    announced = anyio.Event()

    async with running() as harness:
        original = harness.node.broker.announce

        async def slow_announce(change: PresenceChange) -> None:
            await announced.wait()  # a broker slow to publish the presence change
            await original(change)

        harness.node.broker.announce = slow_announce  # type: ignore[method-assign]
        client, _ = await harness.connect(user="ann")
        assert [f["type"] for f in client.frames()] == ["welcome", "joined"]
        client.send_json({"type": "ping"})
        await settle()
        assert client.of_type("pong") == []  # the reader is still announcing
        announced.set()
        await settle()
        assert client.of_type("pong") == [{"type": "pong"}]


async def test_plain_text_and_json_members_share_a_room() -> None:
    async with running() as harness:
        plain, plain_session = await harness.connect(protocol=None, user="pat")
        json_client, _ = await harness.connect(user="jo")
        plain.type("hello from text")
        json_client.send_json({"type": "send", "room": "lobby", "text": "hello from json"})
        await settle()
        assert plain.sent == ["hello from text", "hello from json"]
        assert [(m["user"], m["text"]) for m in json_client.of_type("message")] == [
            ("pat", "hello from text"),
            ("jo", "hello from json"),
        ]
        assert plain_session.protocol.value == "text"


async def test_echo_answers_each_frame() -> None:
    async with running() as harness:
        client, _ = await harness.connect(None, protocol=None, endpoint=Endpoint.ECHO)
        client.type("ping?")
        await settle()
        assert client.sent == ["Message text was: ping?"]


async def test_send_to_a_room_not_joined_is_refused_with_not_joined() -> None:
    async with running() as harness:
        client, _ = await harness.connect()
        client.send_json({"type": "send", "room": "elsewhere", "text": "x", "id": "m1"})
        await settle()
        assert client.of_type("error") == [
            {"type": "error", "code": "not_joined", "detail": "not joined to elsewhere", "id": "m1"}
        ]


async def test_join_and_leave_another_room() -> None:
    async with running() as harness:
        client, session = await harness.connect()
        client.send_json({"type": "join", "room": "games"})
        await settle()
        assert session.rooms == ["lobby", "games"]
        assert client.of_type("joined")[-1]["room"] == "games"
        client.send_json({"type": "leave", "room": "games"})
        await settle()
        assert session.rooms == ["lobby"]
        assert client.of_type("left") == [{"type": "left", "room": "games"}]
        assert harness.node.rooms.counts() == {"lobby": 1}


async def test_joining_beyond_the_room_limit_is_forbidden() -> None:
    async with running(max_rooms_per_session=2) as harness:
        client, session = await harness.connect()
        client.send_json({"type": "join", "room": "two"})
        client.send_json({"type": "join", "room": "three", "id": 7})
        await settle()
        assert session.rooms == ["lobby", "two"]
        error = client.of_type("error")[-1]
        assert (error["code"], error["id"]) == ("forbidden", 7)


async def test_batch_protocol_sends_queued_frames_as_one_frame() -> None:
    async with running() as harness:
        client, _ = await harness.connect(protocol="chat.v1.batch")
        assert client.subprotocol == "chat.v1.batch"
        # welcome and joined were queued before the writer first ran: one frame.
        assert len(client.sent) == 1
        assert [f["type"] for f in client.frames()] == ["welcome", "joined"]


# -- bad input ---------------------------------------------------------------------


async def test_invalid_frames_get_an_error_and_never_reach_another_member() -> None:
    bad = ["{", "NaN", '{"type": "send", "room": "lobby", "text": NaN}', '"\\ud800"', "[]"]
    async with running() as harness:
        sender, sender_session = await harness.connect()
        other, _ = await harness.connect()
        for raw in bad:
            sender.type(raw)
        await settle()
        assert [e["code"] for e in sender.of_type("error")] == ["bad_request"] * len(bad)
        assert other.of_type("message") == []
        assert state(sender_session) is SessionState.ACTIVE


async def test_binary_frame_closes_1003_with_bye() -> None:
    async with running() as harness:
        client, session = await harness.connect()
        client.type(b"\x00\x01")
        await settle()
        assert client.closed == (1003, "binary frames are not supported")
        assert client.of_type("bye")[0]["reason"] == "policy"
        assert (session.close_code, session.close_reason, session.closed_by) == (
            1003,
            "binary_frame",
            "server",
        )


@pytest.mark.parametrize(
    ("text", "closes"),
    [("a" * 1024, False), ("a" * 1025, True), ("é" * 512, False), ("é" * 513, True)],
)
async def test_messages_over_the_byte_limit_close_1009(text: str, closes: bool) -> None:
    async with running(max_message_bytes=1024) as harness:
        client, session = await harness.connect(protocol=None)
        client.type(text)
        await settle()
        if closes:
            assert client.closed is not None
            assert client.closed[0] == 1009
            assert session.close_reason == "message_too_big"
        else:
            assert not client.was_closed()
            assert client.sent == [text]


async def test_admission_refusals_have_their_http_status_and_are_counted() -> None:
    async with running(max_sessions=1) as harness:
        bad_room, _ = await harness.connect("no/slashes")
        bad_user, _ = await harness.connect(user="bad user")
        await harness.connect()
        full, _ = await harness.connect()
        assert bad_room.rejected is not None and bad_room.rejected[0] == 400
        assert bad_user.rejected is not None and bad_user.rejected[0] == 400
        assert full.rejected == (503, "the server is full, try again later")
        assert not (bad_room.accepted or bad_user.accepted or full.accepted)
        totals = harness.node.registry.totals
        assert totals.rejected == {"bad_room": 1, "bad_user": 1, "max_sessions": 1}
        assert totals.accepted == 1


async def test_an_internal_error_closes_1011_and_is_logged_once_with_the_session_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken_publish(draft: Draft) -> Publication:
        raise RuntimeError("boom")

    async with running() as harness:
        client, session = await harness.connect()
        harness.node.broker.publish = broken_publish  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="chat"):
            client.send_json({"type": "send", "room": "lobby", "text": "x"})
            await settle()
        assert client.closed is not None and client.closed[0] == 1011
        assert client.of_type("bye") == []
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert session.id in errors[0].getMessage()
        assert session.close_reason == "internal_error"


@pytest.mark.parametrize(
    ("uncertain", "detail"), [(False, UNAVAILABLE_DETAIL), (True, UNCERTAIN_DETAIL)]
)
async def test_broker_unavailable_refuses_json_send_and_closes_plain_text_1013(
    uncertain: bool, detail: str
) -> None:
    async def unavailable(draft: Draft) -> Publication:
        raise BrokerUnavailable("down", uncertain=uncertain)

    async with running() as harness:
        json_client, json_session = await harness.connect()
        plain, plain_session = await harness.connect(protocol=None)
        harness.node.broker.publish = unavailable  # type: ignore[method-assign]
        json_client.send_json({"type": "send", "room": "lobby", "text": "x", "id": "a"})
        plain.type("x")
        await settle()
        error = json_client.of_type("error")[-1]
        assert (error["code"], error["id"], error["detail"]) == ("unavailable", "a", detail)
        assert state(json_session) is SessionState.ACTIVE
        assert plain.closed is not None and plain.closed[0] == 1013
        assert plain_session.close_reason == "unavailable"


# -- timers --------------------------------------------------------------------------


async def test_server_pings_every_heartbeat_interval() -> None:
    async with running() as harness:
        client, _ = await harness.connect()
        await harness.advance(24)
        assert client.of_type("ping") == []
        await harness.advance(2)
        assert len(client.of_type("ping")) == 1
        client.send_json({"type": "pong"})
        await harness.advance(25)
        assert len(client.of_type("ping")) == 2


async def test_answered_pings_keep_a_session_open_for_hours() -> None:
    async with running(idle_timeout=0) as harness:
        client, session = await harness.connect()
        for _ in range(150):
            await harness.advance(25)
            client.send_json({"type": "pong"})
        await settle()
        assert len(client.of_type("ping")) == 150
        assert state(session) is SessionState.IDLE
        assert not client.was_closed()


async def test_no_pong_within_the_timeout_closes_4001_without_bye() -> None:
    async with running() as harness:
        client, session = await harness.connect()
        await harness.advance(25.5)
        assert len(client.of_type("ping")) == 1
        await harness.advance(9)
        assert not client.was_closed()
        await harness.advance(1.5)
        assert client.closed == (4001, "heartbeat timeout")
        assert client.of_type("bye") == []
        assert (state(session), session.close_code, session.closed_by) == (
            SessionState.CLOSED,
            4001,
            "server",
        )


async def test_session_goes_idle_without_activity_and_back_to_active_on_activity() -> None:
    async with running(heartbeat_interval=1000, heartbeat_timeout=10) as harness:
        client, session = await harness.connect()
        await harness.advance(59)
        assert state(session) is SessionState.ACTIVE
        await harness.advance(2)
        assert state(session) is SessionState.IDLE
        client.send_json({"type": "send", "room": "lobby", "text": "back"})
        await settle()
        assert state(session) is SessionState.ACTIVE
        assert [h.state.value for h in session.history] == [
            "connecting",
            "active",
            "idle",
            "active",
        ]


async def test_heartbeats_keep_a_session_alive_but_do_not_make_it_active() -> None:
    async with running(heartbeat_interval=20, heartbeat_timeout=5) as harness:
        client, session = await harness.connect()
        for _ in range(4):
            await harness.advance(20.5)
            client.send_json({"type": "pong"})
            client.send_json({"type": "ping"})
        await settle()
        assert len(client.of_type("ping")) == 4
        assert len(client.of_type("pong")) == 4
        assert state(session) is SessionState.IDLE
        assert not client.was_closed()


async def test_idle_timeout_closes_4500_with_bye_and_no_reconnect() -> None:
    async with running(heartbeat_interval=1000, idle_timeout=600) as harness:
        client, session = await harness.connect()
        await harness.advance(599)
        assert not client.was_closed()
        await harness.advance(2)
        assert client.closed == (4500, "idle timeout")
        assert client.of_type("bye") == [
            {"type": "bye", "reason": "idle_timeout", "reconnect": False, "retry_after_ms": 0}
        ]
        assert session.close_reason == "idle_timeout"


async def test_plain_text_sessions_get_no_pings_but_idle_and_time_out() -> None:
    async with running(idle_after=60, idle_timeout=120) as harness:
        client, session = await harness.connect(protocol=None)
        await harness.advance(61)
        assert state(session) is SessionState.IDLE
        await harness.advance(60)
        assert client.sent == []
        assert client.closed == (4500, "idle timeout")


async def test_a_peer_that_never_answers_the_close_is_cut_after_the_drain_timeout() -> None:
    async with running(heartbeat_interval=1000, idle_after=5, idle_timeout=10) as harness:
        client, session = await harness.connect(transport=FakeTransport(answers_close=False))
        await harness.advance(11)
        assert client.closed is not None and client.closed[0] == 4500
        # Closing, as status shows it: the state it closed from, and closing.
        assert (state(session), session.public_state) == (SessionState.CLOSING, SessionState.IDLE)
        await harness.advance(2.5)
        assert client.aborted
        assert (state(session), session.close_code) == (SessionState.CLOSED, 4500)


async def test_closed_sessions_are_retained_then_forgotten() -> None:
    async with running(closed_retention=300) as harness:
        client, session = await harness.connect()
        client.hang_up()
        await settle()
        assert harness.node.registry.get(session.id) is not None
        assert (session.close_reason, session.closed_by) == ("client_closed", "client")
        await harness.advance(299)
        assert harness.node.registry.get(session.id) is not None
        await harness.advance(2)
        assert harness.node.registry.get(session.id) is None


async def test_closed_sessions_are_bounded_in_number() -> None:
    async with running(closed_max=3) as harness:
        ids = []
        for _ in range(5):
            client, session = await harness.connect()
            client.hang_up()
            ids.append(session.id)
        await settle()
        assert [s.id for s, _ in harness.node.registry.sessions()] == ids[:1:-1]
        assert harness.node.registry.counts()["closed"] == 3


# -- slow consumers ------------------------------------------------------------------


async def test_a_member_that_never_reads_is_closed_1013_while_others_get_everything() -> None:
    async with running(send_queue=10, history_size=5) as harness:
        stuck, stuck_session = await harness.connect(transport=FakeTransport(stalled=True))
        reader, _ = await harness.connect()
        sender, _ = await harness.connect()
        for n in range(50):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n)})
            await settle()
        texts = [m["text"] for m in reader.of_type("message")]
        assert texts == [str(n) for n in range(50)]
        # The stuck peer cannot even take the close frame: it is cut at the deadline.
        await harness.advance(2.5)
        assert stuck.aborted
        assert (stuck_session.close_code, stuck_session.close_reason) == (1013, "slow_consumer")
        assert [entry.reason for entry in stuck_session.history] == [
            "handshake",
            "accepted",
            "closing: 1013 slow_consumer",
            "1013 slow_consumer by server",
        ]
        assert harness.node.rooms.counts() == {"lobby": 2}


async def test_a_slow_consumer_that_recovers_gets_bye_slow_consumer_before_1013() -> None:
    async with running(send_queue=5, history_size=2) as harness:
        slow, _ = await harness.connect(transport=FakeTransport(stalled=True))
        sender, _ = await harness.connect()
        for n in range(20):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n)})
            await settle()
        slow.unstall()
        await settle()
        assert slow.closed is not None and slow.closed[0] == 1013
        bye = slow.of_type("bye")
        assert [b["reason"] for b in bye] == ["slow_consumer"]
        assert bye[0]["reconnect"] is True
        assert 1000 <= int(bye[0]["retry_after_ms"]) < 5000
        # The backlog was dropped: far fewer than 20 messages reached it.
        assert len(slow.of_type("message")) < 20


@pytest.mark.parametrize("protocol", [None, "chat.v1", "chat.v1.batch"])
async def test_what_a_turn_of_the_loop_publishes_reaches_a_member_in_one_write(
    protocol: str | None,
) -> None:
    async with running() as harness:
        reader, _ = await harness.connect(protocol=protocol)
        sender, _ = await harness.connect(protocol=None)
        writes_before = len(reader.writes)
        for n in range(10):
            sender.type(str(n))  # all read in one turn of the sender's reader
        await settle()
        texts = (
            reader.sent[-10:]
            if protocol is None
            else [m["text"] for m in reader.of_type("message")]
        )
        assert texts == [str(n) for n in range(10)]
        assert len(reader.writes) - writes_before == 1
        frames = reader.writes[-1]
        assert len(frames) == (1 if protocol == "chat.v1.batch" else 10)


async def test_frames_wait_for_a_backed_up_socket_and_then_go_in_order() -> None:
    async with running() as harness:
        slow, session = await harness.connect(protocol=None, transport=FakeTransport(stalled=True))
        sender, _ = await harness.connect(protocol=None)
        for n in range(5):
            sender.type(str(n))
            await settle()
        assert slow.sent == []
        slow.unstall()
        await settle()
        assert slow.sent == ["0", "1", "2", "3", "4"]
        sender.type("after")
        await settle()
        assert slow.sent[-1] == "after"
        assert session.messages_out == 6
        # Drained: no writer task is left waiting (an idle session has only its reader).
        assert writer_tasks() == 0


def writer_tasks() -> int:
    return sum(task.get_name().endswith("._write_loop") for task in asyncio.all_tasks())


async def test_a_writer_task_runs_only_while_a_socket_is_backed_up() -> None:
    async with running() as harness:
        slow, _ = await harness.connect(protocol=None, transport=FakeTransport(stalled=True))
        sender, _ = await harness.connect(protocol=None)
        assert writer_tasks() == 0
        sender.type("one")
        await settle()
        assert writer_tasks() == 1
        assert slow.sent == []
        slow.unstall()
        await settle()
        assert slow.sent == ["one"]
        assert writer_tasks() == 0


async def test_an_abort_right_after_a_close_sends_nothing_more() -> None:
    from chat.errors import IdleTimeout

    async with running() as harness:
        client, session = await harness.connect(transport=FakeTransport(answers_close=False))
        connection = next(c for c in harness.node.registry.live() if c.session is session)
        connection.close(IdleTimeout())  # a writer is due to send bye and the close frame
        connection.abort()  # before it ran
        await settle()
        assert client.was_aborted()
        assert client.closed is None
        assert client.of_type("bye") == []


async def test_a_session_whose_node_stopped_is_cut_instead_of_written_to() -> None:
    async with running() as harness:
        slow, _ = await harness.connect(protocol=None, transport=FakeTransport(stalled=True))
        sender, _ = await harness.connect(protocol=None)
        harness.node.running = False  # as after the node's task group ended
        try:
            assert harness.node.spawn(settle) is False
            sender.type("late")
            await settle()
            assert slow.was_aborted()
            assert writer_tasks() == 0
        finally:
            harness.node.running = True


class BrokenSocket(FakeTransport):
    """A socket whose direct write fails (a bug below the app)."""

    def write(self, texts: list[str]) -> bool:
        raise OSError("broken socket")


async def test_a_failing_write_cuts_only_its_session_and_is_logged_once_with_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running() as harness:
        broken, broken_session = await harness.connect(protocol=None, transport=BrokenSocket())
        good, _ = await harness.connect(protocol=None)
        with caplog.at_level(logging.ERROR, logger="chat"):
            good.type("hello")
            await settle()
        assert broken.was_aborted()
        assert state(broken_session) is SessionState.CLOSED
        assert good.sent == ["hello"] and not good.was_aborted()
        good.type("again")
        await settle()
        assert good.sent == ["hello", "again"]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert broken_session.id in errors[0].getMessage()


# -- shutdown ------------------------------------------------------------------------


async def test_shutdown_sends_bye_and_1001_to_every_session_and_refuses_new_ones() -> None:
    async with running() as harness:
        json_client, _ = await harness.connect()
        plain, _ = await harness.connect(protocol=None)
        async with anyio.create_task_group() as group:
            group.start_soon(harness.node.shutdown)
            await settle()
        assert harness.node.draining
        assert json_client.closed == (1001, "server shutting down")
        assert plain.closed == (1001, "server shutting down")
        bye = json_client.of_type("bye")
        assert [(b["reason"], b["reconnect"]) for b in bye] == [("shutdown", True)]
        assert plain.sent == []
        late, _ = await harness.connect()
        assert late.rejected == (503, "the server is shutting down")
        assert len(harness.node.registry) == 0


async def test_shutdown_cuts_sessions_that_do_not_answer_within_the_drain_timeout() -> None:
    async with running(drain_timeout=2) as harness:
        deaf, session = await harness.connect(transport=FakeTransport(answers_close=False))
        done = anyio.Event()

        async def shut() -> None:
            await harness.node.shutdown()
            done.set()

        harness.group.start_soon(shut)
        await harness.advance(1.9)
        assert not flag(done)
        assert not deaf.was_aborted()
        await harness.advance(0.2)
        await settle()
        assert deaf.aborted
        assert flag(done)
        assert (session.close_code, session.close_reason) == (1001, "shutdown")


async def test_a_session_accepted_while_draining_gets_bye_and_1001() -> None:
    async with running() as harness:
        gate = anyio.Event()
        client, session = await harness.connect(transport=FakeTransport(accept_gate=gate))
        assert state(session) is SessionState.CONNECTING
        harness.group.start_soon(harness.node.shutdown)
        await settle()
        gate.set()
        await settle()
        assert client.closed == (1001, "server shutting down")
        assert [f["type"] for f in client.frames()] == ["bye"]
        assert session.close_reason == "shutdown"


async def test_echo_ignores_offered_subprotocols() -> None:
    async with running() as harness:
        client, session = await harness.connect(None, protocol="chat.v1", endpoint=Endpoint.ECHO)
        assert client.subprotocol is None
        client.type('{"type": "pong"}')
        await settle()
        assert client.sent == ['Message text was: {"type": "pong"}']
        assert session.protocol.value == "text"


async def test_a_batch_frame_never_exceeds_64_kib_unless_one_object_does() -> None:
    async with running() as harness:
        slow, _ = await harness.connect(
            protocol="chat.v1.batch", transport=FakeTransport(stalled=True)
        )
        sender, _ = await harness.connect(protocol=None)
        for n in range(20):
            # Every other one 4-byte characters: bytes, not characters, fill a frame.
            sender.type(f"{n:02d}" + ("x" * 20_000 if n % 2 else "\U0001f600" * 10_000))
            await settle()
        slow.unstall()
        await settle()
        assert all(len(frame.encode()) <= 65536 for frame in slow.sent)
        assert len(slow.sent) > 6
        texts = [m["text"] for m in slow.of_type("message")]
        assert [t[:2] for t in texts] == [f"{n:02d}" for n in range(20)]


async def test_a_rooms_seq_keeps_rising_after_it_empties() -> None:
    async with running() as harness:
        first, _ = await harness.connect()
        for n in range(5):
            first.send_json({"type": "send", "room": "lobby", "text": str(n)})
        await settle()
        first.hang_up()
        await settle()
        assert harness.node.rooms.counts() == {}
        again, _ = await harness.connect()
        assert again.of_type("joined")[0]["seq"] == 5
        again.send_json({"type": "send", "room": "lobby", "text": "next"})
        await settle()
        assert [m["seq"] for m in again.of_type("message")] == [6]


@pytest.mark.parametrize(("since", "recovered"), [(5, True), (4, False), (0, False), (9, False)])
async def test_joining_a_room_already_joined_replays_nothing(since: int, recovered: bool) -> None:
    async with running() as harness:
        client, _ = await harness.connect()
        for n in range(5):
            client.send_json({"type": "send", "room": "lobby", "text": str(n)})
        client.send_json({"type": "join", "room": "lobby", "since": since})
        await settle()
        joined = client.of_type("joined")[-1]
        assert (joined["seq"], joined["recovered"]) == (5, recovered)
        assert len(client.of_type("message")) == 5


async def test_a_failing_timer_is_logged_and_cuts_only_its_session(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat.connection import Connection

    async with running(heartbeat_interval=1000, idle_after=5, idle_timeout=0) as harness:
        bad, bad_session = await harness.connect()
        good, good_session = await harness.connect()
        original = Connection.on_timer

        def on_timer(self: Connection, now: float) -> None:
            if self.session is bad_session:
                raise RuntimeError("broken timer")
            original(self, now)

        monkeypatch.setattr(Connection, "on_timer", on_timer)
        with caplog.at_level(logging.ERROR, logger="chat"):
            await harness.advance(6)
        assert bad.was_aborted()
        assert state(bad_session) is SessionState.CLOSED
        assert state(good_session) is SessionState.IDLE
        assert not good.was_aborted()
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert bad_session.id in errors[0].getMessage()


# -- the server API's domain: publish, disconnect ----------------------------------


async def test_a_publish_of_the_node_reaches_members_like_a_send() -> None:
    async with running() as harness:
        alice, _ = await harness.connect(user="alice")
        plain, _ = await harness.connect(protocol=None, user="pat")
        published = await harness.node.publish("lobby", "system", "maintenance at 5", "n-1")
        await settle()
        assert published.seq == 1
        [message] = alice.of_type("message")
        assert (message["user"], message["text"], message["id"], message["seq"]) == (
            "system",
            "maintenance at 5",
            "n-1",
            1,
        )
        assert plain.sent == ["maintenance at 5"]
        again = await harness.node.publish("lobby", "system", "maintenance at 5", "n-1")
        await settle()
        assert (again.seq, again.duplicate) == (1, True)
        assert len(alice.of_type("message")) == 1


async def test_disconnecting_a_session_sends_bye_with_the_detail_then_1008() -> None:
    async with running() as harness:
        client, session = await harness.connect(user="alice")
        other, _ = await harness.connect(user="alice")
        tally = await harness.node.disconnect(DisconnectCommand(session.id, None, "spam", False))
        await settle()
        assert tally.here == 1
        assert client.of_type("bye") == [
            {
                "type": "bye",
                "reason": "disconnected",
                "detail": "spam",
                "reconnect": False,
                "retry_after_ms": 0,
            }
        ]
        assert client.closed == (1008, "disconnected by the server")
        assert session.close_reason == "disconnected"
        assert not other.was_closed()


async def test_disconnecting_a_user_closes_each_of_its_sessions_1013_when_it_may_return() -> None:
    async with running() as harness:
        first, _ = await harness.connect(user="alice")
        plain, _ = await harness.connect(protocol=None, user="alice")
        bob, _ = await harness.connect(user="bob")
        command = DisconnectCommand(None, "alice", "moving you", True)
        assert (await harness.node.disconnect(command)).here == 2
        await settle()
        [bye] = first.of_type("bye")
        assert (bye["reason"], bye["detail"], bye["reconnect"]) == (
            "disconnected",
            "moving you",
            True,
        )
        assert 1000 <= bye["retry_after_ms"] < 5000
        assert first.closed == (1013, "disconnected by the server")
        assert plain.closed == (1013, "disconnected by the server")
        assert not any("bye" in text for text in plain.sent)  # plain text: just the close
        assert not bob.was_closed()
        # Applied again (a retry), it closes nothing more.
        assert (await harness.node.disconnect(command)).here == 0


async def test_a_disconnect_without_detail_sends_the_usual_bye_shape() -> None:
    async with running() as harness:
        client, session = await harness.connect(user="alice")
        await harness.node.disconnect(DisconnectCommand(session.id, None, "", False))
        await settle()
        assert client.of_type("bye") == [
            {"type": "bye", "reason": "disconnected", "reconnect": False, "retry_after_ms": 0}
        ]


async def test_a_disconnect_names_only_matching_sessions() -> None:
    async with running() as harness:
        client, session = await harness.connect(user="alice")
        assert harness.node.close_sessions(DisconnectCommand("unknown", None, "", False)) == 0
        assert harness.node.close_sessions(DisconnectCommand(session.id, "bob", "", False)) == 0
        assert harness.node.close_sessions(DisconnectCommand(None, "bob", "", False)) == 0
        await settle()
        assert not client.was_closed()


# -- bursts of sends -------------------------------------------------------------------


def record_batches(harness: Harness) -> list[list[str]]:
    """The texts of each ``publish_many`` call the node's broker gets, from now on."""
    broker = harness.node.broker
    publish_many = broker.publish_many
    batches: list[list[str]] = []

    async def recording(drafts: Sequence[Draft]) -> list[Publication | BrokerUnavailable]:
        batches.append([draft.text for draft in drafts])
        return await publish_many(drafts)

    broker.publish_many = recording  # type: ignore[method-assign]
    return batches


@pytest.mark.parametrize("protocol", ["chat.v1", None])
async def test_sends_read_in_one_burst_are_published_together_in_order(
    protocol: str | None,
) -> None:
    async with running() as harness:
        sender, _ = await harness.connect(protocol=protocol)
        batches = record_batches(harness)
        for n in range(5):
            if protocol is None:
                sender.type(str(n))
            else:
                sender.send_json({"type": "send", "room": "lobby", "text": str(n), "id": n})
        await settle()
        assert batches == [[str(n) for n in range(5)]]
        if protocol is not None:
            assert [(a["id"], a["seq"]) for a in sender.of_type("ack")] == [
                (n, n + 1) for n in range(5)
            ]


async def test_a_ping_after_a_burst_of_sends_is_answered_after_their_acks() -> None:
    async with running() as harness:
        sender, _ = await harness.connect()
        batches = record_batches(harness)
        for n in range(3):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n), "id": n})
        sender.send_json({"type": "ping"})
        sender.send_json({"type": "send", "room": "lobby", "text": "3", "id": 3})
        await settle()
        replies = [f["type"] for f in sender.frames() if f["type"] in ("ack", "pong")]
        assert replies == ["ack", "ack", "ack", "pong", "ack"]
        assert batches == [["0", "1", "2"]]  # the last send went alone, by publish


async def test_a_send_after_a_join_in_the_same_burst_is_heard_once_the_join_is_done() -> None:
    async with running() as harness:
        sender, _ = await harness.connect()
        sender.send_json({"type": "send", "room": "lobby", "text": "before", "id": 1})
        sender.send_json({"type": "join", "room": "other", "id": 2})
        sender.send_json({"type": "send", "room": "other", "text": "after", "id": 3})
        await settle()
        assert sender.of_type("error") == []
        assert [(a["id"], a["room"]) for a in sender.of_type("ack")] == [
            (1, "lobby"),
            (3, "other"),
        ]


async def test_a_refused_send_of_a_burst_fails_alone() -> None:
    async with running() as harness:
        sender, _ = await harness.connect()
        broker = harness.node.broker
        publish = broker.publish

        async def refuse_the_second(draft: Draft) -> Publication:
            if draft.text == "1":
                raise BrokerUnavailable("down")
            return await publish(draft)

        broker.publish = refuse_the_second  # type: ignore[method-assign]
        for n in range(3):
            sender.send_json({"type": "send", "room": "lobby", "text": str(n), "id": n})
        await settle()
        assert [(a["id"], a["seq"]) for a in sender.of_type("ack")] == [(0, 1), (2, 2)]
        assert [(e["id"], e["code"]) for e in sender.of_type("error")] == [(1, "unavailable")]
