"""The client's sans-I/O core: reconnects, recovery, dedupe, sends and their retries, heartbeats
and tokens, with plain values for time (no event loop, no socket)."""

from __future__ import annotations

import base64
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
