"""The session core (chat/core.py, chat/dialogue.py) driven with plain values.

No event loop, no node, no sleeps: each test builds a :class:`SessionCore`,
tells it what happens (a client's frame, a tick at some ``now``, a room's
publication, the answer to one of its requests) and reads back the frames it
queued for the client and the requests it made of its driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jwt
import orjson
import pytest

from chat.auth import Authenticator, Identity
from chat.brokers import BrokerUnavailable
from chat.core import SessionCore
from chat.dialogue import RATE_DETAIL
from chat.envelope import Draft, PresenceChange, Publication, Recovery, RunStarted, encode_message
from chat.errors import IdleTimeout, SessionClosed, Shutdown
from chat.protocol import Subprotocol
from chat.replies import UNAVAILABLE_DETAIL, UNCERTAIN_DETAIL
from chat.requests import (
    Announce,
    ListMembers,
    Publish,
    Subscribe,
    Unsubscribe,
)
from chat.session import Session, SessionState, Timers, Totals
from chat.settings import Settings
from chat.transport import Disconnect, Endpoint, Handshake

#: The monotonic time the session connected and was accepted.
T0 = 100.0
#: The Unix time at T0.
WALL = 1_750_000_000.0
RUN = "run-1"
SECRET = "core-test-secret-" + "s" * 32
PRESENCE = '{"type":"presence","room":"lobby","event":"join","user":"bob"}'

JSON = Subprotocol.JSON
TEXT = Subprotocol.TEXT


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "node_id": "node-a",
        "heartbeat_interval": 10.0,
        "heartbeat_timeout": 5.0,
        "idle_after": 30.0,
        "idle_timeout": 60.0,
        "drain_timeout": 2.0,
        "rate": 1.0,
        "burst": 10,
        "send_queue": 20,
        "history_size": 5,
        "max_rooms_per_session": 3,
        "max_message_bytes": 1024,
    }
    values.update(overrides)
    return Settings(**values)


def make_core(
    protocol: Subprotocol = JSON,
    *,
    users: Sequence[str] = ("alice", "carol"),
    totals: Totals | None = None,
    **overrides: Any,
) -> SessionCore:
    """A session of ``alice`` connected at T0, not accepted yet.

    ``users`` are who the node's members of ``lobby`` were told are present
    (of any other room: nobody).
    """
    settings = make_settings(**overrides)
    session = Session(
        id="s1",
        user="alice",
        protocol=protocol,
        remote="127.0.0.1:5000",
        node="node-a",
        timers=Timers.of(settings),
        now=T0,
    )
    return SessionCore(
        session,
        settings,
        Authenticator(settings),
        Totals() if totals is None else totals,
        lambda room: list(users) if room == "lobby" else [],
    )


def handshake(
    room: str = "lobby",
    *,
    since: int | None = None,
    epoch: str | None = None,
    endpoint: Endpoint = Endpoint.ROOM,
) -> Handshake:
    return Handshake(
        endpoint=endpoint,
        remote="127.0.0.1:5000",
        room=None if endpoint is Endpoint.ECHO else room,
        since=since,
        epoch=epoch,
    )


def accept(core: SessionCore, **kwargs: Any) -> None:
    core.accept(handshake(**kwargs), T0, WALL)


def inside(
    protocol: Subprotocol = JSON,
    *,
    latest: int = 0,
    identity: Identity | None = None,
    **overrides: Any,
) -> SessionCore:
    """An accepted session in the URL's room ``lobby`` at ``latest``; nothing queued or asked."""
    core = make_core(protocol, **overrides)
    if identity is not None:
        core.authenticate(identity)
    accept(core)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    core.replies.entered(subscribe, Recovery(latest, RUN), False, ["alice"])
    core.outbox.take()
    return core


def frames(core: SessionCore) -> list[dict[str, Any]]:
    """The JSON frames queued for the client since the last call."""
    return [orjson.loads(frame) for frame in core.outbox.take()]


def say(core: SessionCore, frame: dict[str, Any], now: float = T0, wall: float = WALL) -> None:
    """The client sends ``frame`` as JSON text."""
    core.receive(orjson.dumps(frame).decode(), now, wall)


def publication(seq: int, room: str = "lobby", epoch: str = RUN) -> Publication:
    return Publication(room, seq, "bob", f"m{seq}", f"id-{seq}", WALL + seq, epoch)


def deliver(core: SessionCore, seq: int, room: str = "lobby", epoch: str = RUN) -> bool:
    message = publication(seq, room, epoch)
    return core.deliver(message, encode_message(message))


def message(seq: int, room: str = "lobby") -> dict[str, Any]:
    """The ``message`` frame of :func:`publication` ``seq``."""
    return {
        "type": "message",
        "room": room,
        "seq": seq,
        "id": f"id-{seq}",
        "user": "bob",
        "text": f"m{seq}",
        "ts": WALL + seq,
    }


def joined(
    room: str = "lobby",
    seq: int = 0,
    epoch: str = RUN,
    recovered: bool = False,
    members: Sequence[str] = ("alice",),
) -> dict[str, Any]:
    return {
        "type": "joined",
        "room": room,
        "seq": seq,
        "epoch": epoch,
        "recovered": recovered,
        "members": [{"user": user} for user in members],
    }


def error(code: str, detail: str, frame_id: str | int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
    if frame_id is not None:
        frame["id"] = frame_id
    return frame


def bye(reason: str, reconnect: bool, retry_after_ms: int = 0) -> dict[str, Any]:
    return {
        "type": "bye",
        "reason": reason,
        "reconnect": reconnect,
        "retry_after_ms": retry_after_ms,
    }


def jittered(frame: dict[str, Any]) -> dict[str, Any]:
    """``frame`` (a ``bye``) with its jittered ``retry_after_ms`` checked and set to 0."""
    retry = frame.pop("retry_after_ms")
    assert 1000 <= retry < 5000
    return {**frame, "retry_after_ms": 0}


def state(core: SessionCore) -> SessionState:
    """The session's state now (a call, so that type narrowing does not stick)."""
    return core.session.state


def close_frame(core: SessionCore) -> tuple[int, str] | None:
    """The close frame due now (a call, so that type narrowing does not stick)."""
    return core.close_frame


def deadline(core: SessionCore) -> float | None:
    return core.close_deadline


def closing_reason(core: SessionCore) -> str | None:
    """The ``reason`` of the close the server started, if any."""
    return None if core.closing is None else core.closing.reason


def waiting(core: SessionCore) -> bool:
    return core.has_requests


def token(user: str = "alice", ttl: float = 60.0, wall: float = WALL, **claims: Any) -> str:
    return jwt.encode({"sub": user, "exp": wall + ttl, **claims}, SECRET, algorithm="HS256")


# -- accept ------------------------------------------------------------------------------


def test_a_json_room_session_is_welcomed_then_asks_to_join_the_url_room() -> None:
    core = make_core()
    accept(core, since=7, epoch="e0")
    assert frames(core) == [
        {
            "type": "welcome",
            "session": "s1",
            "user": "alice",
            "node": "node-a",
            "heartbeat": {"interval": 10.0, "timeout": 5.0},
            "limits": {"max_message_bytes": 1024, "rate": 1.0, "burst": 10},
        }
    ]
    assert core.requests() == [Subscribe("lobby", 7, "e0", None, from_url=True)]
    assert core.session.rooms == ["lobby"]
    assert (state(core), core.session.public_state) == (SessionState.ACTIVE, SessionState.ACTIVE)


def test_a_plain_text_session_gets_no_welcome_and_joins_without_since() -> None:
    core = make_core(TEXT)
    accept(core, since=7, epoch="e0")
    assert core.outbox.take() == []
    assert core.requests() == [Subscribe("lobby", None, "e0", None, from_url=True)]


def test_the_echo_endpoint_asks_nothing_and_echoes_each_frame() -> None:
    core = make_core(TEXT)
    accept(core, endpoint=Endpoint.ECHO)
    assert (core.outbox.take(), core.requests()) == ([], [])
    core.receive("hello", T0 + 1, WALL + 1)
    core.receive('{"type": "ping"}', T0 + 1, WALL + 1)
    assert core.outbox.take() == ["Message text was: hello", 'Message text was: {"type": "ping"}']
    assert core.requests() == []
    assert core.session.rooms == []


def test_requests_are_handed_out_once() -> None:
    core = make_core()
    accept(core)
    assert waiting(core)
    assert len(core.requests()) == 1
    assert not waiting(core)
    assert core.requests() == []


def test_a_session_accepted_while_closing_gets_only_bye_and_joins_nothing() -> None:
    core = make_core()
    core.accept(handshake(), T0, WALL, closing=Shutdown(retry_after_ms=1500))
    assert frames(core) == [bye("shutdown", True, 1500)]
    assert core.requests() == []
    assert core.session.rooms == []
    assert state(core) is SessionState.CLOSING
    assert close_frame(core) == (1001, "server shutting down")
    assert deadline(core) == T0 + 2.0


# -- entering a room -----------------------------------------------------------------------


def test_entered_sends_joined_with_position_and_members_then_the_replay() -> None:
    core = make_core()
    accept(core, since=2)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    frames(core)
    replay = (publication(3), publication(4))
    core.replies.entered(
        subscribe, Recovery(4, RUN, replay, complete=True), False, ["alice", "bob"]
    )
    assert frames(core) == [
        joined(seq=4, recovered=True, members=["alice", "bob"]),
        message(3),
        message(4),
    ]
    assert core.requests() == []


@pytest.mark.parametrize("first", [True, False])
def test_entering_asks_to_announce_presence_only_when_first(first: bool) -> None:
    core = make_core()
    accept(core)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    core.replies.entered(subscribe, Recovery(0, RUN), first, ["alice"])
    announce = Announce(PresenceChange("lobby", "join", "alice", "s1"))
    assert core.requests() == ([announce] if first else [])


def test_live_messages_held_during_the_join_come_after_the_replay_each_seq_once() -> None:
    core = make_core()
    accept(core, since=2)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    frames(core)
    # Published after the subscription, before the history read returned.
    assert [deliver(core, seq) for seq in (4, 5, 6)] == [False, False, False]
    assert core.outbox.take() == []
    replay = (publication(3), publication(4), publication(5))
    core.replies.entered(subscribe, Recovery(5, RUN, replay, complete=True), False, ["alice"])
    assert frames(core) == [
        joined(seq=5, recovered=True),
        message(3),
        message(4),
        message(5),
        message(6),
    ]
    assert deliver(core, 6) is False
    assert deliver(core, 7) is True
    assert frames(core) == [message(7)]


def test_an_incomplete_recovery_is_not_recovered_and_replays_nothing() -> None:
    core = make_core()
    accept(core, since=2)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    frames(core)
    core.replies.entered(subscribe, Recovery(30, RUN), False, ["alice"])
    assert frames(core) == [joined(seq=30)]


@pytest.mark.parametrize(("send_queue", "recovered"), [(20, True), (4, False)])
def test_a_replay_that_would_not_fit_the_outbox_is_not_recovered(
    send_queue: int, recovered: bool
) -> None:
    core = make_core(send_queue=send_queue, history_size=3)
    accept(core, since=0)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    replay = (publication(1), publication(2), publication(3))
    # The welcome is still queued: joined and three messages would need five places.
    core.replies.entered(subscribe, Recovery(3, RUN, replay, complete=True), False, ["alice"])
    sent = frames(core)[1:]
    if recovered:
        assert sent == [joined(seq=3, recovered=True), message(1), message(2), message(3)]
    else:
        assert sent == [joined(seq=3, recovered=False)]
        assert state(core) is SessionState.ACTIVE


def test_a_plain_text_session_gets_no_joined_but_the_messages_that_waited() -> None:
    core = make_core(TEXT)
    accept(core)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    deliver(core, 3)
    core.replies.entered(subscribe, Recovery(2, RUN), True, ["alice"])
    assert core.outbox.take() == ["m3"]


# -- sending -------------------------------------------------------------------------------


def test_send_asks_to_publish_a_draft_with_the_wall_time_and_id() -> None:
    core = inside()
    say(core, {"type": "send", "room": "lobby", "text": "hi", "id": "m1"}, T0 + 1, WALL + 7)
    assert core.requests() == [Publish(Draft("lobby", "alice", "hi", "m1", WALL + 7))]
    assert core.outbox.take() == []


@pytest.mark.parametrize("duplicate", [False, True])
def test_a_publication_is_acked_with_its_seq_even_a_duplicate(duplicate: bool) -> None:
    core = inside()
    say(core, {"type": "send", "room": "lobby", "text": "hi", "id": "m1"})
    [publish] = core.requests()
    assert isinstance(publish, Publish)
    core.replies.published(publish, publish.draft.published(3, RUN, duplicate=duplicate))
    assert frames(core) == [{"type": "ack", "id": "m1", "room": "lobby", "seq": 3}]


def test_plain_text_publishes_to_the_url_room_and_gets_no_ack() -> None:
    core = inside(TEXT)
    core.receive("hello there", T0 + 1, WALL + 1)
    [publish] = core.requests()
    assert publish == Publish(Draft("lobby", "alice", "hello there", None, WALL + 1))
    core.replies.published(publish, publish.draft.published(1, RUN))
    assert core.outbox.take() == []


def test_send_to_a_room_not_joined_is_refused_with_not_joined() -> None:
    core = inside()
    say(core, {"type": "send", "room": "elsewhere", "text": "x", "id": "m1"})
    assert frames(core) == [error("not_joined", "not joined to elsewhere", "m1")]
    assert core.requests() == []


# -- the broker failing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uncertain", "detail"), [(False, UNAVAILABLE_DETAIL), (True, UNCERTAIN_DETAIL)]
)
def test_a_failed_send_is_refused_with_unavailable(uncertain: bool, detail: str) -> None:
    core = inside()
    say(core, {"type": "send", "room": "lobby", "text": "x", "id": "a"})
    [publish] = core.requests()
    assert isinstance(publish, Publish)
    core.replies.failed(publish, BrokerUnavailable("down", uncertain=uncertain))
    assert frames(core) == [error("unavailable", detail, "a")]
    assert state(core) is SessionState.ACTIVE


def test_the_detail_reads_the_uncertain_attribute_of_any_exception() -> None:
    class Timeout(Exception):
        uncertain = True

    core = inside()
    say(core, {"type": "send", "room": "lobby", "text": "x", "id": 5})
    [publish] = core.requests()
    assert isinstance(publish, Publish)
    core.replies.failed(publish, Timeout())
    core.replies.failed(publish, RuntimeError("no attribute"))
    assert frames(core) == [
        error("unavailable", UNCERTAIN_DETAIL, 5),
        error("unavailable", UNAVAILABLE_DETAIL, 5),
    ]


def test_a_failed_send_closes_a_plain_text_session_1013() -> None:
    core = inside(TEXT)
    core.receive("x", T0, WALL)
    [publish] = core.requests()
    assert isinstance(publish, Publish)
    core.replies.failed(publish, BrokerUnavailable("down"))
    assert core.outbox.take() == []
    assert state(core) is SessionState.CLOSING
    assert close_frame(core) == (1013, "broker unavailable, try again later")


def test_a_failed_join_of_the_url_room_closes_1013_with_bye() -> None:
    core = make_core()
    accept(core)
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    core.replies.failed(subscribe, BrokerUnavailable("down"))
    assert [jittered(f) for f in frames(core)[1:]] == [bye("policy", True)]
    assert close_frame(core) == (1013, "broker unavailable, try again later")
    assert core.session.rooms == []
    assert closing_reason(core) == "unavailable"


def test_a_failed_join_of_another_room_is_refused_and_the_room_is_not_joined() -> None:
    core = inside()
    say(core, {"type": "join", "room": "games", "id": "j1"})
    [subscribe] = core.requests()
    assert subscribe == Subscribe("games", None, None, "j1")
    assert core.session.rooms == ["lobby", "games"]
    core.replies.failed(subscribe, BrokerUnavailable("down"))
    assert frames(core) == [error("unavailable", UNAVAILABLE_DETAIL, "j1")]
    assert core.session.rooms == ["lobby"]
    assert deliver(core, 1, room="games") is False


def test_a_failed_members_list_is_refused_with_unavailable() -> None:
    core = inside()
    say(core, {"type": "join", "room": "lobby", "id": "j2"})
    [listing] = core.requests()
    assert isinstance(listing, ListMembers)
    core.replies.failed(listing, BrokerUnavailable("down", uncertain=True))
    assert frames(core) == [error("unavailable", UNCERTAIN_DETAIL, "j2")]
    assert core.session.rooms == ["lobby"]


def test_an_abandoned_join_leaves_the_room_unjoined() -> None:
    core = inside()
    say(core, {"type": "join", "room": "games"})
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    core.replies.abandoned(subscribe)
    assert core.session.rooms == ["lobby"]
    assert core.outbox.take() == []


# -- joining and leaving rooms ---------------------------------------------------------------


def test_joining_another_room_asks_to_subscribe_with_since_and_epoch() -> None:
    core = inside()
    say(core, {"type": "join", "room": "games", "since": 4, "epoch": "e9", "id": 1})
    assert core.requests() == [Subscribe("games", 4, "e9", 1, from_url=False)]
    assert core.session.rooms == ["lobby", "games"]


@pytest.mark.parametrize(
    ("since", "epoch", "recovered"),
    [
        (5, None, True),
        (5, RUN, True),
        (5, "another-run", False),
        (4, None, False),
        (0, None, False),
        (9, None, False),
        (None, None, False),
    ],
)
def test_joining_a_room_already_joined_lists_its_members_and_replays_nothing(
    since: int | None, epoch: str | None, recovered: bool
) -> None:
    core = inside(latest=5)
    say(core, {"type": "join", "room": "lobby", "since": since, "epoch": epoch, "id": "j"})
    [listing] = core.requests()
    assert listing == ListMembers("lobby", since, epoch, "j")
    assert core.outbox.take() == []
    core.replies.listed(listing, ["alice", "bob"])
    assert frames(core) == [joined(seq=5, recovered=recovered, members=["alice", "bob"])]
    assert core.requests() == []


def test_joining_beyond_the_room_limit_is_forbidden() -> None:
    core = inside(max_rooms_per_session=3)
    say(core, {"type": "join", "room": "two"})
    say(core, {"type": "join", "room": "three"})
    assert [r.room for r in core.requests() if isinstance(r, Subscribe)] == ["two", "three"]
    say(core, {"type": "join", "room": "four", "id": 7})
    assert frames(core) == [error("forbidden", "at most 3 rooms at once", 7)]
    assert core.requests() == []
    assert core.session.rooms == ["lobby", "two", "three"]


def test_leave_asks_to_unsubscribe_and_says_left() -> None:
    core = inside()
    say(core, {"type": "leave", "room": "lobby", "id": 3})
    assert core.requests() == [Unsubscribe("lobby")]
    assert frames(core) == [{"type": "left", "room": "lobby"}]
    assert core.session.rooms == []
    assert deliver(core, 1) is False


def test_leaving_a_room_not_joined_is_refused_with_not_joined() -> None:
    core = inside()
    say(core, {"type": "leave", "room": "games", "id": 3})
    assert frames(core) == [error("not_joined", "not joined to games", 3)]
    assert core.requests() == []


def test_a_rejoin_on_the_same_connection_never_resends() -> None:
    core = inside(latest=2)
    for seq in (3, 4):
        deliver(core, seq)
    say(core, {"type": "leave", "room": "lobby"})
    say(core, {"type": "join", "room": "lobby", "since": 2})
    requests = core.requests()
    assert requests[0] == Unsubscribe("lobby")
    subscribe = requests[1]
    assert isinstance(subscribe, Subscribe)
    frames(core)
    replay = (publication(3), publication(4), publication(5))
    core.replies.entered(subscribe, Recovery(5, RUN, replay, complete=True), False, ["alice"])
    assert frames(core) == [joined(seq=5, recovered=True), message(5)]


# -- bad input and limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{", error("bad_request", "invalid JSON")),
        ("NaN", error("bad_request", "invalid JSON")),
        ("[]", error("bad_request", "a frame must be a JSON object")),
        (
            '{"type": "send", "room": "lobby", "id": 2}',
            error("bad_request", "text must be a string", 2),
        ),
        (
            '{"type": "join", "room": "no/slash"}',
            error("bad_request", "room must match [A-Za-z0-9_.-]{1,64}"),
        ),
        ('{"type": "shout", "id": "x"}', error("unknown_type", "unknown type 'shout'", "x")),
    ],
)
def test_an_invalid_frame_is_refused_and_asks_nothing(raw: str, expected: dict[str, Any]) -> None:
    core = inside()
    core.receive(raw, T0, WALL)
    assert frames(core) == [expected]
    assert core.requests() == []
    assert state(core) is SessionState.ACTIVE


def test_an_invalid_frame_counts_as_activity() -> None:
    core = inside(heartbeat_interval=1000.0)
    core.tick(T0 + 30)
    assert state(core) is SessionState.IDLE
    core.receive("{", T0 + 31, WALL + 31)
    assert state(core) is SessionState.ACTIVE
    assert core.session.last_activity == T0 + 31


def test_a_binary_frame_closes_1003_with_bye() -> None:
    core = inside()
    core.receive(b"\x00\x01", T0 + 1, WALL + 1)
    assert frames(core) == [bye("policy", False)]
    assert close_frame(core) == (1003, "binary frames are not supported")
    assert deadline(core) == T0 + 1 + 2.0
    assert core.requests() == []


@pytest.mark.parametrize(
    ("text", "closes"),
    [
        ("a" * 1024, False),
        ("a" * 1025, True),
        ("é" * 512, False),
        ("é" * 513, True),
        ("\U0001f600" * 256, False),
        ("\U0001f600" * 257, True),
    ],
)
def test_a_frame_over_max_message_bytes_in_utf8_closes_1009(text: str, closes: bool) -> None:
    core = inside(TEXT, max_message_bytes=1024)
    core.receive(text, T0, WALL)
    if closes:
        assert close_frame(core) == (1009, "message too big")
        assert core.requests() == []
    else:
        assert close_frame(core) is None
        assert core.requests() == [Publish(Draft("lobby", "alice", text, None, WALL))]
    # Plain text never gets a bye.
    assert core.outbox.take() == []


def test_a_json_frame_over_max_message_bytes_gets_bye_policy() -> None:
    core = inside(max_message_bytes=64)
    say(core, {"type": "send", "room": "lobby", "text": "x" * 64})
    assert frames(core) == [bye("policy", False)]
    assert close_frame(core) == (1009, "message too big")


def test_every_client_frame_handled_is_counted_in() -> None:
    totals = Totals()
    core = inside(totals=totals)
    core.receive("{", T0, WALL)
    say(core, {"type": "ping"})
    assert core.session.messages_in == 2
    assert totals.messages_in == 2
    core.sent(3)
    assert (core.session.messages_out, totals.messages_out) == (3, 3)


# -- the rate ------------------------------------------------------------------------------


def send_frame(n: int) -> dict[str, Any]:
    return {"type": "send", "room": "lobby", "text": str(n), "id": n}


def test_frames_over_the_burst_are_refused_with_rate_limited_and_their_id() -> None:
    totals = Totals()
    core = inside(rate=1.0, burst=3, totals=totals)
    for n in range(4):
        say(core, send_frame(n))
    assert [r.draft.id for r in core.requests() if isinstance(r, Publish)] == [0, 1, 2]
    assert frames(core) == [error("rate_limited", RATE_DETAIL, 3)]
    assert totals.rate_limited == 1
    assert state(core) is SessionState.ACTIVE


def test_tokens_come_back_at_the_rate() -> None:
    core = inside(rate=1.0, burst=3)
    for n in range(3):
        say(core, send_frame(n))
    core.requests()
    say(core, send_frame(3), T0 + 0.5)
    say(core, send_frame(4), T0 + 1.5)
    assert [r.draft.id for r in core.requests() if isinstance(r, Publish)] == [4]
    assert frames(core) == [error("rate_limited", RATE_DETAIL, 3)]


def test_a_flood_closes_1008_with_bye_policy() -> None:
    totals = Totals()
    core = inside(rate=1.0, burst=3, totals=totals)
    for n in range(6):
        say(core, send_frame(n))
    assert state(core) is SessionState.ACTIVE
    # The fourth refusal in a burst of three is a flood.
    say(core, send_frame(6))
    assert frames(core) == [error("rate_limited", RATE_DETAIL, n) for n in (3, 4, 5)] + [
        bye("policy", False)
    ]
    assert close_frame(core) == (1008, "too many messages")
    assert closing_reason(core) == "flooding"
    assert totals.rate_limited == 4


def test_plain_text_over_the_rate_is_dropped_without_a_word() -> None:
    totals = Totals()
    core = inside(TEXT, rate=1.0, burst=2, totals=totals)
    for n in range(3):
        core.receive(str(n), T0, WALL)
    assert [r.draft.text for r in core.requests() if isinstance(r, Publish)] == ["0", "1"]
    assert core.outbox.take() == []
    assert totals.rate_limited == 1


def test_echo_over_the_rate_is_dropped_without_a_word() -> None:
    core = make_core(TEXT, rate=1.0, burst=2)
    accept(core, endpoint=Endpoint.ECHO)
    for text in ("a", "b", "c"):
        core.receive(text, T0, WALL)
    assert core.outbox.take() == ["Message text was: a", "Message text was: b"]
    core.receive("d", T0 + 1, WALL + 1)
    assert core.outbox.take() == ["Message text was: d"]


def test_a_pong_for_an_outstanding_ping_is_not_charged() -> None:
    core = inside(rate=1.0, burst=3)
    core.tick(T0 + 10)
    assert frames(core) == [{"type": "ping"}]
    say(core, {"type": "pong"}, T0 + 10)
    for n in range(3):
        say(core, send_frame(n), T0 + 10)
    assert [r.draft.id for r in core.requests() if isinstance(r, Publish)] == [0, 1, 2]
    assert frames(core) == []


def test_an_unsolicited_pong_is_charged() -> None:
    core = inside(rate=1.0, burst=3)
    say(core, {"type": "pong"})
    for n in range(3):
        say(core, send_frame(n))
    assert [r.draft.id for r in core.requests() if isinstance(r, Publish)] == [0, 1]
    assert frames(core) == [error("rate_limited", RATE_DETAIL, 2)]


def test_a_client_ping_is_answered_with_pong() -> None:
    core = inside()
    say(core, {"type": "ping", "id": 1})
    assert frames(core) == [{"type": "pong"}]
    assert core.requests() == []


# -- timers --------------------------------------------------------------------------------


def test_a_ping_goes_out_every_heartbeat_interval() -> None:
    core = inside(heartbeat_interval=10.0, heartbeat_timeout=5.0)
    core.tick(T0 + 9.9)
    assert core.outbox.take() == []
    core.tick(T0 + 10)
    assert frames(core) == [{"type": "ping"}]
    core.tick(T0 + 11)
    assert core.outbox.take() == []
    say(core, {"type": "pong"}, T0 + 12)
    core.tick(T0 + 19.9)
    assert core.outbox.take() == []
    core.tick(T0 + 20)
    assert frames(core) == [{"type": "ping"}]
    assert core.requests() == []


def test_plain_text_sessions_get_no_pings() -> None:
    core = inside(TEXT)
    for t in (10, 20, 29):
        core.tick(T0 + t)
    assert core.outbox.take() == []
    assert state(core) is SessionState.ACTIVE


def test_no_pong_within_the_timeout_closes_4001_without_bye_and_without_grace() -> None:
    core = inside(heartbeat_interval=10.0, heartbeat_timeout=5.0)
    core.tick(T0 + 10)
    frames(core)
    core.tick(T0 + 14.9)
    assert state(core) is SessionState.ACTIVE
    core.tick(T0 + 15)
    assert state(core) is SessionState.CLOSING
    assert core.outbox.take() == []
    assert close_frame(core) == (4001, "heartbeat timeout")
    # The peer is presumed dead: it is cut as soon as the close frame is out.
    assert deadline(core) == T0 + 15
    assert core.tick(T0 + 15) is True


def test_a_session_goes_idle_after_idle_after_and_wakes_on_activity() -> None:
    core = inside(heartbeat_interval=1000.0)
    core.tick(T0 + 29.9)
    assert state(core) is SessionState.ACTIVE
    core.tick(T0 + 30)
    assert (state(core), core.session.public_state) == (SessionState.IDLE, SessionState.IDLE)
    assert core.outbox.take() == []
    say(core, {"type": "send", "room": "lobby", "text": "back"}, T0 + 31)
    assert (state(core), core.session.public_state) == (SessionState.ACTIVE, SessionState.ACTIVE)
    assert [h.state for h in core.session.history] == [
        SessionState.CONNECTING,
        SessionState.ACTIVE,
        SessionState.IDLE,
        SessionState.ACTIVE,
    ]


def test_answering_pings_keeps_a_session_open_but_not_active() -> None:
    core = inside(heartbeat_interval=10.0, heartbeat_timeout=5.0, idle_timeout=0.0)
    for n in range(1, 30):
        core.tick(T0 + 10 * n)
        assert frames(core) == [{"type": "ping"}]
        say(core, {"type": "pong"}, T0 + 10 * n + 1)
        say(core, {"type": "ping"}, T0 + 10 * n + 1)
        assert frames(core) == [{"type": "pong"}]
    assert state(core) is SessionState.IDLE


def test_idle_timeout_closes_4500_with_bye_and_no_reconnect() -> None:
    core = inside(heartbeat_interval=1000.0, idle_after=30.0, idle_timeout=60.0)
    core.tick(T0 + 59.9)
    assert close_frame(core) is None
    core.tick(T0 + 60)
    assert frames(core) == [bye("idle_timeout", False)]
    assert close_frame(core) == (4500, "idle timeout")
    assert deadline(core) == T0 + 62
    assert (state(core), core.session.public_state) == (SessionState.CLOSING, SessionState.IDLE)


# -- closing -------------------------------------------------------------------------------


def closing_core(**overrides: Any) -> SessionCore:
    """An accepted session in ``lobby`` closing with 4500 since T0 + 1 (its bye taken)."""
    core = inside(**overrides)
    core.close(IdleTimeout(), T0 + 1)
    assert frames(core) == [bye("idle_timeout", False)]
    return core


def test_a_closing_session_handles_no_client_frames() -> None:
    core = closing_core()
    say(core, {"type": "send", "room": "lobby", "text": "late"}, T0 + 1.5)
    say(core, {"type": "join", "room": "games"}, T0 + 1.5)
    core.receive(b"\x00", T0 + 1.5, WALL)
    assert core.requests() == []
    assert core.outbox.take() == []
    assert core.session.messages_in == 0
    assert close_frame(core) == (4500, "idle timeout")


def test_nothing_more_is_queued_once_closing() -> None:
    core = closing_core()
    deliver(core, 1)
    core.notify(PRESENCE)
    core.restarted(RunStarted("lobby", "run-2", 0, ("bob",)))
    core.queue('{"type":"pong"}')
    core.tick(T0 + 1.5)
    assert core.outbox.take() == []


#: What a room or the node hands a session without waiting; each says if its outbox changed.
HANDED: dict[str, Callable[[SessionCore], bool]] = {
    "deliver": lambda core: deliver(core, 1),
    "notify": lambda core: core.notify(PRESENCE),
    "restarted": lambda core: core.restarted(RunStarted("lobby", "run-2", 0, ("bob",))),
}


@pytest.mark.parametrize("handed", HANDED.values(), ids=HANDED.keys())
def test_what_is_handed_to_a_closing_session_reports_no_change(
    handed: Callable[[SessionCore], bool],
) -> None:
    # deliver and notify: "True when the outbox changed"; restarted: "True if the
    # client was told (joined)". A closing session queues nothing.
    core = closing_core()
    assert handed(core) is False
    assert core.outbox.take() == []


@pytest.mark.parametrize(
    ("after", "cut"),
    [(0.0, False), (1.9, False), (2.0, True), (30.0, True)],
)
def test_the_peer_is_cut_once_the_close_deadline_passes(after: float, cut: bool) -> None:
    core = closing_core(drain_timeout=2.0)
    assert deadline(core) == T0 + 1 + 2.0
    assert core.tick(T0 + 1 + after) is cut
    assert core.requests() == []


def test_close_is_idempotent() -> None:
    core = closing_core()
    core.close(Shutdown(retry_after_ms=1000), T0 + 1.5)
    assert core.outbox.take() == []
    assert close_frame(core) == (4500, "idle timeout")
    assert deadline(core) == T0 + 3
    assert [h.reason for h in core.session.history].count("closing: 4500 idle_timeout") == 1


def test_a_close_started_without_now_gets_its_deadline_at_the_next_tick() -> None:
    core = inside(send_queue=2, history_size=1)
    for seq in (1, 2, 3):
        deliver(core, seq)
    assert state(core) is SessionState.CLOSING
    assert deadline(core) is None
    assert core.tick(T0 + 5) is False
    assert deadline(core) == T0 + 7
    assert core.tick(T0 + 7) is True


def test_the_close_frame_is_due_until_it_is_sent() -> None:
    core = inside()
    assert close_frame(core) is None
    core.close(IdleTimeout(), T0 + 1)
    assert close_frame(core) == (4500, "idle timeout")
    assert close_frame(core) == (4500, "idle timeout")
    core.close_frame_sent()
    assert close_frame(core) is None


@pytest.mark.parametrize(
    ("closing", "disconnect", "ending"),
    [
        (IdleTimeout(), Disconnect(1000, "client_closed"), (4500, "idle_timeout", "server")),
        (None, Disconnect(1001, "client_closed"), (1001, "client_closed", "client")),
        (None, Disconnect(1011, "handler_failed", by="server"), (1011, "handler_failed", "server")),
        (None, None, (1006, "connection_lost", "client")),
    ],
)
def test_ended_records_how_the_session_ended(
    closing: SessionClosed | None, disconnect: Disconnect | None, ending: tuple[int, str, str]
) -> None:
    core = inside()
    if closing is not None:
        core.close(closing, T0 + 1)
    core.ended(disconnect, T0 + 2)
    session = core.session
    assert (session.close_code, session.close_reason, session.closed_by) == ending
    assert (state(core), session.closed_at) == (SessionState.CLOSED, T0 + 2)


def test_ended_returns_the_rooms_to_leave_and_keeps_the_session_rooms() -> None:
    core = inside()
    say(core, {"type": "join", "room": "games"})
    core.requests()
    deliver(core, 1)
    rooms = core.ended(Disconnect(1000, "client_closed"), T0 + 2)
    assert rooms == ["lobby", "games"]
    assert core.session.rooms == ["lobby", "games"]
    # Nothing more reaches the client, and what was waiting is dropped.
    assert core.outbox.take() == []
    assert deliver(core, 2) is False
    core.queue('{"type":"pong"}')
    assert core.outbox.take() == []


# -- delivery ------------------------------------------------------------------------------


def test_each_seq_reaches_the_client_once() -> None:
    core = inside(latest=0)
    assert [deliver(core, seq) for seq in (1, 1, 2, 1, 4, 3)] == [
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    assert frames(core) == [message(1), message(2), message(4)]


def test_a_plain_text_member_gets_only_the_text() -> None:
    core = inside(TEXT)
    assert deliver(core, 1) is True
    assert core.outbox.take() == ["m1"]


def test_a_message_of_a_room_not_joined_is_not_delivered() -> None:
    core = inside()
    assert deliver(core, 1, room="games") is False
    assert core.outbox.take() == []


def test_a_message_of_another_run_comes_after_a_fresh_joined() -> None:
    core = inside(latest=5, users=("alice", "carol"))
    assert deliver(core, 3, epoch="run-2") is True
    assert deliver(core, 4, epoch="run-2") is True
    assert deliver(core, 3, epoch="run-2") is False
    sent = frames(core)
    assert sent[0] == joined(seq=2, epoch="run-2", recovered=False, members=["alice", "carol"])
    assert sent[1:] == [message(3), message(4)]


def test_a_new_run_is_told_with_its_users_once() -> None:
    core = inside(latest=5)
    run = RunStarted("lobby", "run-2", 0, ("bob", "dan"))
    assert core.restarted(run) is True
    assert frames(core) == [joined(seq=0, epoch="run-2", members=["bob", "dan"])]
    assert core.restarted(run) is False
    assert core.outbox.take() == []
    assert deliver(core, 1, epoch="run-2") is True
    assert frames(core) == [message(1)]


def test_a_plain_text_session_is_not_told_of_a_new_run() -> None:
    # restarted: "True when the client knows the run's users now"; plain text never
    # gets joined, and hears no presence: nothing to tell it.
    core = inside(TEXT, latest=5)
    assert core.restarted(RunStarted("lobby", "run-2", 0, ("bob",))) is True
    assert core.outbox.take() == []
    assert deliver(core, 1, epoch="run-2") is True
    assert core.outbox.take() == ["m1"]


def test_a_new_run_whose_joined_overflows_the_outbox_is_not_told() -> None:
    core = inside(send_queue=2, history_size=1)
    assert deliver(core, 6) is True
    assert deliver(core, 7) is True
    assert core.restarted(RunStarted("lobby", "run-2", 0, ("bob",))) is False
    assert core.session.close_reason is None
    assert core.closing is not None and core.closing.reason == "slow_consumer"


def test_a_run_notice_for_the_run_the_session_is_in_or_a_room_not_joined_is_ignored() -> None:
    core = inside(latest=5)
    assert core.restarted(RunStarted("lobby", RUN, 0, ("bob",))) is False
    assert core.restarted(RunStarted("games", "run-2", 0, ("bob",))) is False
    assert core.outbox.take() == []
    assert deliver(core, 6) is True


def test_an_outbox_overflow_closes_1013_slow_consumer_and_drops_the_backlog() -> None:
    core = inside(send_queue=3, history_size=1)
    assert [deliver(core, seq) for seq in (1, 2, 3, 4)] == [True, True, True, True]
    assert [jittered(f) for f in frames(core)] == [bye("slow_consumer", True)]
    assert close_frame(core) == (1013, "send queue overflow")
    assert closing_reason(core) == "slow_consumer"


def test_too_much_held_during_a_join_closes_1013_slow_consumer() -> None:
    core = inside(send_queue=3, history_size=1)
    say(core, {"type": "join", "room": "games"})
    core.requests()
    assert [deliver(core, seq, room="games") for seq in (1, 2, 3)] == [False, False, False]
    assert state(core) is SessionState.ACTIVE
    assert deliver(core, 4, room="games") is True
    assert close_frame(core) == (1013, "send queue overflow")


@pytest.mark.parametrize(
    ("protocol", "told"), [(JSON, True), (Subprotocol.BATCH, True), (TEXT, False)]
)
def test_presence_reaches_json_sessions_only(protocol: Subprotocol, told: bool) -> None:
    core = inside(protocol)
    assert core.notify(PRESENCE) is told
    assert core.outbox.take() == ([PRESENCE] if told else [])


# -- tokens --------------------------------------------------------------------------------


def authed(rooms: list[str] | None = None, ttl: float = 60.0, **overrides: Any) -> SessionCore:
    """A session of ``alice`` with a token of ``ttl`` seconds (leeway 5 s) in ``lobby``."""
    settings: dict[str, Any] = {
        "jwt_secret": SECRET,
        "jwt_leeway": 5.0,
        "heartbeat_interval": 1000.0,
        "idle_after": 1000.0,
        "idle_timeout": 0.0,
    }
    settings.update(overrides)
    claims: dict[str, Any] = {} if rooms is None else {"rooms": rooms}
    raw = token(ttl=ttl, **claims)
    identity = Authenticator(make_settings(**settings)).verify(raw, WALL)
    return inside(identity=identity, **settings)


def test_the_handshake_token_sets_the_deadline_with_leeway() -> None:
    core = authed(ttl=60.0)
    assert core.identity is not None and core.identity.user == "alice"
    assert core.session.token_deadline == T0 + 65


def test_an_expired_token_closes_1008_token_expired_at_the_deadline() -> None:
    core = authed(ttl=60.0)
    core.tick(T0 + 64.9)
    assert close_frame(core) is None
    core.tick(T0 + 65)
    assert frames(core) == [bye("token_expired", False)]
    assert close_frame(core) == (1008, "token expired")
    assert closing_reason(core) == "token_expired"


def test_a_valid_refresh_moves_the_deadline() -> None:
    core = authed(ttl=60.0)
    fresh = token(ttl=100.0, wall=WALL + 50)
    say(core, {"type": "refresh", "token": fresh, "id": 1}, T0 + 50, WALL + 50)
    assert core.outbox.take() == []
    assert core.requests() == []
    assert core.session.token_deadline == T0 + 50 + 100 + 5
    assert core.identity is not None and core.identity.expires_at == WALL + 150
    core.tick(T0 + 70)
    assert close_frame(core) is None


@pytest.mark.parametrize(
    ("refresh", "expected"),
    [
        (
            token("mallory", ttl=600.0),
            error("forbidden", "refresh must be for the session's own user", 1),
        ),
        ("garbage", error("bad_request", "refresh refused: invalid token", 1)),
        (
            token(ttl=600.0).replace(".", ".x", 1),
            error("bad_request", "refresh refused: invalid token", 1),
        ),
        (token(ttl=-10.0), error("bad_request", "refresh refused: token expired", 1)),
    ],
    ids=["other user", "garbage", "bad signature", "expired"],
)
def test_a_refused_refresh_changes_nothing(refresh: str, expected: dict[str, Any]) -> None:
    core = authed(ttl=60.0)
    before = core.identity
    say(core, {"type": "refresh", "token": refresh, "id": 1})
    assert frames(core) == [expected]
    assert core.identity is before
    assert core.session.token_deadline == T0 + 65
    assert core.requests() == []


def test_a_refresh_without_jwt_auth_is_a_bad_request() -> None:
    core = inside()
    say(core, {"type": "refresh", "token": token(), "id": "r"})
    assert frames(core) == [
        error("bad_request", "refresh needs JWT auth, which is not configured", "r")
    ]
    assert core.session.token_deadline is None


def test_a_room_the_token_does_not_allow_is_forbidden() -> None:
    core = authed(rooms=["lobby", "game*"])
    say(core, {"type": "join", "room": "private", "id": "p"})
    say(core, {"type": "join", "room": "games", "id": "g"})
    assert frames(core) == [error("forbidden", "this room is not allowed by the token", "p")]
    assert core.requests() == [Subscribe("games", None, None, "g")]


def test_a_refresh_whose_rooms_no_longer_allow_a_joined_room_leaves_it() -> None:
    core = authed(rooms=["lobby", "games"])
    say(core, {"type": "join", "room": "games"})
    [subscribe] = core.requests()
    assert isinstance(subscribe, Subscribe)
    core.replies.entered(subscribe, Recovery(0, RUN), False, ["alice"])
    frames(core)
    say(core, {"type": "refresh", "token": token(ttl=600.0, rooms=["lobby"])})
    assert core.requests() == [Unsubscribe("games")]
    assert frames(core) == [{"type": "left", "room": "games"}]
    assert core.session.rooms == ["lobby"]
    assert deliver(core, 1, room="games") is False
