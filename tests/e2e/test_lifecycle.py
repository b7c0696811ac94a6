"""Session life against the real server: idle, heartbeats, slow consumers, vanished peers."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import StartServer
from tests.e2e.harness import (
    JsonClient,
    Server,
    client_frame,
    open_ws,
    raw_handshake,
    read_frame,
)
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def timers(start_shared: StartServer) -> Server:
    """Short timers: ping every 0.5 s, 0.5 s to answer, idle after 0.5 s, closed after 2 s."""
    return start_shared(
        {
            "CHAT_HEARTBEAT_INTERVAL": "0.5",
            "CHAT_HEARTBEAT_TIMEOUT": "0.5",
            "CHAT_IDLE_AFTER": "0.5",
            "CHAT_IDLE_TIMEOUT": "2",
        }
    )


def session_state(server: Server, session_id: str) -> str:
    return str(server.json(f"/status/sessions/{session_id}")["state"])


async def wait_for_state(server: Server, session_id: str, state: str, timeout: float = 3) -> None:
    assert await eventually(lambda: session_state(server, session_id) == state, timeout), state


async def test_a_json_session_goes_active_idle_active(timers: Server) -> None:
    async with open_ws(timers.ws("/ws/lobby"), subprotocols=["chat.v1"]) as ws:
        client = JsonClient(ws)
        welcome, _ = await client.greeted()
        session_id = welcome["session"]
        assert session_state(timers, session_id) == "active"
        # Answer pings while waiting: heartbeats keep it alive, not active.
        pinger = asyncio.create_task(client.recv_type("never"))
        await wait_for_state(timers, session_id, "idle")
        pinger.cancel()
        await client.send({"type": "send", "room": "lobby", "text": "back"})
        await wait_for_state(timers, session_id, "active", timeout=1)
        detail = timers.json(f"/status/sessions/{session_id}")
        states = [entry["state"] for entry in detail["history"]]
        assert states[:4] == ["connecting", "active", "idle", "active"]
        listed = timers.json("/status/sessions?state=active&room=lobby")["sessions"]
        assert session_id in [s["id"] for s in listed]


async def test_a_client_that_stops_answering_pings_is_closed_4001(timers: Server) -> None:
    async with open_ws(timers.ws("/ws/lobby"), subprotocols=["chat.v1"]) as ws:
        client = JsonClient(ws, answer_pings=False)
        welcome, _ = await client.greeted()
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    frame = await client.recv()
                    assert frame["type"] in {"ping", "presence"}
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001
        assert 0.9 <= time.monotonic() - started < 3
    detail = timers.json(f"/status/sessions/{welcome['session']}")
    assert (detail["close_code"], detail["close_reason"], detail["closed_by"]) == (
        4001,
        "heartbeat_timeout",
        "server",
    )


async def test_an_idle_session_is_closed_4500_after_the_idle_timeout(timers: Server) -> None:
    async with open_ws(timers.ws("/ws/lobby"), subprotocols=["chat.v1"]) as ws:
        client = JsonClient(ws)
        welcome, _ = await client.greeted()
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                bye = await client.recv_type("bye")
                await client.recv()
        assert bye == {
            "type": "bye",
            "reason": "idle_timeout",
            "reconnect": False,
            "retry_after_ms": 0,
        }
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500
        assert 1.9 <= time.monotonic() - started < 4
    history = timers.json(f"/status/sessions/{welcome['session']}")["history"]
    # The close begins while idle (the session shows idle and closing), then ends.
    assert [(entry["state"], entry["reason"]) for entry in history][2:] == [
        ("idle", "no activity for 0.5s"),
        ("idle", "closing: 4500 idle_timeout"),
        ("closed", "4500 idle_timeout by server"),
    ]
    assert [entry["state"] for entry in history][:2] == ["connecting", "active"]


async def test_plain_text_sessions_idle_out_too(timers: Server) -> None:
    async with open_ws(timers.ws("/ws/quiet")) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500


def stuck_socket(port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer, for a client that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def drain(ws: Any, count: int, into: list[str]) -> None:
    async with asyncio.timeout(60):
        while len(into) < count:
            into.append(await ws.recv())


async def test_a_member_that_never_reads_is_closed_1013_while_the_others_get_everything(
    start: StartServer,
) -> None:
    server = start(
        {
            "CHAT_SEND_QUEUE": "50",
            "CHAT_HISTORY_SIZE": "10",
            "CHAT_DRAIN_TIMEOUT": "1",
            "CHAT_RATE": "100000",
            "CHAT_BURST": "100000",
        }
    )
    count, payload = 400, "x" * 32000
    async with open_ws(
        server.ws("/ws/busy"), sock=stuck_socket(server.port), max_queue=1, close_timeout=0.5
    ):
        readers = [await open_ws(server.ws("/ws/busy")).__aenter__() for _ in range(3)]
        received: list[list[str]] = [[] for _ in readers]
        sender = readers[0]
        tasks = [
            asyncio.create_task(drain(r, count, got))
            for r, got in zip(readers, received, strict=True)
        ]
        for n in range(count):
            await sender.send(f"{n:05d}{payload}")
        await asyncio.gather(*tasks)
        for got in received:
            assert [m[:5] for m in got] == [f"{n:05d}" for n in range(count)]

        def stuck_closed() -> dict[str, Any]:
            found = server.json("/status/sessions?state=closed&room=busy")["sessions"]
            return found[0] if found else {}

        closed = await eventually(stuck_closed, timeout=5)
        assert (closed["close_code"], closed["close_reason"]) == (1013, "slow_consumer")
        for reader in readers:
            await reader.close()


def reset(ws: Any) -> None:
    """Vanish: close the TCP connection with a RST, no close frame."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


async def test_members_that_reset_mid_stream_do_not_disturb_anyone(start: StartServer) -> None:
    server = start({"CHAT_RATE": "100000", "CHAT_BURST": "100000"})
    stayers = [await open_ws(server.ws("/ws/storm")).__aenter__() for _ in range(5)]
    vanishers = [await open_ws(server.ws("/ws/storm")).__aenter__() for _ in range(15)]
    senders = stayers[:2]
    per_sender = 300
    expected = {f"s{index}-{n}" for index in range(len(senders)) for n in range(per_sender)}
    received: list[list[str]] = [[] for _ in stayers]
    readers = [
        asyncio.create_task(drain(ws, len(expected), got))
        for ws, got in zip(stayers, received, strict=True)
    ]

    async def send_all(index: int) -> None:
        for n in range(per_sender):
            await senders[index].send(f"s{index}-{n}")
            if n % 20 == 0:
                await asyncio.sleep(0.01)

    async def vanish_midway() -> None:
        await asyncio.sleep(0.15)
        for ws in vanishers:
            reset(ws)
        vanished_at.append(time.monotonic())

    vanished_at: list[float] = []
    await asyncio.gather(send_all(0), send_all(1), vanish_midway())
    await asyncio.gather(*readers)
    for got in received:
        assert set(got) == expected
        assert len(got) == len(expected)
        for index in range(len(senders)):
            own = [m for m in got if m.startswith(f"s{index}-")]
            assert own == [f"s{index}-{n}" for n in range(per_sender)]

    def all_vanished_closed() -> bool:
        closed = server.json("/status/sessions?state=closed&room=storm")["sessions"]
        return len(closed) == 15

    assert await eventually(all_vanished_closed, timeout=2)
    assert time.monotonic() - vanished_at[0] < 2.5
    closed = server.json("/status/sessions?state=closed&room=storm")["sessions"]
    assert {s["close_reason"] for s in closed} == {"connection_lost"}
    status = server.json("/status")
    assert status["sessions"]["active"] + status["sessions"]["idle"] == 5
    for ws in senders:
        await ws.send("still here")
    for ws in stayers:
        await ws.close()


async def test_a_session_whose_peer_ignores_the_close_shows_closing_until_it_is_cut(
    start: StartServer,
) -> None:
    server = start({"CHAT_DRAIN_TIMEOUT": "1.5"})
    sock = raw_handshake(server.port, "/ws/closing")
    try:
        sock.sendall(client_frame(b"\x00", opcode=0x2))  # binary: the server closes 1003
        opcode, payload = read_frame(sock)
        assert (opcode, int.from_bytes(payload[:2], "big")) == (0x8, 1003)
        # The peer never answers: until the drain timeout the session is closing.
        session = server.json("/status/sessions?room=closing")["sessions"][0]
        assert (session["state"], session["closing"]) == ("active", True)
        assert server.json("/status")["sessions"]["active"] >= 1

        def cut() -> dict[str, Any]:
            found = server.json(f"/status/sessions/{session['id']}")
            return found if found["state"] == "closed" else {}

        closed = await eventually(cut, timeout=5)
        assert (closed["closing"], closed["close_code"]) == (False, 1003)
    finally:
        sock.close()
