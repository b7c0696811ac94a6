"""The client's sans-I/O core: reconnects, recovery, dedupe, sends and their retries, heartbeats
and tokens, with plain values for time (no event loop, no socket)."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from chat.client.core import ClientConfig, ClientCore
from chat.client.events import (
    Ack,
    ClientClosed,
    ConnectionState,
    Joined,
    Left,
    Message,
    OutboxFull,
    PresenceEvent,
    RoomUnrecoverable,
    SendFailed,
    ServerError,
    StateChanged,
)

A = "ws://a.test/ws/lobby"
B = "ws://b.test/ws/lobby"


def rolls(*values: float) -> Iterator[float]:
    yield from values
    while True:
        yield 0.5


def make(
    *urls: str, random: Iterator[float] | None = None, renewable: bool = False, **options: Any
) -> ClientCore:
    config = ClientConfig(urls=urls or (A,), user="alice", **options)
    source = random or rolls()
    return ClientCore(config, random=lambda: next(source), id_prefix="c", renewable_token=renewable)


def receive(core: ClientCore, now: float, *frames: dict[str, Any]) -> None:
    """One server WebSocket frame carrying ``frames`` (a batch when several)."""
    core.received("\n".join(orjson.dumps(f).decode() for f in frames), now)


def welcome(interval: float = 25.0, timeout: float = 10.0, burst: int = 40) -> dict[str, Any]:
    return {
        "type": "welcome",
        "session": "s1",
        "user": "alice",
        "node": "n1",
        "heartbeat": {"interval": interval, "timeout": timeout},
        "limits": {"max_message_bytes": 65536, "rate": 20.0, "burst": burst},
    }


def joined(
    room: str = "lobby", seq: int = 0, epoch: str = "e1", recovered: bool = False
) -> dict[str, Any]:
    members = [{"user": "alice"}, {"user": "bob"}]
    return {
        "type": "joined",
        "room": room,
        "seq": seq,
        "epoch": epoch,
        "recovered": recovered,
        "members": members,
    }


def message(seq: int, room: str = "lobby", text: str = "", frame_id: Any = None) -> dict[str, Any]:
    return {
        "type": "message",
        "room": room,
        "seq": seq,
        "id": frame_id,
        "user": "bob",
        "text": text or f"m{seq}",
        "ts": 1.5,
    }


def connect(core: ClientCore, now: float, *frames: dict[str, Any]) -> str:
    """Attempt, accept, welcome and the URL room's ``joined`` (default: a fresh one)."""
    attempt = core.attempt(now)
    assert attempt is not None
    core.opened(now)
    receive(core, now, welcome(), *(frames or (joined(),)))
    return attempt.url


def sent(core: ClientCore) -> list[dict[str, Any]]:
    return [orjson.loads(frame) for frame in core.data_to_send()]


def settled(core: ClientCore) -> list[tuple[str, object]]:
    """Settled sends, errors as their type and text (exceptions compare by identity)."""
    return [
        (send_id, result if isinstance(result, Ack) else (type(result), str(result)))
        for send_id, result in core.settled()
    ]


def closing(core: ClientCore) -> str | None:
    return core.close_request


def of(core: ClientCore, kind: type[Any]) -> list[Any]:
    return [event for event in core.events() if isinstance(event, kind)]


def started(*urls: str, **options: Any) -> ClientCore:
    core = make(*urls, **options)
    core.start(0.0)
    connect(core, 0.0)
    core.events()
    return core


# -- connecting and reconnecting ------------------------------------------------


def test_the_first_attempt_is_due_at_start_with_the_user_and_no_recovery() -> None:
    core = make()
    assert core.attempt(0.0) is None  # not started
    core.start(10.0)
    assert core.deadline() == 10.0
    url = connect(core, 10.0)
    assert url == "ws://a.test/ws/lobby?user=alice"
    states = [(e.previous, e.state) for e in of(core, StateChanged)]
    assert states == [
        (ConnectionState.CLOSED, ConnectionState.CONNECTING),
        (ConnectionState.CONNECTING, ConnectionState.CONNECTED),
    ]


def test_after_a_shutdown_bye_the_next_url_is_tried_after_retry_after_ms_with_since_and_epoch() -> (
    None
):
    core = started(A, B)
    receive(core, 1.0, message(1), message(2))
    receive(
        core, 2.0, {"type": "bye", "reason": "shutdown", "reconnect": True, "retry_after_ms": 2731}
    )
    core.ended(2.0, 1001)
    change = of(core, StateChanged)[-1]
    assert (change.state, change.code, change.retry_in) == (
        ConnectionState.RECONNECTING,
        1001,
        2.731,
    )
    assert core.attempt(4.7) is None
    attempt = core.attempt(4.731)
    assert attempt is not None
    assert attempt.url == "ws://b.test/ws/lobby?user=alice&since=2&epoch=e1"


@pytest.mark.parametrize("code", [1008, 1003, 1009, 4500, 1000])
def test_a_final_close_is_never_reconnected_and_pending_sends_fail(code: int) -> None:
    core = started()
    core.ended(0.5, None)  # lost: the send below waits for the next connection
    send_id = core.send("lobby", "hi", 0.6)
    connect(core, core.deadline() or 0.0, joined(seq=0, recovered=True))
    core.events()
    core.ended(1.0, code)
    assert settled(core) == [(send_id, (ClientClosed, f"close {code}"))]
    assert of(core, StateChanged)[-1].state is ConnectionState.CLOSED
    assert core.finished
    assert core.deadline() is None
    assert core.attempt(1e9) is None
    with pytest.raises(ClientClosed):
        core.send("lobby", "again", 2.0)
    assert send_id == "c-1"


def test_lost_connections_back_off_with_full_jitter_and_reset_once_a_connection_lasted() -> None:
    core = make(random=rolls(1.0, 1.0, 1.0, 1.0, 1.0))
    core.start(0.0)
    now = 0.0
    delays = []
    for _ in range(3):
        assert core.attempt(now) is not None
        core.refused(now, 503)
        change = of(core, StateChanged)[-1]
        delays.append(change.retry_in)
        now += change.retry_in
    assert delays == [0.5, 1.0, 2.0]
    connect(core, now)
    core.ended(now + 1.0, 1011)  # a connection that did not last keeps backing off
    assert of(core, StateChanged)[-1].retry_in == 4.0
    now += 1.0 + 4.0
    connect(core, now, joined(recovered=True))
    core.ended(now + 60.0, 1011)  # a connection that lasted resets the backoff
    assert of(core, StateChanged)[-1].retry_in == 0.5  # roll 1.0 * base


def test_a_refused_handshake_that_no_retry_can_change_stops_with_the_servers_detail() -> None:
    core = make()
    core.start(0.0)
    core.attempt(0.0)
    core.refused(0.0, 403, "room not allowed by the token")
    change = of(core, StateChanged)[-1]
    assert (change.state, change.code, change.detail) == (
        ConnectionState.CLOSED,
        403,
        "room not allowed by the token",
    )


def test_a_silent_server_is_cut_at_its_heartbeat_deadline_then_reconnected() -> None:
    core = started()
    receive(core, 10.0, {"type": "ping"})
    assert sent(core) == [{"type": "pong"}]
    assert core.deadline() == 10.0 + 25 + 10 + 5
    core.tick(49.9)
    assert closing(core) is None
    core.tick(50.0)
    assert closing(core) == "server silent"
    core.ended(50.1, None)
    change = of(core, StateChanged)[-1]
    assert (change.state, change.reason) == (ConnectionState.RECONNECTING, "server silent")


def test_a_server_that_never_says_welcome_is_cut() -> None:
    core = make(welcome_timeout=3.0)
    core.start(0.0)
    core.attempt(0.0)
    core.opened(0.0)
    assert core.deadline() == 3.0
    core.tick(3.0)
    assert core.close_request == "no welcome from the server"


def test_an_invalid_frame_from_the_server_ends_the_connection() -> None:
    core = started()
    core.received("{not json", 1.0)
    assert core.close_request == "the server sent an invalid frame"


# -- recovery ---------------------------------------------------------------------


def test_after_a_reconnect_replayed_messages_come_first_in_order_and_duplicates_are_dropped() -> (
    None
):
    core = started()
    receive(core, 1.0, message(1), message(2))
    core.ended(2.0, 1011)
    core.events()
    now = core.deadline() or 0.0
    url = connect(
        core, now, joined(seq=5, recovered=True), message(3), message(4), message(5), message(6)
    )
    assert url.endswith("since=2&epoch=e1")
    events = core.events()
    rejoin = [e for e in events if isinstance(e, Joined)]
    assert rejoin == [Joined("lobby", 5, "e1", ("alice", "bob"), recovered=True, rejoined=True)]
    delivered = [(e.seq, e.replayed) for e in events if isinstance(e, Message)]
    assert delivered == [(3, True), (4, True), (5, True), (6, False)]
    receive(core, now, message(5), message(6), message(7))
    assert [e.seq for e in of(core, Message)] == [7]
    assert core.rooms.statistics.duplicates == 2


def test_a_gap_the_history_no_longer_covers_is_reported_and_the_stream_goes_on() -> None:
    core = started()
    receive(core, 1.0, message(1))
    core.ended(2.0, None)
    core.events()
    connect(core, core.deadline() or 0.0, joined(seq=900, recovered=False), message(901))
    events = core.events()
    lost = [e for e in events if isinstance(e, RoomUnrecoverable)]
    assert lost == [RoomUnrecoverable("lobby", 1, "e1", 900, "e1", "gap")]
    assert [e.seq for e in events if isinstance(e, Message)] == [901]
    assert events.index(lost[0]) < events.index(next(e for e in events if isinstance(e, Message)))


def test_a_new_run_under_a_new_epoch_starts_again_from_its_seq_instead_of_being_dropped() -> None:
    core = started()
    receive(core, 1.0, message(1), message(2), message(3))
    core.events()
    # While connected: the room's run ended (Redis restarted empty).
    receive(core, 2.0, joined(seq=0, epoch="e2"), message(1, text="new"))
    events = core.events()
    assert [e for e in events if isinstance(e, RoomUnrecoverable)] == [
        RoomUnrecoverable("lobby", 3, "e1", 0, "e2", "new_run")
    ]
    assert [(e.seq, e.text) for e in events if isinstance(e, Message)] == [(1, "new")]
    # And across a reconnect: the server answers an old run's since with another epoch.
    core.ended(3.0, 1011)
    connect(core, core.deadline() or 0.0, joined(seq=4, epoch="e3", recovered=False))
    assert of(core, RoomUnrecoverable)[0].reason == "new_run"


def test_every_room_is_joined_again_with_since_and_epoch_after_the_welcome() -> None:
    core = started(rooms=("games",))
    assert sent(core) == [{"type": "join", "room": "games", "id": "join:games"}]
    receive(core, 1.0, joined("games", seq=7, epoch="g1"), message(8, room="games"))
    core.ended(2.0, 1011)
    core.attempt(core.deadline() or 0.0)
    core.opened(5.0)
    receive(core, 5.0, welcome())
    assert sent(core) == [
        {"type": "join", "room": "games", "id": "join:games", "since": 8, "epoch": "g1"}
    ]


def test_presence_keeps_the_member_list_and_a_refused_join_is_reported() -> None:
    core = started()
    receive(core, 1.0, {"type": "presence", "room": "lobby", "event": "join", "user": "cy"})
    assert of(core, PresenceEvent) == [PresenceEvent("lobby", "join", "cy")]
    receive(core, 1.0, {"type": "presence", "room": "lobby", "event": "leave", "user": "bob"})
    state = core.rooms.get("lobby")
    assert state is not None
    assert list(state.members) == ["alice", "cy"]
    core.join("secret", 2.0)
    receive(core, 2.0, {"type": "error", "code": "forbidden", "detail": "no", "id": "join:secret"})
    assert of(core, ServerError) == [ServerError("forbidden", "no", "join:secret")]
    assert "secret" not in core.rooms


def test_leaving_the_url_room_is_kept_across_reconnects() -> None:
    core = started(rooms=("games",))
    core.leave("lobby", 1.0)
    assert {"type": "leave", "room": "lobby", "id": "leave:lobby"} in sent(core)
    receive(core, 1.0, {"type": "left", "room": "lobby"})
    assert of(core, Left) == [Left("lobby")]
    core.ended(2.0, 1011)
    core.attempt(core.deadline() or 0.0)
    core.opened(3.0)
    receive(core, 3.0, welcome(), joined())  # the server puts every connection in it
    assert sent(core)[0] == {"type": "leave", "room": "lobby"}
    receive(core, 3.0, message(1), {"type": "left", "room": "lobby"})
    assert [e for e in core.events() if isinstance(e, Message | Joined | Left)] == []


# -- sends --------------------------------------------------------------------------


def test_a_send_made_while_disconnected_goes_out_once_its_room_is_joined_and_is_acked() -> None:
    core = make()
    core.start(0.0)
    send_id = core.send("lobby", "hi", 0.0)
    assert core.data_to_send() == []
    connect(core, 0.0)
    assert sent(core) == [{"type": "send", "room": "lobby", "text": "hi", "id": send_id}]
    receive(core, 0.1, {"type": "ack", "id": send_id, "room": "lobby", "seq": 1})
    assert core.settled() == [(send_id, Ack(send_id, "lobby", 1))]


def test_an_unavailable_send_is_retried_later_with_the_same_id() -> None:
    core = started(random=rolls(1.0))
    send_id = core.send("lobby", "hi", 1.0)
    assert sent(core)[0]["id"] == send_id
    detail = "the broker did not answer in time"
    receive(core, 2.0, {"type": "error", "code": "unavailable", "detail": detail, "id": send_id})
    assert core.settled() == []
    assert core.deadline() == 2.25  # a quarter second, jittered between half and all of it
    core.tick(2.2)
    assert sent(core) == []
    core.tick(2.25)
    assert sent(core) == [{"type": "send", "room": "lobby", "text": "hi", "id": send_id}]
    receive(core, 3.0, {"type": "ack", "id": send_id, "room": "lobby", "seq": 4})
    assert core.settled() == [(send_id, Ack(send_id, "lobby", 4))]
    assert core.outbox.retries == 1


def test_a_send_lost_with_its_connection_goes_again_with_the_same_id_after_the_rejoin() -> None:
    core = started()
    send_id = core.send("lobby", "hi", 1.0)
    sent(core)
    core.ended(2.0, None)
    now = core.deadline() or 0.0
    core.attempt(now)
    core.opened(now)
    receive(core, now, welcome())
    assert sent(core) == []  # not before the room is joined again
    receive(core, now, joined(seq=1, recovered=True), message(1, text="hi", frame_id=send_id))
    assert sent(core) == [{"type": "send", "room": "lobby", "text": "hi", "id": send_id}]
    receive(core, now, {"type": "ack", "id": send_id, "room": "lobby", "seq": 1})
    assert core.settled() == [(send_id, Ack(send_id, "lobby", 1))]


def test_a_send_refused_for_good_fails_with_the_servers_code() -> None:
    core = started()
    send_id = core.send("lobby", "x" * 10, 1.0)
    receive(core, 1.0, {"type": "error", "code": "bad_request", "detail": "too big", "id": send_id})
    assert settled(core) == [(send_id, (SendFailed, "bad_request: too big"))]


def test_a_full_outbox_refuses_at_once_and_queues_nothing() -> None:
    core = make(outbox_limit=2)
    core.start(0.0)
    core.send("lobby", "1", 0.0)
    core.send("lobby", "2", 0.0)
    with pytest.raises(OutboxFull, match="2 sends await their ack"):
        core.send("lobby", "3", 0.0)
    assert len(core.outbox) == 2
    with pytest.raises(ValueError, match="not in room"):
        core.send("elsewhere", "x", 0.0)


def test_queued_sends_are_paced_below_the_servers_rate() -> None:
    core = make()
    core.start(0.0)
    for n in range(30):
        core.send("lobby", str(n), 0.0)
    connect(core, 0.0)
    assert len(sent(core)) == 20  # half the server's burst of 40
    assert core.deadline() == pytest.approx(1 / 16)  # 80% of its rate of 20/s
    core.tick(1.0)
    assert len(sent(core)) == 10


# -- tokens ------------------------------------------------------------------------


def jwt_with_exp(exp: float) -> str:
    claims = base64.urlsafe_b64encode(orjson.dumps({"sub": "alice", "exp": exp})).rstrip(b"=")
    return f"eyJhbGciOiJIUzI1NiJ9.{claims.decode()}.sig"


def test_a_token_is_refreshed_before_its_exp_and_again_soon_after_a_refusal() -> None:
    core = make(renewable=True)
    core.start(0.0)
    core.token(jwt_with_exp(1_000_100), now=0.0, wall=1_000_000)  # 100 s to live
    connect(core, 0.0)
    receive(core, 30.0, {"type": "ping"})
    receive(core, 60.0, {"type": "ping"})
    sent(core)
    assert core.deadline() == 75.0  # a quarter of its life before exp
    core.tick(75.0)
    assert core.token_wanted
    fresh = jwt_with_exp(1_000_200)
    core.token(fresh, now=75.0, wall=1_000_075)
    assert sent(core) == [{"type": "refresh", "token": fresh, "id": "refresh"}]
    receive(core, 76.0, {"type": "error", "code": "bad_request", "detail": "no", "id": "refresh"})
    assert of(core, ServerError) == [ServerError("bad_request", "no", "refresh")]
    assert core.deadline() == 81.0


def test_closing_fails_pending_sends_and_asks_the_driver_to_close() -> None:
    core = started()
    send_id = core.send("lobby", "hi", 1.0)
    core.close(1.0)
    assert core.close_request == "closed by the client"
    assert settled(core) == [(send_id, (ClientClosed, "closed by the client"))]
    core.ended(1.1, 1000)
    assert of(core, StateChanged)[-1].state is ConnectionState.CLOSED
    assert core.finished


# -- joins: paced like sends, retried unless refused for good ---------------------


class ServerLimiter:
    """The server's per-session rate limit (chat/ratelimit.py): ``rate`` frames a second,
    ``burst`` at once, full at the welcome; a pong the server asked for is free."""

    def __init__(self, now: float, rate: float = 20.0, burst: int = 40) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), now
        self.refused = 0

    def allow(self, frame: dict[str, Any], now: float) -> bool:
        if frame["type"] == "pong":
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False


def test_a_client_in_a_hundred_rooms_joins_them_all_without_one_frame_over_the_servers_rate() -> (
    None
):
    rooms = tuple(f"r{n}" for n in range(100))
    core = make(rooms=rooms)
    core.start(0.0)
    core.attempt(0.0)
    core.opened(0.0)
    server = ServerLimiter(0.0)
    receive(core, 0.0, welcome(), joined())
    now, answered = 0.0, set()
    for _ in range(500):  # bounded: each round answers what was written, then waits
        for frame in sent(core):
            assert server.allow(frame, now), f"refused at {now:.3f}: {frame}"
            if frame["type"] == "join":
                answered.add(frame["room"])
                receive(core, now, joined(frame["room"], seq=0))
        deadline = core.deadline()
        if len(answered) == len(rooms) or deadline is None:
            break
        now = max(now, deadline)
        core.tick(now)
    assert answered == set(rooms)
    assert server.refused == 0
    assert all(core.rooms.joined(room) for room in rooms)
    assert now == pytest.approx((100 - 20) / 16)  # half the burst at once, then 80% of the rate


@pytest.mark.parametrize("code", ["rate_limited", "unavailable"])
def test_a_join_refused_for_now_is_tried_again_with_since_and_epoch_and_keeps_its_sends(
    code: str,
) -> None:
    core = started(rooms=("games",), random=rolls(1.0, 1.0))  # the backoff, the retry
    sent(core)
    receive(core, 1.0, joined("games", seq=7, epoch="g1"))
    core.ended(2.0, 1011)
    send_id = core.send("games", "hi", 2.0)
    now = core.deadline() or 0.0
    connect(core, now, joined(recovered=True))
    assert sent(core) == [
        {"type": "join", "room": "games", "id": "join:games", "since": 7, "epoch": "g1"}
    ]
    error = {"type": "error", "code": code, "detail": "later", "id": "join:games"}
    receive(core, now, error)
    assert "games" in core.rooms
    assert settled(core) == []
    assert of(core, ServerError) == []
    assert of(core, Left) == []
    assert core.deadline() == now + 0.25  # jittered between half and all of a quarter second
    core.tick(now + 0.2)
    assert sent(core) == []
    core.tick(now + 0.25)
    assert sent(core) == [
        {"type": "join", "room": "games", "id": "join:games", "since": 7, "epoch": "g1"}
    ]
    receive(core, now + 0.3, joined("games", seq=7, epoch="g1", recovered=True))
    assert sent(core) == [{"type": "send", "room": "games", "text": "hi", "id": send_id}]


def test_a_join_refused_forbidden_drops_the_room_reports_it_and_fails_its_sends() -> None:
    core = started(rooms=("games",))
    sent(core)
    send_id = core.send("games", "hi", 1.0)
    detail = "at most 128 rooms at once"
    receive(core, 1.0, {"type": "error", "code": "forbidden", "detail": detail, "id": "join:games"})
    assert of(core, ServerError) == [ServerError("forbidden", detail, "join:games")]
    assert "games" not in core.rooms
    assert settled(core) == [(send_id, (SendFailed, f"forbidden: {detail}"))]
    core.tick(10.0)
    assert sent(core) == []


def test_a_leave_cut_off_by_a_lost_connection_ends_with_left() -> None:
    core = started(rooms=("games",))
    receive(core, 1.0, joined("games", seq=3))
    core.events()
    core.leave("games", 1.0)
    assert sent(core)[-1] == {"type": "leave", "room": "games", "id": "leave:games"}
    assert of(core, Left) == []
    core.ended(2.0, None)  # the left never came
    assert of(core, Left) == [Left("games")]
    connect(core, core.deadline() or 0.0, joined(recovered=True))
    assert [f for f in sent(core) if f.get("room") == "games"] == []
    assert core.rooms.get("games") is None


def test_a_room_left_while_its_join_is_on_the_way_is_left_once_the_server_answers() -> None:
    core = started()
    core.join("games", 1.0)
    assert sent(core) == [{"type": "join", "room": "games", "id": "join:games"}]
    core.leave("games", 1.1)
    assert sent(core) == []
    receive(core, 1.2, joined("games", seq=2))
    assert sent(core) == [{"type": "leave", "room": "games", "id": "leave:games"}]
    assert [e for e in core.events() if isinstance(e, Joined | Left)] == []
    receive(core, 1.3, {"type": "left", "room": "games"})
    assert of(core, Left) == [Left("games")]


# -- the user of an anonymous client ----------------------------------------------


def test_an_anonymous_client_is_the_same_user_on_every_connection() -> None:
    core = ClientCore(ClientConfig(urls=(A,)), random=lambda: 0.5, id_prefix="f00d")
    core.start(0.0)
    first = connect(core, 0.0)
    core.ended(1.0, 1011)
    second = connect(core, core.deadline() or 0.0, joined(recovered=True))
    assert first == "ws://a.test/ws/lobby?user=anon-f00d"
    assert second.startswith("ws://a.test/ws/lobby?user=anon-f00d&since=0")
    with_token = ClientCore(
        ClientConfig(urls=(A,)), random=lambda: 0.5, id_prefix="f00d", authenticated=True
    )
    with_token.start(0.0)
    assert connect(with_token, 0.0) == A  # the token says who it is


# -- sends and the server's id window ---------------------------------------------


def own(seq: int, send_id: str, room: str = "lobby", text: str = "hi") -> dict[str, Any]:
    return {**message(seq, room, text, send_id), "user": "alice"}


def test_a_send_lost_with_its_connection_is_settled_by_the_replay_and_not_sent_again() -> None:
    core = started()
    receive(core, 1.0, message(1))
    send_id = core.send("lobby", "hi", 1.0)
    assert sent(core)[0]["id"] == send_id
    core.ended(2.0, None)  # published as seq 3, but the ack was lost
    now = core.deadline() or 0.0
    connect(core, now, joined(seq=3, recovered=True), message(2))
    assert sent(core) == []  # held: the replay may hold it
    receive(core, now, own(3, send_id))
    assert core.settled() == [(send_id, Ack(send_id, "lobby", 3))]
    core.tick(now + 1.0)
    assert sent(core) == []
    assert [e.seq for e in of(core, Message)] == [1, 2, 3]  # its own message too


def test_a_send_not_in_the_replay_goes_again_once_the_replay_is_delivered() -> None:
    core = started()
    send_id = core.send("lobby", "hi", 1.0)
    sent(core)
    core.ended(2.0, None)
    now = core.deadline() or 0.0
    connect(core, now, joined(seq=2, recovered=True), message(1))
    assert sent(core) == []
    receive(core, now, message(2))
    assert sent(core) == [{"type": "send", "room": "lobby", "text": "hi", "id": send_id}]


def test_a_message_of_another_user_with_the_same_id_settles_nothing() -> None:
    core = started()
    send_id = core.send("lobby", "hi", 1.0)
    receive(core, 1.0, message(1, frame_id=send_id))  # bob's, whose ids may look alike
    assert core.settled() == []
    receive(core, 1.1, own(2, send_id))
    assert core.settled() == [(send_id, Ack(send_id, "lobby", 2))]
    receive(core, 1.2, {"type": "ack", "id": send_id, "room": "lobby", "seq": 2})
    assert core.settled() == []


def test_a_send_first_written_longer_ago_than_the_id_window_fails_as_uncertain() -> None:
    core = started(send_id_window=60.0)
    early = core.send("lobby", "early", 1.0)
    sent(core)
    core.ended(2.0, None)
    late = core.send("lobby", "late", 30.0)  # never written: safe to send whenever
    now = 61.0
    core.attempt(now)
    core.opened(now)
    receive(core, now, welcome(), joined(seq=0, recovered=True))
    assert [f["id"] for f in sent(core)] == [late]
    assert settled(core) == [(early, (SendFailed, uncertain(60.0)))]


def uncertain(window: float) -> str:
    return (
        f"uncertain: no ack, and its id was first sent over {window:.0f} s ago (the server's id"
        " window): it may or may not have been published; not sent again"
    )


# -- tokens that do not move on, providers that fail -------------------------------


def test_an_expired_or_cached_token_is_asked_for_again_later_and_later_not_in_a_loop() -> None:
    core = make(renewable=True)
    core.start(0.0)
    stale = jwt_with_exp(999_990)  # expired ten seconds ago
    core.token(stale, now=0.0, wall=1_000_000)
    connect(core, 0.0)
    now, asks = 0.0, []
    for _ in range(6):
        now = core.deadline() or 0.0
        receive(core, now, {"type": "ping"})  # the server is alive throughout
        core.tick(now)
        assert core.token_wanted
        asks.append(now)
        core.token(stale, now=now, wall=1_000_000 + now)
        refreshes = [f for f in sent(core) if f["type"] == "refresh"]
        assert len(refreshes) == 1
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(asks)]
    assert asks[0] == 1.0  # never at once
    assert gaps == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_a_token_provider_that_fails_before_a_handshake_is_a_failed_attempt() -> None:
    core = make(renewable=True, random=rolls(1.0))
    core.start(0.0)
    assert core.attempt(0.0) is not None
    core.token_failed(0.0, "RuntimeError('auth service down')")
    change = of(core, StateChanged)[-1]
    assert (change.state, change.reason, change.detail, change.retry_in) == (
        ConnectionState.RECONNECTING,
        "token provider failed",
        "RuntimeError('auth service down')",
        0.5,
    )
    assert core.attempt(0.5) is not None


def test_a_token_provider_that_fails_on_a_refresh_is_asked_again_later_on_the_same_connection() -> (
    None
):
    core = make(renewable=True, random=rolls(1.0))
    core.start(0.0)
    core.token(jwt_with_exp(1_000_100), now=0.0, wall=1_000_000)
    connect(core, 0.0)
    receive(core, 60.0, {"type": "ping"})
    core.events()
    core.tick(75.0)
    assert core.token_wanted
    core.token_failed(75.0, "TimeoutError()")
    change = of(core, StateChanged)[-1]
    assert (change.state, change.previous, change.reason, change.retry_in) == (
        ConnectionState.CONNECTED,
        ConnectionState.CONNECTED,
        "token provider failed",
        1.0,
    )
    assert core.close_request is None
    assert core.deadline() == 76.0  # the provider is asked again then, not now
    core.tick(76.0)
    assert core.token_wanted
