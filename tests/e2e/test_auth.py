"""Authentication, authorization and abuse limits against the real server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed

from chat.status import ADMIN_ONLY
from tests.e2e.conftest import StartServer, keep_secret
from tests.e2e.harness import JsonClient, Server, open_ws, refused
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = "e2e-hs256-secret-" + "s" * 32
OTHER_SECRET = "another-hs256-secret-" + "o" * 32
AUDIENCE = "chat-e2e"
ISSUER = "https://issuer.example"
ORIGIN = "https://chat.example.com"
LEEWAY = 2


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(
    sub: str | None = "alice",
    *,
    ttl: float = 300,
    key: Any = SECRET,
    algorithm: str = "HS256",
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A token (remembered as a secret) with aud/iss set for the server, unless dropped."""
    now = time.time()
    payload: dict[str, Any] = {"sub": sub, "exp": now + ttl, "aud": AUDIENCE, "iss": ISSUER}
    payload.update(claims)
    for name in drop:
        payload.pop(name, None)
    return keep_secret(jwt.encode(payload, key, algorithm=algorithm))


ADMIN = ""


@pytest.fixture(scope="module")
def server(start_shared: StartServer) -> Server:
    global ADMIN
    ADMIN = mint("ops", admin=True, ttl=3600)
    return start_shared(
        {
            "CHAT_JWT_SECRET": SECRET,
            "CHAT_JWT_AUDIENCE": AUDIENCE,
            "CHAT_JWT_ISSUER": ISSUER,
            "CHAT_JWT_LEEWAY": str(LEEWAY),
            "CHAT_ALLOWED_ORIGINS": ORIGIN,
        }
    )


def admin_json(server: Server, path: str) -> Any:
    response = server.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
    response.raise_for_status()
    return response.json()


def none_token() -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(
        json.dumps(
            {"sub": "alice", "exp": time.time() + 300, "aud": AUDIENCE, "iss": ISSUER}
        ).encode()
    )
    return keep_secret(f"{header}.{payload}.")


def tampered() -> str:
    header, _, signature = mint("alice").split(".")
    payload = b64(
        json.dumps(
            {"sub": "admin", "exp": time.time() + 300, "aud": AUDIENCE, "iss": ISSUER}
        ).encode()
    )
    return keep_secret(f"{header}.{payload}.{signature}")


REFUSED: dict[str, Callable[[], str | None]] = {
    "missing": lambda: None,
    "garbage": lambda: keep_secret("not-a-jwt-at-all"),
    "alg-none": none_token,
    "other-key": lambda: mint(key=OTHER_SECRET),
    "tampered": tampered,
    "expired": lambda: mint(ttl=-(LEEWAY + 30)),
    "nbf-future": lambda: mint(nbf=time.time() + 600),
    "no-exp": lambda: mint(drop=("exp",)),
    "no-sub": lambda: mint(None, drop=("sub",)),
    "wrong-aud": lambda: mint(aud="someone-else"),
    "wrong-iss": lambda: mint(iss="https://evil.example"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_bad_tokens_are_refused_with_401_and_create_no_session(
    server: Server, case: str
) -> None:
    token = REFUSED[case]()
    before = admin_json(server, "/status")["totals"]
    path = "/ws/lobby" if token is None else f"/ws/lobby?token={token}"
    response = await refused(server.ws(path), subprotocols=["chat.v1"])
    assert response.status_code == 401
    if token is not None:
        assert token.encode() not in response.body
    after = admin_json(server, "/status")["totals"]
    assert after["accepted"] == before["accepted"]
    assert sum(after["rejected"].values()) == sum(before["rejected"].values()) + 1


async def test_a_token_expired_within_the_leeway_is_accepted_then_expires_with_1008(
    server: Server,
) -> None:
    token = mint("late", ttl=-1)  # expired a second ago; the leeway is 2 s
    async with open_ws(server.ws(f"/ws/lobby?token={token}"), subprotocols=["chat.v1"]) as ws:
        client = JsonClient(ws)
        welcome, _ = await client.greeted()
        assert welcome["user"] == "late"
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                bye = await client.recv_type("bye")
                await client.recv()
        assert (bye["reason"], bye["reconnect"]) == ("token_expired", False)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008


async def test_refresh_extends_a_session_and_a_bad_refresh_changes_nothing(
    server: Server,
) -> None:
    token = mint("renewer", ttl=0.5)
    async with open_ws(server.ws(f"/ws/lobby?token={token}"), subprotocols=["chat.v1"]) as ws:
        client = JsonClient(ws)
        await client.greeted()
        await client.send({"type": "refresh", "token": mint("someone-else", ttl=60), "id": "r0"})
        error = await client.recv_type("error")
        assert (error["code"], error["id"]) == ("forbidden", "r0")
        await client.send({"type": "refresh", "token": mint("renewer", ttl=-600), "id": "r1"})
        error = await client.recv_type("error")
        assert (error["code"], error["id"]) == ("bad_request", "r1")
        await client.send({"type": "refresh", "token": mint("renewer", ttl=60), "id": "r2"})
        await asyncio.sleep(LEEWAY + 1.5)  # past the first token's expiry and leeway
        await client.send({"type": "ping"})
        assert await client.recv_type("pong") == {"type": "pong"}


@pytest.mark.parametrize("carrier", ["header", "query", "subprotocol"])
async def test_each_token_carrier_is_accepted_and_the_bearer_protocol_never_echoed(
    server: Server, carrier: str
) -> None:
    token = mint("carrier")
    path, headers, protocols = "/ws/lobby", {}, ["chat.v1"]
    if carrier == "header":
        headers = {"Authorization": f"Bearer {token}"}
    elif carrier == "query":
        path += f"?token={token}"
    else:
        protocols.append(f"bearer.{token}")
    async with open_ws(server.ws(path), subprotocols=protocols, additional_headers=headers) as ws:
        assert ws.subprotocol == "chat.v1"
        assert token not in str(ws.response.headers)
        welcome, _ = await JsonClient(ws).greeted()
        assert welcome["user"] == "carrier"


async def test_a_bearer_subprotocol_alone_gives_a_plain_text_session(server: Server) -> None:
    token = mint("plain")
    async with open_ws(server.ws("/ws/lobby"), subprotocols=[f"bearer.{token}"]) as ws:
        assert ws.subprotocol is None
        await ws.send("hi")
        assert await ws.recv() == "hi"


async def test_rooms_outside_the_claim_are_refused_at_the_url_and_on_join(server: Server) -> None:
    token = mint("limited", rooms=["lobby", "game-*"])
    assert (await refused(server.ws(f"/ws/secret?token={token}"))).status_code == 403
    async with open_ws(server.ws(f"/ws/lobby?token={token}"), subprotocols=["chat.v1"]) as ws:
        client = JsonClient(ws)
        await client.greeted()
        await client.send({"type": "join", "room": "secret", "id": "j1"})
        error = await client.recv_type("error")
        assert (error["code"], error["id"]) == ("forbidden", "j1")
        await client.send({"type": "join", "room": "game-7"})
        assert (await client.recv_type("joined"))["room"] == "game-7"


def test_status_and_metrics_need_an_admin_token(server: Server) -> None:
    user = mint("nobody-special")
    for path in ["/status", "/status/sessions", "/status/rooms", "/metrics"]:
        missing = server.get(path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == "Bearer"
        invalid = server.get(path, headers={"Authorization": "Bearer not-a-jwt"})
        assert invalid.status_code == 401, path
        # A valid token that is not an admin's: known, and not allowed.
        as_user = server.get(path, headers={"Authorization": f"Bearer {user}"})
        assert as_user.status_code == 403, path
        assert as_user.json() == {"detail": ADMIN_ONLY}
        allowed = server.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
        assert allowed.status_code == 200, path
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").status_code == 200


HOSTILE_ORIGINS = [
    "https://chat.example.com.evil.example",
    "http://chat.example.com",
    "https://chat.example.com:8443",
    "null",
    "https://evil.example",
    "https://chat.example.co",
]


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
async def test_hostile_origins_are_refused_with_403(server: Server, origin: str) -> None:
    response = await refused(
        server.ws(f"/ws/lobby?token={mint('browser')}"), additional_headers={"Origin": origin}
    )
    assert response.status_code == 403


@pytest.mark.parametrize("origin", [ORIGIN, None])
async def test_the_allowed_origin_and_a_missing_one_are_accepted(
    server: Server, origin: str | None
) -> None:
    headers = {"Origin": origin} if origin else {}
    async with open_ws(server.ws(f"/ws?token={mint('browser')}"), additional_headers=headers) as ws:
        await ws.send("x")
        assert await ws.recv() == "Message text was: x"


async def test_a_flooder_is_limited_then_closed_and_nobody_else_suffers(
    start: StartServer,
) -> None:
    rate, burst = 20, 40
    server = start({"CHAT_RATE": str(rate), "CHAT_BURST": str(burst)})
    async with (
        open_ws(server.ws("/ws/flood?user=flooder"), subprotocols=["chat.v1"]) as flooder_ws,
        open_ws(
            server.ws("/ws/flood?user=member"), subprotocols=["chat.v1"], max_queue=None
        ) as member_ws,
        open_ws(server.ws("/ws/calm?user=bystander"), subprotocols=["chat.v1"]) as bystander_ws,
    ):
        flooder, member, bystander = (
            JsonClient(flooder_ws),
            JsonClient(member_ws),
            JsonClient(bystander_ws),
        )
        for client in (flooder, member, bystander):
            await client.greeted()
        received: list[dict[str, Any]] = []
        round_trips: list[float] = []
        stop = asyncio.Event()

        async def listen() -> None:
            while not stop.is_set():
                frame = await member.recv()
                if frame["type"] == "message" and frame["user"] == "flooder":
                    received.append(frame)

        async def ping() -> None:
            while not stop.is_set():
                started = time.monotonic()
                await bystander.send({"type": "ping"})
                await bystander.recv_type("pong")
                round_trips.append(time.monotonic() - started)
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(listen()), asyncio.create_task(ping())]
        started = time.monotonic()
        frames: list[dict[str, Any]] = []
        close_code = None
        try:
            for n in range(2000):
                await flooder_ws.send(json.dumps({"type": "send", "room": "flood", "text": str(n)}))
            async with asyncio.timeout(10):
                while True:
                    frames.append(await flooder.recv())
        except ConnectionClosed as closed:
            close_code = closed.rcvd.code if closed.rcvd else None
        assert close_code == 1008
        elapsed = time.monotonic() - started
        # The bystander keeps its round trips going after the flood, as before it.
        after_close = len(round_trips)
        assert await eventually(lambda: len(round_trips) >= after_close + 5)
        stop.set()
        for task in tasks:
            task.cancel()
    codes = [f["code"] for f in frames if f["type"] == "error"]
    assert codes
    assert set(codes) == {"rate_limited"}
    assert [f["reason"] for f in frames if f["type"] == "bye"] == ["policy"]
    assert 0 < len(received) <= burst + rate * elapsed
    assert round_trips
    assert max(round_trips) < 0.5
    sessions = server.json("/status/sessions?user=flooder")["sessions"]
    assert (sessions[0]["close_code"], sessions[0]["close_reason"]) == (1008, "flooding")


async def test_session_caps_refuse_with_429_and_503_and_spare_existing_sessions(
    start: StartServer,
) -> None:
    per_user = start({"CHAT_MAX_SESSIONS_PER_USER": "2", "CHAT_MAX_SESSIONS": "3"})
    per_ip = start({"CHAT_MAX_SESSIONS_PER_IP": "2"})

    async with (
        open_ws(per_user.ws("/ws?user=ann")) as ann_1,
        open_ws(per_user.ws("/ws?user=ann")) as ann_2,
    ):
        assert (await refused(per_user.ws("/ws?user=ann"))).status_code == 429
        async with open_ws(per_user.ws("/ws?user=bo")) as bo:
            assert (await refused(per_user.ws("/ws?user=cy"))).status_code == 503
            for ws in (ann_1, ann_2, bo):
                await ws.send("still here")
                assert await ws.recv() == "Message text was: still here"
    rejected = per_user.json("/status")["totals"]["rejected"]
    assert rejected == {"max_sessions_per_user": 1, "max_sessions": 1}
    async with open_ws(per_ip.ws("/ws?user=a")) as a, open_ws(per_ip.ws("/ws?user=b")):
        assert (await refused(per_ip.ws("/ws?user=c"))).status_code == 429
        await a.send("ok")
        assert await a.recv() == "Message text was: ok"
    assert per_ip.json("/status")["totals"]["rejected"] == {"max_sessions_per_ip": 1}


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


async def test_an_rs256_server_refuses_an_hs256_token_signed_with_its_public_key(
    start: StartServer, rsa_keys: tuple[Any, str]
) -> None:
    private, public_pem = rsa_keys
    server = start({"CHAT_JWT_PUBLIC_KEY": public_pem})
    good = mint("rsa-user", key=private, algorithm="RS256", drop=("aud", "iss"))
    async with open_ws(server.ws(f"/ws?token={good}")) as ws:
        await ws.send("x")
        assert await ws.recv() == "Message text was: x"
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "mallory", "exp": time.time() + 300}).encode())
    signed = f"{header}.{payload}".encode()
    signature = b64(hmac.new(public_pem.encode(), signed, hashlib.sha256).digest())
    forged = keep_secret(f"{header}.{payload}.{signature}")
    assert (await refused(server.ws(f"/ws?token={forged}"))).status_code == 401


async def test_the_shipped_access_log_never_shows_a_token(start: StartServer) -> None:
    server = start(
        {"CHAT_JWT_SECRET": SECRET, "CHAT_JWT_AUDIENCE": AUDIENCE, "CHAT_JWT_ISSUER": ISSUER},
        args=["-c", "config/hypercorn.toml"],
    )
    token = mint("logged")
    await asyncio.to_thread(httpx.get, server.http(f"/healthz?token={token}"), timeout=5)
    assert await eventually(lambda: "GET /healthz" in server.log())
    assert token not in server.log()
