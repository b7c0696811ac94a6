"""Clean shutdown under the plain Hypercorn CLI (also run under Python 3.12 and 3.13 by .ci/run)."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import StartServer
from tests.e2e.harness import JsonClient, Server, open_ws, raw_handshake, refused
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

DRAIN = 1.0


@dataclass
class Seen:
    """What one client saw of the shutdown."""

    code: int | None
    closed_after: float
    last_frame: Any


async def watch(ws: Any, signalled: list[float]) -> Seen:
    frames: list[Any] = []
    try:
        async with asyncio.timeout(10):
            while True:
                frames.append(await ws.recv())
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    return Seen(code, time.monotonic() - signalled[0], frames[-1] if frames else None)


@dataclass
class Shutdown:
    """What the clients saw after the signal, and how the process ended."""

    seen: list[Seen]
    status: int
    exited_after: float


async def signal_and_watch(server: Server, clients: list[Any], signum: int) -> Shutdown:
    """Send ``signum`` to the main PID; wait for every client's close and the exit."""
    signalled = [0.0]
    watchers = [asyncio.create_task(watch(ws, signalled)) for ws in clients]
    signalled[0] = time.monotonic()
    server.signal(signum)
    seen = await asyncio.gather(*watchers)
    status = await asyncio.to_thread(server.wait, 10)
    return Shutdown(list(seen), status, time.monotonic() - signalled[0])


async def open_sessions(server: Server, count: int) -> list[Any]:
    """``count`` sessions, half ``chat.v1`` (greeted: past their join before the signal)."""
    clients = []
    for n in range(count):
        protocols = ["chat.v1"] if n % 2 else None
        ws = await open_ws(server.ws(f"/ws/room-{n % 4}"), subprotocols=protocols).__aenter__()
        if protocols:
            await JsonClient(ws).greeted()
        clients.append(ws)
    return clients


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("workers", [[], ["-w", "2"]], ids=["default-workers", "w2"])
async def test_signal_closes_20_sessions_with_1001_and_exits_0_in_time(
    start: StartServer, signum: int, workers: list[str]
) -> None:
    server = start({"CHAT_DRAIN_TIMEOUT": str(DRAIN)}, args=workers)
    outcome = await signal_and_watch(server, await open_sessions(server, 20), signum)
    assert [s.code for s in outcome.seen] == [1001] * 20
    assert max(s.closed_after for s in outcome.seen) < 1.0
    for n, s in enumerate(outcome.seen):
        if n % 2:  # JSON sessions get bye before the close
            bye = orjson.loads(s.last_frame)
            assert (bye["type"], bye["reason"], bye["reconnect"]) == ("bye", "shutdown", True)
            assert 1000 <= bye["retry_after_ms"] < 5000
    assert outcome.status == 0
    assert outcome.exited_after < DRAIN + 1


@pytest.mark.parametrize("workers", [[], ["-w", "2"]], ids=["default-workers", "w2"])
async def test_a_client_that_never_answers_is_cut_at_the_drain_timeout(
    start: StartServer, workers: list[str]
) -> None:
    server = start({"CHAT_DRAIN_TIMEOUT": str(DRAIN)}, args=workers)
    deaf = raw_handshake(server.port, "/ws/deaf")
    polite = await open_ws(server.ws("/ws/deaf"), subprotocols=["chat.v1"]).__aenter__()
    await JsonClient(polite).greeted()
    signalled = [time.monotonic()]
    server.signal(signal.SIGTERM)
    seen = await watch(polite, signalled)
    assert seen.code == 1001
    assert seen.closed_after < 1.0
    # While the deaf client holds the drain open, readiness and new handshakes get 503.
    assert await eventually(lambda: httpx.get(server.http("/readyz"), timeout=2).status_code == 503)
    assert (await refused(server.ws("/ws/late"))).status_code == 503
    status = await asyncio.to_thread(server.wait, DRAIN + 5)
    exited_after = time.monotonic() - signalled[0]
    assert status == 0
    assert DRAIN <= exited_after < DRAIN + 1
    # The deaf client was sent the close frame (1001) before it was cut.
    deaf.settimeout(1)
    data = deaf.recv(4096)
    assert data[:1] == b"\x88"
    assert int.from_bytes(data[2:4], "big") == 1001
    deaf.close()


async def test_shutdown_with_the_recommended_config_does_not_wait_for_ping_ticks(
    start: StartServer,
) -> None:
    server = start({"CHAT_DRAIN_TIMEOUT": str(DRAIN)}, args=["-c", "config/hypercorn.toml"])
    outcome = await signal_and_watch(server, await open_sessions(server, 6), signal.SIGTERM)
    assert [s.code for s in outcome.seen] == [1001] * 6
    assert outcome.status == 0
    assert outcome.exited_after < DRAIN + 1
