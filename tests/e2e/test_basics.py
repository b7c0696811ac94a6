"""The tutorial's behaviour, the JSON protocol and bad input, against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import StartServer
from tests.e2e.harness import (
    REPO,
    JsonClient,
    Server,
    client_frame,
    open_ws,
    raw_handshake,
    read_frame,
    refused,
)
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

LIMIT = 1024


@pytest.fixture(scope="module")
def server(start_shared: StartServer) -> Server:
    return start_shared({"CHAT_MAX_MESSAGE_BYTES": str(LIMIT)})


async def close_code_after(ws: object, frame: str | bytes) -> int | None:
    """Send ``frame`` and read until the server closes; the close code it sent."""
    await ws.send(frame)  # type: ignore[attr-defined]
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_root_says_hello(server: Server) -> None:
    assert server.json("/") == {"message": "Hello World"}


async def test_echo(server: Server) -> None:
    async with open_ws(server.ws("/ws")) as ws:
        for text in ["hello", "", "ünïcödé ✓"]:
            await ws.send(text)
            assert await ws.recv() == f"Message text was: {text}"


async def test_a_room_of_three_plain_text_clients_each_receive_every_message(
    server: Server,
) -> None:
    async with (
        open_ws(server.ws("/ws/trio")) as a,
        open_ws(server.ws("/ws/trio")) as b,
        open_ws(server.ws("/ws/trio")) as c,
        open_ws(server.ws("/ws/other")) as outsider,
    ):
        clients = [a, b, c]

        def all_in() -> bool:
            rooms = server.json("/status/rooms?room=trio")["rooms"]
            return bool(rooms) and rooms[0]["members"] == 3

        assert await eventually(all_in)
        expected = []
        for index, client in enumerate(clients):
            for n in range(5):
                text = f"from {index} #{n}"
                expected.append(text)
                await client.send(text)
        streams = []
        for client in clients:
            async with asyncio.timeout(5):
                streams.append([await client.recv() for _ in expected])
        # Every member, the senders included, gets every message, in one room order.
        assert sorted(streams[0]) == sorted(expected)
        assert streams[1] == streams[0]
        assert streams[2] == streams[0]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await outsider.recv()


async def test_json_session_is_welcomed_then_gets_its_message_and_ack(server: Server) -> None:
    async with open_ws(server.ws("/ws/lobby?user=alice"), subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"
        client = JsonClient(ws)
        welcome, joined = await client.greeted()
        assert welcome["user"] == "alice"
        assert set(welcome) >= {"session", "user", "node", "heartbeat", "limits"}
        assert welcome["limits"]["max_message_bytes"] == LIMIT
        assert joined["members"] == [{"user": "alice"}]
        await client.send({"type": "send", "room": "lobby", "text": "hi", "id": "m-1"})
        frames = [await client.recv(), await client.recv()]
        message = next(f for f in frames if f["type"] == "message")
        ack = next(f for f in frames if f["type"] == "ack")
        assert (message["text"], message["user"], message["id"], message["seq"]) == (
            "hi",
            "alice",
            "m-1",
            1,
        )
        assert ack == {"type": "ack", "id": "m-1", "room": "lobby", "seq": 1}
        await client.send({"type": "ping"})
        assert await client.recv() == {"type": "pong"}


@pytest.mark.parametrize(
    "path",
    ["/ws/a/b", "/ws/" + "x" * 65, "/ws/caf%C3%A9", "/ws/", "/ws/sp%20ace", "/ws/semi;colon"],
)
async def test_bad_room_ids_are_refused_with_400_before_accept(server: Server, path: str) -> None:
    response = await refused(server.ws(path))
    assert response.status_code == 400
    assert b"room id" in response.body


@pytest.mark.parametrize(
    ("path", "subprotocols"),
    [("/ws", None), ("/ws/lobby", None), ("/ws/lobby", ["chat.v1"])],
)
async def test_binary_frames_close_1003(
    server: Server, path: str, subprotocols: list[str] | None
) -> None:
    async with open_ws(server.ws(path), subprotocols=subprotocols) as ws:
        assert await close_code_after(ws, b"\x00binary") == 1003


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("a" * LIMIT, None),
        ("a" * (LIMIT + 1), 1009),
        ("é" * (LIMIT // 2 + 1), 1009),  # fewer characters than the limit, more bytes
        ("a" * (LIMIT * 64), 1009),
    ],
)
async def test_messages_over_the_limit_close_1009(
    server: Server, text: str, code: int | None
) -> None:
    def closed_1009() -> dict[str, dict[str, object]]:
        """The closed sessions (of every test so far) closed 1009, by id."""
        sessions = server.json("/status/sessions?state=closed&limit=10000")["sessions"]
        return {s["id"]: s for s in sessions if s["close_code"] == 1009}

    before = closed_1009()
    async with open_ws(server.ws("/ws")) as ws:
        if code is None:
            await ws.send(text)
            assert await ws.recv() == f"Message text was: {text}"
        else:
            assert await close_code_after(ws, text) == code
    if code is not None:
        # This session's close, not an earlier case's: wait for one more 1009.
        assert await eventually(lambda: len(closed_1009()) > len(before))
        new = [s for id_, s in closed_1009().items() if id_ not in before]
        assert len(new) == 1, new
        assert new[0]["close_reason"] == "message_too_big"


INVALID_FRAMES = [
    "{not json",
    "NaN",
    '{"type": "send", "room": "lobby", "text": NaN}',
    '{"type": "send", "room": "lobby", "text": Infinity}',
    '{"type": "send", "room": "lobby", "text": "\\ud800"}',
    '{"type": "send", "room": "lobby", "text": "x", "extra": ' + "[" * 40 + "]" * 40 + "}",
    "[" * 1000,
    "[1, 2]",
    '"just a string"',
    '{"room": "lobby", "text": "no type"}',
    '{"type": 42}',
    '{"type": "send", "room": "lobby", "text": 42}',
    '{"type": "send", "room": 7, "text": "x"}',
    '{"type": "send", "room": "lobby", "text": "x", "id": true}',
    '{"type": "join", "room": "lobby", "since": -1}',
]


async def test_invalid_json_gets_an_error_and_never_reaches_another_member(
    server: Server,
) -> None:
    async with (
        open_ws(server.ws("/ws/lobby"), subprotocols=["chat.v1"]) as bad_ws,
        open_ws(server.ws("/ws/lobby"), subprotocols=["chat.v1"]) as other_ws,
        open_ws(server.ws("/ws/lobby")) as plain,
    ):
        bad, other = JsonClient(bad_ws), JsonClient(other_ws)
        await bad.greeted()
        await other.greeted()
        for raw in [*INVALID_FRAMES, '{"type": "teleport"}']:
            await bad_ws.send(raw)
            error = await bad.recv_type("error")
            assert error["code"] == ("unknown_type" if "teleport" in raw else "bad_request")
        # The session goes on, and only the valid message reaches the others.
        await bad.send({"type": "send", "room": "lobby", "text": "valid"})
        assert (await other.recv_type("message"))["text"] == "valid"
        assert await plain.recv() == "valid"
    sessions = server.json("/status/sessions?room=lobby&limit=10000")["sessions"]
    assert 1011 not in {s["close_code"] for s in sessions}


async def test_permessage_deflate_is_not_negotiated_by_default(server: Server) -> None:
    async with open_ws(server.ws("/ws"), compression="deflate") as ws:
        assert ws.response.headers.get("sec-websocket-extensions") is None
        await ws.send("x")
        assert await ws.recv() == "Message text was: x"


def rss_kib(server: Server) -> int:
    """Resident memory of every process of the server, in KiB."""
    total = 0
    pids = [server.process.pid]
    children = subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
    )
    pids += [int(pid) for pid in children.stdout.split()]
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def test_compression_when_enabled_never_inflates_past_the_limit(start: StartServer) -> None:
    server = start({"CHAT_WS_COMPRESSION": "true", "CHAT_MAX_MESSAGE_BYTES": "65536"})
    async with open_ws(server.ws("/ws"), compression="deflate") as ws:
        assert "permessage-deflate" in ws.response.headers["sec-websocket-extensions"]
        await ws.send("small")
        assert await ws.recv() == "Message text was: small"
    before = rss_kib(server)
    bomb = "\0" * (20 * 1024 * 1024)  # 20 MiB of zeros: about 20 KB on the wire

    async def detonate() -> int | None:
        async with open_ws(server.ws("/ws"), compression="deflate", max_size=None) as ws:
            return await close_code_after(ws, bomb)

    codes = await asyncio.gather(*(detonate() for _ in range(10)))
    assert codes == [1009] * 10
    grown = rss_kib(server) - before
    assert grown < 30 * 1024, f"server grew {grown} KiB"
    assert server.json("/status")["totals"]["closed_by_reason"]["message_too_big"] == 10


@pytest.mark.parametrize("compression", [False, True])
async def test_room_messages_of_every_frame_length_arrive_intact(
    start: StartServer, compression: bool
) -> None:
    # The server writes room frames itself without compression and through
    # wsproto with it; 125/126 and 65535/65536 bytes are where the length forms change.
    server = start(
        {"CHAT_WS_COMPRESSION": str(compression).lower(), "CHAT_MAX_MESSAGE_BYTES": "131072"}
    )
    options = {"compression": "deflate" if compression else None, "max_size": None}
    texts = ["", "a", "b" * 125, "ü" * 63, "c" * 65535, "d" * 65536, "✓" * 40000]
    async with (
        open_ws(server.ws("/ws/sizes"), **options) as plain,
        open_ws(server.ws("/ws/sizes"), subprotocols=["chat.v1.batch"], **options) as batch,
    ):
        extensions = plain.response.headers.get("sec-websocket-extensions", "")
        assert ("permessage-deflate" in extensions) is compression
        member = JsonClient(batch)
        await member.greeted()
        for text in texts:
            await plain.send(text)
        async with asyncio.timeout(10):
            assert [await plain.recv() for _ in texts] == texts
            received = [(await member.recv_type("message"))["text"] for _ in texts]
        assert received == texts


@pytest.mark.parametrize(
    ("variable", "value", "secret"),
    [
        ("CHAT_HEARTBEAT_INTERVAL", "soon", None),
        ("CHAT_BROKER_URL", "kafka://user:pw@localhost:9092", "pw@"),
    ],
)
def test_a_bad_setting_stops_the_server_with_a_message_naming_it(
    variable: str, value: str, secret: str | None
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hypercorn", "-w", "0", "-b", "127.0.0.1:1", "main:app"],
        cwd=REPO,
        env={variable: value, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    if secret:
        assert secret not in result.stderr


def test_the_recommended_config_file_serves(start: StartServer) -> None:
    server = start(args=["-c", "config/hypercorn.toml"])
    assert server.json("/healthz") == {"status": "ok"}
    assert server.json("/readyz")["status"] == "ready"
    # The shipped access log never shows query strings (tokens may travel there).
    httpx.get(server.http("/healthz?token=secret-in-query"), timeout=5)
    assert "secret-in-query" not in server.log()
    assert '"GET /healthz' in server.log()


async def test_a_client_that_ignores_1009_and_streams_on_is_cut_and_memory_stays_flat(
    start: StartServer,
) -> None:
    server = start({"CHAT_MAX_MESSAGE_BYTES": "65536"})
    before = rss_kib(server)
    sock = raw_handshake(server.port, "/ws/flood")
    sent = 0
    try:
        sock.sendall(client_frame(b"a" * 70_000))
        chunk = client_frame(b"b" * (1 << 20))
        while sent < 64 << 20:  # at most 64 MiB, however the server answers
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server dropped us: what it should do
    finally:
        sock.close()
    assert sent < 16 << 20, f"the server took {sent >> 20} MiB after 1009"

    def closed() -> dict[str, object]:
        found = server.json("/status/sessions?room=flood")["sessions"]
        return found[0] if found and found[0]["state"] == "closed" else {}

    session = await eventually(closed, timeout=2)
    assert (session["close_code"], session["close_reason"]) == (1009, "message_too_big")
    assert rss_kib(server) - before < 20 * 1024


async def test_echo_never_selects_a_subprotocol(server: Server) -> None:
    async with open_ws(server.ws("/ws"), subprotocols=["chat.v1.batch", "chat.v1"]) as ws:
        assert ws.subprotocol is None
        await ws.send('{"type": "pong"}')
        assert await ws.recv() == 'Message text was: {"type": "pong"}'


@pytest.mark.parametrize("since", ["-1", "abc", "1.5", "9" * 5000, "²"])
async def test_a_bad_since_is_refused_with_400(server: Server, since: str) -> None:
    assert (await refused(server.ws(f"/ws/lobby?since={since}"))).status_code == 400


def test_the_first_protocol_ping_comes_one_interval_after_the_connection_opened(
    start: StartServer,
) -> None:
    server = start(args=["--websocket-ping-interval", "1"])
    sock = raw_handshake(server.port, "/ws/pings")
    opened = time.monotonic()
    try:
        opcode, _ = read_frame(sock)
        first = time.monotonic() - opened
        assert opcode == 0x9
        opcode, _ = read_frame(sock)
        second = time.monotonic() - opened
        assert opcode == 0x9
    finally:
        sock.close()
    assert 0.9 <= first < 2.0
    assert 1.9 <= second < 3.0


@pytest.mark.parametrize("path", ["/ws", "/ws/lobby", "/ws/lobby?since=3"])
def test_a_plain_get_of_a_websocket_route_gets_426_with_a_hint(server: Server, path: str) -> None:
    response = server.get(path)
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert "WebSocket" in response.json()["detail"]
    assert "\n" not in response.json()["detail"]


async def test_a_binary_message_is_refused_at_its_first_frame(start: StartServer) -> None:
    # The limit would let a 4 MiB message through: only its kind refuses it.
    server = start({"CHAT_MAX_MESSAGE_BYTES": str(8 << 20)})
    sock = raw_handshake(server.port, "/ws/binary")
    try:
        sent = time.monotonic()
        sock.sendall(client_frame(b"\x00" * 64, opcode=0x2, fin=False))
        opcode, payload = read_frame(sock, timeout=5)
        answered = time.monotonic() - sent
        assert (opcode, int.from_bytes(payload[:2], "big")) == (0x8, 1003)
        # The rest of a 4 MiB message streams on in 64-byte frames; none of it is kept.
        rest = client_frame(b"\x01" * 64, opcode=0x0, fin=False) * 1024
        with contextlib.suppress(OSError):  # the server may cut us once it gave up
            for _ in range(64):
                sock.sendall(rest)
    finally:
        sock.close()
    assert answered < 1.0

    def closed() -> dict[str, object]:
        found = server.json("/status/sessions?room=binary")["sessions"]
        return found[0] if found and found[0]["state"] == "closed" else {}

    session = await eventually(closed)
    assert (session["close_code"], session["close_reason"]) == (1003, "binary_frame")
