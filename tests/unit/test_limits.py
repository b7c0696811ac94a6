"""Tokens over a session's life, rate limits and caps on the domain, with a fake clock."""

from __future__ import annotations

import logging
from typing import Any

import jwt
import pytest

from chat.session import SessionState
from tests.clock import FakeClock, settle
from tests.domain import running, state

pytestmark = pytest.mark.anyio

SECRET = "unit-test-secret-" + "u" * 32


def token(clock: FakeClock, sub: str = "alice", ttl: float = 60, **claims: Any) -> str:
    payload = {"sub": sub, "exp": clock.time() + ttl, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


async def test_a_session_ends_with_bye_token_expired_at_exp_plus_leeway() -> None:
    clock = FakeClock()
    async with running(clock=clock, jwt_secret=SECRET, jwt_leeway=5, heartbeat_interval=1000) as h:
        client, session = await h.connect(token=token(clock, ttl=60))
        await h.advance(64)
        assert not client.was_closed()
        await h.advance(2)
        assert client.closed == (1008, "token expired")
        assert [b["reason"] for b in client.of_type("bye")] == ["token_expired"]
        assert session.close_reason == "token_expired"


async def test_refresh_moves_the_deadline_and_a_refused_one_does_not() -> None:
    clock = FakeClock()
    async with running(clock=clock, jwt_secret=SECRET, jwt_leeway=0, heartbeat_interval=1000) as h:
        client, session = await h.connect(token=token(clock, ttl=60))
        await h.advance(50)
        client.send_json({"type": "refresh", "token": token(clock, ttl=-1), "id": 1})
        client.send_json({"type": "refresh", "token": token(clock, "mallory", ttl=600), "id": 2})
        client.send_json({"type": "refresh", "token": "garbage", "id": 3})
        client.send_json({"type": "refresh", "token": token(clock, ttl=100), "id": 4})
        await settle()
        errors = [(e["id"], e["code"]) for e in client.of_type("error")]
        assert errors == [(1, "bad_request"), (2, "forbidden"), (3, "bad_request")]
        await h.advance(60)
        assert not client.was_closed()
        assert state(session) is not SessionState.CLOSED
        await h.advance(41)
        assert client.closed == (1008, "token expired")


async def test_a_refreshed_token_brings_its_own_rooms() -> None:
    clock = FakeClock()
    async with running(clock=clock, jwt_secret=SECRET) as h:
        client, _ = await h.connect(token=token(clock, rooms=["lobby"]))
        client.send_json({"type": "join", "room": "games", "id": "a"})
        client.send_json({"type": "refresh", "token": token(clock, rooms=["lobby", "games"])})
        client.send_json({"type": "join", "room": "games", "id": "b"})
        await settle()
        assert [(e["id"], e["code"]) for e in client.of_type("error")] == [("a", "forbidden")]
        assert [j["room"] for j in client.of_type("joined")] == ["lobby", "games"]


@pytest.mark.parametrize(
    ("handshake", "status", "reason"),
    [
        ({}, 401, "token_missing"),
        ({"token": "x.y.z"}, 401, "invalid_token"),
        ({"room": "private"}, 403, "room_forbidden"),
        ({"origin": "https://evil.example"}, 403, "bad_origin"),
    ],
)
async def test_refusals_before_accept(handshake: dict[str, Any], status: int, reason: str) -> None:
    clock = FakeClock()
    async with running(
        clock=clock, jwt_secret=SECRET, allowed_origins="https://chat.example.com"
    ) as h:
        fields = {"token": token(clock, rooms=["lobby"]), **handshake}
        if handshake == {}:
            fields.pop("token")
        room = fields.pop("room", "lobby")
        client, session = await h.connect(room, **fields)
        assert client.rejected is not None
        assert client.rejected[0] == status
        assert not client.accepted
        assert h.node.registry.totals.rejected == {reason: 1}
        assert session.close_reason == reason


async def test_json_frames_over_the_rate_get_rate_limited_then_the_flooder_is_closed() -> None:
    async with running(rate=2, burst=4) as h:
        flooder, session = await h.connect()
        member, _ = await h.connect()
        for n in range(20):
            flooder.send_json({"type": "send", "room": "lobby", "text": str(n), "id": n})
        await settle()
        errors = flooder.of_type("error")
        assert {e["code"] for e in errors} == {"rate_limited"}
        # Four refusals are answered; the fifth, over the burst, is a flood.
        assert [e["id"] for e in errors] == [4, 5, 6, 7]
        assert [m["text"] for m in member.of_type("message")] == ["0", "1", "2", "3"]
        assert flooder.closed == (1008, "too many messages")
        assert session.close_reason == "flooding"
        assert h.node.registry.totals.rate_limited == 5


async def test_a_requested_pong_is_free_and_an_unsolicited_one_is_not() -> None:
    async with running(rate=1, burst=2, heartbeat_interval=10, heartbeat_timeout=5) as h:
        client, _ = await h.connect()
        await h.advance(10.5)
        assert len(client.of_type("ping")) == 1
        client.send_json({"type": "pong"})  # asked for: free
        client.send_json({"type": "send", "room": "lobby", "text": "a"})
        client.send_json({"type": "send", "room": "lobby", "text": "b"})
        client.send_json({"type": "pong"})  # not asked for: costs like any frame
        await settle()
        assert [m["text"] for m in client.of_type("message")] == ["a", "b"]
        assert [e["code"] for e in client.of_type("error")] == ["rate_limited"]
        assert h.node.registry.totals.rate_limited == 1


async def test_the_bucket_refills_at_the_rate() -> None:
    async with running(rate=2, burst=2) as h:
        client, _ = await h.connect()
        client.send_json({"type": "send", "room": "lobby", "text": "a"})
        client.send_json({"type": "send", "room": "lobby", "text": "b"})
        client.send_json({"type": "send", "room": "lobby", "text": "c"})
        await settle()
        await h.advance(0.5)
        client.send_json({"type": "send", "room": "lobby", "text": "d"})
        await settle()
        assert [m["text"] for m in client.of_type("message")] == ["a", "b", "d"]
        assert len(client.of_type("error")) == 1


async def test_plain_text_over_the_rate_is_dropped_and_counted() -> None:
    async with running(rate=1, burst=2) as h:
        sender, _ = await h.connect(protocol=None)
        for n in range(3):
            sender.type(str(n))
        await settle()
        assert sender.sent == ["0", "1"]
        assert h.node.registry.totals.rate_limited == 1
        assert sender.closed is None


async def test_caps_per_user_and_per_address_answer_429_and_count_only_live_sessions() -> None:
    async with running(max_sessions_per_user=2, max_sessions_per_ip=3) as h:
        first, _ = await h.connect(user="ann")
        await h.connect(user="ann")
        third, _ = await h.connect(user="ann")
        assert third.rejected is not None
        assert third.rejected[0] == 429
        await h.connect(user="bo")
        fifth, _ = await h.connect(user="cy")
        assert fifth.rejected is not None
        assert fifth.rejected[0] == 429
        other_host, _ = await h.connect(user="cy", host="10.0.0.9")
        assert other_host.accepted
        first.hang_up()
        await settle()
        again, _ = await h.connect(user="ann")
        assert again.accepted
        assert h.node.registry.totals.rejected == {
            "max_sessions_per_user": 1,
            "max_sessions_per_ip": 1,
        }


async def test_connect_returns_the_refused_session_even_while_another_is_live() -> None:
    async with running(max_sessions_per_user=1) as h:
        first, live = await h.connect(user="ann")
        refused, session = await h.connect(user="ann")
        assert first.accepted
        assert refused.rejected is not None
        assert refused.rejected[0] == 429
        assert session is not live
        assert session.user == "ann"
        assert state(session) is SessionState.CLOSED
        assert session.close_reason == "max_sessions_per_user"
        assert state(live) is SessionState.ACTIVE
        assert live.close_reason is None


async def test_a_flood_of_unsolicited_pongs_is_closed_like_any_flood() -> None:
    async with running(rate=2, burst=4) as h:
        client, session = await h.connect()
        for _ in range(100):
            client.send_json({"type": "pong", "pad": list(range(100))})
        await settle()
        assert client.closed == (1008, "too many messages")
        assert session.close_reason == "flooding"


async def test_a_refresh_with_fewer_rooms_leaves_the_rooms_no_longer_allowed() -> None:
    clock = FakeClock()
    async with running(clock=clock, jwt_secret=SECRET) as h:
        client, session = await h.connect(token=token(clock, rooms=["lobby", "games"]))
        client.send_json({"type": "join", "room": "games"})
        client.send_json({"type": "refresh", "token": token(clock, rooms=["games"])})
        client.send_json({"type": "send", "room": "lobby", "text": "x", "id": "s"})
        await settle()
        assert client.of_type("left") == [{"type": "left", "room": "lobby"}]
        assert session.rooms == ["games"]
        error = client.of_type("error")[-1]
        assert (error["code"], error["id"]) == ("not_joined", "s")


async def test_a_handshake_that_breaks_admission_is_refused_500_and_forgotten(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running() as h:

        def broken(room: str) -> None:
            raise OverflowError("boom")

        monkeypatch.setattr(h.node.settings.__class__, "origins", property(broken))
        with caplog.at_level(logging.ERROR, logger="chat"):
            client, session = await h.connect()
        assert client.rejected == (500, "internal error")
        assert len(h.node.registry) == 0
        assert session.close_reason == "internal_error"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert session.id in errors[0].getMessage()
