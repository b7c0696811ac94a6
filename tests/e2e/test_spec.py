"""``GET /asyncapi.json``, and the check of every frame against it that this suite runs
(``tests/e2e/conftest.py``): on, for real sessions, and failing on a frame it does not allow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from tests.asyncapi import FrameInvalid, FrameWatch, load_document
from tests.e2e.conftest import StartServer
from tests.e2e.harness import REPO, JsonClient, open_ws

pytestmark = pytest.mark.anyio


def test_the_served_document_is_the_packaged_one_and_needs_no_token(start: StartServer) -> None:
    server = start({"CHAT_STATUS_TOKEN": "status-token-for-spec", "CHAT_JWT_SECRET": "k" * 32})
    served = server.get("/asyncapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.json() == load_document()
    assert served.content == (REPO / "docs" / "asyncapi.json").read_bytes()
    assert server.get("/status").status_code == 401


async def test_the_frames_of_real_sessions_are_checked(
    start: StartServer, frame_watch: FrameWatch
) -> None:
    server = start()
    before = frame_watch.seen
    received = 0
    async with (
        open_ws(server.ws("/ws/spec?user=ann"), subprotocols=["chat.v1"]) as ann_ws,
        open_ws(server.ws("/ws/spec?user=bob"), subprotocols=["chat.v1.batch"]) as bob_ws,
    ):
        ann, bob = JsonClient(ann_ws), JsonClient(bob_ws)
        await ann.greeted()
        await bob.greeted()
        assert (await ann.recv())["type"] == "presence"
        await ann.send({"type": "send", "room": "spec", "text": "hi", "id": 1})
        await ann.send({"type": "teleport"})
        await ann.send({"type": "ping"})
        await ann.send({"type": "join", "room": "other"})
        await ann.send({"type": "leave", "room": "other"})
        kinds = {(await ann.recv())["type"] for _ in range(6)}
        assert kinds == {"message", "ack", "error", "pong", "joined", "left"}
        assert (await bob.recv())["text"] == "hi"
        received = 2 + 2 + 1 + 6 + 1
    # Every object either client read was checked (and nothing refused).
    assert frame_watch.seen - before >= received
    assert frame_watch.failures == []


async def test_plain_text_frames_are_not_checked(
    start: StartServer, frame_watch: FrameWatch
) -> None:
    server = start()
    before = frame_watch.seen
    async with open_ws(server.ws("/ws/spec-plain")) as ws:
        await ws.send("not json at all")
        assert await ws.recv() == "not json at all"
    assert frame_watch.seen == before


@asynccontextmanager
async def lying_server(frames: list[str]) -> AsyncIterator[str]:
    """A WebSocket server on loopback that selects ``chat.v1``/``chat.v1.batch``, sends
    ``frames`` and closes: the URL to reach it."""

    async def handler(connection: ServerConnection) -> None:
        for frame in frames:
            await connection.send(frame)

    protocols = [Subprotocol("chat.v1"), Subprotocol("chat.v1.batch")]
    async with serve(handler, "127.0.0.1", 0, subprotocols=protocols) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws/lobby"


@pytest.mark.parametrize("protocol", ["chat.v1", "chat.v1.batch"])
async def test_a_frame_the_document_does_not_allow_fails_the_test_that_received_it(
    frame_watch: FrameWatch, protocol: str
) -> None:
    bad = orjson.dumps({"type": "ack", "id": "m-1", "room": "lobby", "seq": 3, "x": 1}).decode()
    good = '{"type":"ping"}'
    async with (
        lying_server([good, f"{good}\n{bad}"]) as url,
        open_ws(url, subprotocols=[protocol]) as ws,
    ):
        assert ws.subprotocol == protocol
        assert await ws.recv() == good
        with pytest.raises(FrameInvalid, match=r"'ack' schema .*Additional properties"):
            await ws.recv()
    # The watch also keeps it, to fail the test even if the error was swallowed; this
    # test expected it, so it takes it back before the fixture looks.
    assert len(frame_watch.failures) == 1
    assert '"x":1' in frame_watch.failures[0]
    frame_watch.failures.clear()


async def test_async_for_is_checked_too(frame_watch: FrameWatch) -> None:
    async with (
        lying_server(['{"type":"pong"}', '{"type":"wink"}']) as url,
        open_ws(url, subprotocols=["chat.v1"]) as ws,
    ):
        seen: list[str | bytes] = []
        with pytest.raises(FrameInvalid, match="no known type"):
            async for frame in ws:
                seen.append(frame)
    assert seen == ['{"type":"pong"}']
    frame_watch.failures.clear()
