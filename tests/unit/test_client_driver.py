"""The client driver's connection loop: when it naps and when a frame wakes it (no server).

These reach into the driver's loop (``_nap``, ``_read``): what they check,
a nap that does not fail and wake-ups a thousand clients can afford, is not
visible through the public API until a process is busy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from chat.client import Client
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio

URL = "ws://a.test/ws/lobby"


class BusyClock:
    """Real sleeps, but every reading of the time is a millisecond later than the last:
    a process so busy that time passes between any two lines."""

    def __init__(self) -> None:
        self._now = 1000.0

    def now(self) -> float:
        self._now += 0.001
        return self._now

    def time(self) -> float:
        return 1_767_225_600.0 + self._now

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)  # raises for a negative delay, as the system clock's does


class Frames:
    """A connection that yields ``frames`` and then is closed by the server."""

    def __init__(self, frames: list[dict[str, Any] | str]) -> None:
        self._frames: Iterator[dict[str, Any] | str] = iter(frames)

    async def recv(self) -> str:
        await anyio.lowlevel.checkpoint()
        for frame in self._frames:
            return frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        raise ConnectionClosed(None, None)


WELCOME = {
    "type": "welcome",
    "session": "s1",
    "user": "alice",
    "node": "n1",
    "heartbeat": {"interval": 25, "timeout": 10},
    "limits": {"rate": 20, "burst": 40},
}


@asynccontextmanager
async def unused(client: Client) -> AsyncIterator[Client]:
    """``client``, never entered: its event streams closed at the end all the same."""
    try:
        with anyio.fail_after(2):
            yield client
    finally:
        client._events_in.close()
        client._events_out.close()


@asynccontextmanager
async def opened(clock: FakeClock) -> AsyncIterator[Client]:
    """A client whose handshake was just accepted, its loop napping until the welcome's deadline."""
    async with unused(Client(URL, user="alice", clock=clock)) as client:
        core = client._core
        core.start(clock.now())
        assert core.attempt(clock.now()) is not None
        core.opened(clock.now())
        client._napping_until = core.deadline() or 0.0
        yield client


async def read(client: Client, connection: Frames) -> None:
    async with anyio.create_task_group() as group:
        await client._read(connection, group)  # type: ignore[arg-type]


async def test_a_nap_whose_deadline_passes_as_it_begins_returns_instead_of_failing() -> None:
    clock = BusyClock()
    async with unused(Client(URL, user="alice", clock=clock)) as client:
        # Not yet passed when first read, passed when read again a moment later.
        await client._nap(clock.now() + 0.0015)


async def test_a_nap_ends_at_its_deadline_or_when_woken() -> None:
    clock = FakeClock()
    async with unused(Client(URL, user="alice", clock=clock)) as client:
        async with anyio.create_task_group() as group:
            group.start_soon(client._nap, clock.now() + 5.0)
            await clock.advance(5.0)
        async with anyio.create_task_group() as group:
            group.start_soon(client._nap, None)
            await anyio.lowlevel.checkpoint()
            client._wake.set()
        assert not client._wake.is_set()  # taken by the nap it ended


async def test_frames_that_only_push_the_deadline_later_do_not_wake_the_connection_loop() -> None:
    clock = FakeClock()
    presence = {"type": "presence", "room": "lobby", "event": "join", "user": "bob"}
    async with opened(clock) as client:
        await read(client, Frames([WELCOME, {"type": "ping"}, presence]))
        assert not client._wake.is_set()


async def test_a_frame_that_ends_the_connection_wakes_the_connection_loop() -> None:
    clock = FakeClock()
    async with opened(clock) as client:
        await read(client, Frames([WELCOME, "not json"]))
        assert client._core.close_request == "the server sent an invalid frame"
        assert client._wake.is_set()


async def test_a_frame_that_brings_the_deadline_sooner_wakes_the_connection_loop() -> None:
    clock = FakeClock()
    async with opened(clock) as client:
        client._napping_until = clock.now() + 1000.0  # a nap longer than the welcome's deadline
        await read(client, Frames([{"type": "ping"}]))  # no welcome yet: its deadline stands
        assert client._wake.is_set()
