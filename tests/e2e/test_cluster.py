"""Many processes and one Redis behave as one chat service; outages lose nothing silently."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import StartServer
from tests.e2e.harness import (
    JsonClient,
    Server,
    json_client,
    messages,
    open_ws,
    start_server,
)
from tests.redis_server import RedisServer, free_port
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


def cluster_env(redis: RedisServer, node: str) -> dict[str, str]:
    return {
        "CHAT_BROKER_URL": redis.url,
        "CHAT_NODE_ID": node,
        "CHAT_RATE": "100000",
        "CHAT_BURST": "100000",
    }


@pytest.fixture
def two_nodes(start: StartServer, own_redis: RedisServer) -> tuple[Server, Server]:
    """``node-a`` and ``node-b``, one process each, on this test's own Redis."""
    return start(cluster_env(own_redis, "node-a")), start(cluster_env(own_redis, "node-b"))


async def send_until_delivered(
    sender: JsonClient, receiver: JsonClient, room: str, within: float
) -> float:
    """Send until ``receiver`` gets one of them; how long that took.

    Gives up (``TimeoutError``) only after ``within`` seconds: callers pass more
    than the bound they assert, so a slow delivery fails their assert, with the time.
    """
    started = time.monotonic()
    n = 0
    async with asyncio.timeout(within):
        while True:
            n += 1
            await sender.send({"type": "send", "room": room, "text": f"probe {n}"})
            try:
                async with asyncio.timeout(0.3):
                    while True:
                        frame = await receiver.recv()
                        if frame["type"] == "message" and frame["text"].startswith("probe"):
                            return time.monotonic() - started
            except TimeoutError:
                continue


async def test_members_on_two_nodes_get_300_messages_in_one_gap_free_order(
    two_nodes: tuple[Server, Server],
) -> None:
    a, b = two_nodes
    async with AsyncExitStack() as stack:
        on_a = [await stack.enter_async_context(json_client(a, "/ws/big")) for _ in range(2)]
        on_b = [await stack.enter_async_context(json_client(b, "/ws/big")) for _ in range(2)]
        everyone = on_a + on_b
        readers = [asyncio.create_task(messages(c, 300)) for c in everyone]

        async def send(client: JsonClient, start_at: int) -> None:
            for n in range(start_at, 300, 2):
                await client.send({"type": "send", "room": "big", "text": f"m{n}", "id": n})

        await asyncio.gather(send(on_a[0], 0), send(on_b[0], 1))
        streams = await asyncio.gather(*readers)
    first = [(m["seq"], m["text"]) for m in streams[0]]
    assert [seq for seq, _ in first] == list(range(1, 301))
    assert sorted(text for _, text in first) == sorted(f"m{n}" for n in range(300))
    for stream in streams[1:]:
        assert [(m["seq"], m["text"]) for m in stream] == first


async def test_presence_and_status_agree_on_both_nodes(
    two_nodes: tuple[Server, Server],
) -> None:
    a, b = two_nodes
    async with json_client(a, "/ws/hall?user=ann") as ann:
        async with json_client(b, "/ws/hall?user=bo") as bo:
            change = await ann.recv_type("presence")
            assert (change["event"], change["user"]) == ("join", "bo")
            assert sorted(m["user"] for m in bo.joined["members"]) == ["ann", "bo"]
            for server in (a, b):

                def counted(server: Server = server) -> bool:
                    nodes = server.json("/status")["nodes"]
                    # Session counts travel with the heartbeats (every 2 s).
                    return {n["node"]: n["sessions"] for n in nodes} == {
                        "node-a": 1,
                        "node-b": 1,
                    }

                assert await eventually(counted, timeout=5)
                status = server.json("/status")
                assert server.json("/status/rooms")["rooms"][0]["users"] == ["ann", "bo"]
                assert status["broker"]["healthy"] is True
                assert "canary_lag_ms" in status["broker"]
        change = await ann.recv_type("presence")
        assert (change["event"], change["user"]) == ("leave", "bo")


async def test_a_killed_node_leaves_every_view_within_15_seconds(
    two_nodes: tuple[Server, Server],
) -> None:
    a, b = two_nodes
    async with json_client(a, "/ws/watch?user=watcher") as watcher:
        ghost_ws = await open_ws(
            b.ws("/ws/watch?user=ghost"), subprotocols=["chat.v1"]
        ).__aenter__()
        await JsonClient(ghost_ws).greeted()
        assert (await watcher.recv_type("presence"))["user"] == "ghost"
        killed = time.monotonic()
        os.killpg(b.process.pid, signal.SIGKILL)
        async with asyncio.timeout(25):  # longer than the bound: the assert below measures
            change = await watcher.recv_type("presence")
        gone_after = time.monotonic() - killed
        assert (change["event"], change["user"]) == ("leave", "ghost")
        assert gone_after < 15, f"the killed node's member left after {gone_after:.1f} s"
        nodes = [n["node"] for n in a.json("/status")["nodes"]]
        assert nodes == ["node-a"]
        assert a.json("/status/rooms")["rooms"][0]["users"] == ["watcher"]
        ghost_ws.transport.abort()


async def outage_behaviour(a: Server, b: Server, cut: Any, restore: Any, seconds: float) -> None:
    """For ``seconds`` of outage: every send refused within 1 s, connections up, the node
    unready; afterwards cross-node delivery resumes without any client reconnecting."""
    async with (
        json_client(a, "/ws/out?user=ann") as ann,
        json_client(b, "/ws/out?user=bo") as bo,
        open_ws(a.ws("/ws/out?user=pat")) as plain,
    ):
        took = await send_until_delivered(bo, ann, "out", within=10)
        assert took < 5, f"cross-node delivery took {took:.1f} s"
        cut()
        began = time.monotonic()
        refusals = 0
        while time.monotonic() - began < seconds:
            sent = time.monotonic()
            await ann.send({"type": "send", "room": "out", "text": "during", "id": refusals})
            async with asyncio.timeout(5):  # longer than the bound: the assert below measures
                frame = await ann.recv_type("error")
            refused_after = time.monotonic() - sent
            assert (frame["code"], frame["id"]) == ("unavailable", refusals)
            assert refused_after < 1.0, f"send refused after {refused_after:.2f} s"
            refusals += 1
            await ann.send({"type": "ping"})
            assert await ann.recv_type("pong") == {"type": "pong"}
            await asyncio.sleep(0.5)
        assert refusals >= seconds
        assert a.get("/readyz").status_code == 503
        assert a.json("/status")["broker"]["healthy"] is False
        # The status API never hangs or fails on the broker: shared fields are null.
        rooms = a.json("/status/rooms")["rooms"]
        assert [(r["room"], r["members"], r["seq"]) for r in rooms] == [("out", 2, None)]
        # A plain-text sender cannot get an error frame: it is closed 1013 instead.
        await plain.send("during")
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    await plain.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
        restore()
        took = await send_until_delivered(bo, ann, "out", within=40)
        assert took < 20, f"cross-node delivery took {took:.1f} s after the restore"
        took = await send_until_delivered(ann, bo, "out", within=10)
        assert took < 5, f"cross-node delivery took {took:.1f} s"
        assert await eventually(lambda: a.get("/readyz").status_code == 200)


async def test_redis_killed_for_10_seconds_then_restarted_loses_no_connection(
    two_nodes: tuple[Server, Server], own_redis: RedisServer
) -> None:
    a, b = two_nodes
    await outage_behaviour(a, b, own_redis.kill, own_redis.start, seconds=10)


async def test_redis_frozen_for_15_seconds_is_detected_and_survived(
    two_nodes: tuple[Server, Server], own_redis: RedisServer
) -> None:
    a, b = two_nodes
    await outage_behaviour(
        a,
        b,
        lambda: own_redis.signal(signal.SIGSTOP),
        lambda: own_redis.signal(signal.SIGCONT),
        seconds=15,
    )


async def test_killing_the_pubsub_connections_makes_both_nodes_resubscribe_within_5_seconds(
    two_nodes: tuple[Server, Server], own_redis: RedisServer
) -> None:
    a, b = two_nodes
    async with (
        json_client(a, "/ws/pubsub?user=ann") as ann,
        json_client(b, "/ws/pubsub?user=bo") as bo,
    ):
        took = await send_until_delivered(bo, ann, "pubsub", within=10)
        assert took < 5, f"cross-node delivery took {took:.1f} s"
        killed = own_redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 2
        took = await send_until_delivered(bo, ann, "pubsub", within=10)
        assert took < 5, f"cross-node delivery took {took:.1f} s"
        took = await send_until_delivered(ann, bo, "pubsub", within=10)
        assert took < 5, f"cross-node delivery took {took:.1f} s"
    reconnects = [s.json("/status")["broker"]["reconnects"] for s in (a, b)]
    assert all(r >= 1 for r in reconnects)


async def test_a_node_started_with_redis_down_becomes_ready_when_redis_appears(
    tmp_path: Any, start: StartServer
) -> None:
    port = free_port()
    redis = RedisServer(tmp_path, port=port)
    env = cluster_env(redis, "node-a")
    # Ready it cannot be: wait for /healthz only, and watch /readyz.
    server = start_server(tmp_path, env, ready_path="/healthz")
    try:
        assert server.get("/healthz").status_code == 200
        assert server.get("/readyz").status_code == 503
        await asyncio.sleep(5)
        assert server.get("/readyz").status_code == 503
        redis.start()
        assert await eventually(lambda: server.get("/readyz").status_code == 200, timeout=10)
        async with json_client(server, "/ws/late") as late:
            await late.send({"type": "send", "room": "late", "text": "works"})
            assert (await late.recv_type("message"))["text"] == "works"
    finally:
        server.stop()
        redis.stop()
    assert "Traceback" not in server.log()


async def test_two_workers_on_redis_behave_as_one_server(
    start: StartServer, own_redis: RedisServer
) -> None:
    server = start(
        {"CHAT_BROKER_URL": own_redis.url, "CHAT_RATE": "1000", "CHAT_BURST": "1000"},
        args=["-w", "2", "-c", "config/hypercorn.toml"],
    )
    # Each worker becomes ready on its own: wait until both say so.
    assert await eventually(lambda: len(server.json("/status")["nodes"]) == 2)
    assert await eventually(
        lambda: all(server.get("/readyz").status_code == 200 for _ in range(20))
    )
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(json_client(server, "/ws/one")) for _ in range(8)
        ]
        assert await eventually(lambda: len(server.json("/status")["nodes"]) == 2)
        readers = [asyncio.create_task(messages(c, 40)) for c in clients]
        for n in range(40):
            await clients[n % 8].send({"type": "send", "room": "one", "text": f"w{n}"})
        streams = await asyncio.gather(*readers)
    first = [(m["seq"], m["text"]) for m in streams[0]]
    assert [seq for seq, _ in first] == list(range(1, 41))
    for stream in streams[1:]:
        assert [(m["seq"], m["text"]) for m in stream] == first


async def acked(client: JsonClient, frame: dict[str, Any], within: float) -> dict[str, Any]:
    """Send ``frame`` until it is acked (``unavailable`` is retried, as a client does)."""
    async with asyncio.timeout(within):
        while True:
            await client.send(frame)
            while True:
                answer = await client.recv()
                if answer["type"] in {"ack", "error"} and answer.get("id") == frame["id"]:
                    break
            if answer["type"] == "ack":
                return answer
            assert answer["code"] == "unavailable", answer
            await asyncio.sleep(0.2)


async def test_a_send_refused_while_redis_froze_is_published_once_however_often_retried(
    two_nodes: tuple[Server, Server], own_redis: RedisServer
) -> None:
    a, b = two_nodes
    send = {"type": "send", "room": "idem", "text": "exactly once", "id": "m-1"}
    async with (
        json_client(a, "/ws/idem?user=ann") as ann,
        json_client(b, "/ws/idem?user=bo") as bo,
    ):
        await send_until_delivered(ann, bo, "idem", within=10)
        own_redis.signal(signal.SIGSTOP)
        try:
            await ann.send(send)
            async with asyncio.timeout(5):
                refusal = await ann.recv_type("error")
        finally:
            own_redis.signal(signal.SIGCONT)
        # The publish reached Redis and runs now that it resumed: the client cannot know.
        assert (refusal["code"], refusal["id"]) == ("unavailable", "m-1")
        assert "may still be published" in refusal["detail"]
        # It retries, from a new session on the other node, then from the first one.
        async with json_client(b, "/ws/idem?user=ann") as ann_on_b:
            first = await acked(ann_on_b, send, within=30)
        again = await acked(ann, send, within=10)
        assert again["seq"] == first["seq"]
        await ann.send({"type": "send", "room": "idem", "text": "marker", "id": "m-2"})
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not seen or seen[-1]["text"] != "marker":
                seen.append(await bo.recv_type("message"))
    copies = [m for m in seen if m["text"] == "exactly once"]
    assert [m["seq"] for m in copies] == [first["seq"]]


async def frames_until_text(client: JsonClient, text: str, within: float) -> list[dict[str, Any]]:
    """Every frame up to and including the ``message`` with ``text``."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while not frames or frames[-1].get("text") != text:
            frames.append(await client.recv())
    return frames


async def test_members_hear_of_a_new_run_before_its_first_message_and_no_false_presence(
    two_nodes: tuple[Server, Server], own_redis: RedisServer
) -> None:
    a, b = two_nodes
    async with (
        json_client(a, "/ws/run?user=ann") as ann,
        json_client(b, "/ws/run?user=bo") as bo,
        json_client(a, "/ws/run?user=cy") as cy,
    ):
        await send_until_delivered(bo, ann, "run", within=10)
        await send_until_delivered(ann, bo, "run", within=10)
        await cy.send({"type": "send", "room": "run", "text": "last of the old run"})
        for client in (ann, bo):
            old = await frames_until_text(client, "last of the old run", within=10)
        own_redis.kill()
        own_redis.start()  # empty: every room starts a new run
        assert await eventually(
            lambda: all(s.get("/readyz").status_code == 200 for s in (a, b)), 20
        )
        await acked(cy, {"type": "send", "room": "run", "text": "first", "id": "n1"}, within=20)
        for client, user in ((ann, "ann"), (bo, "bo")):
            frames = await frames_until_text(client, "first", within=20)
            fresh = [f for f in frames if f["type"] == "joined"]
            assert len(fresh) == 1, frames
            assert fresh[0]["epoch"] != client.joined["epoch"]
            assert fresh[0]["recovered"] is False
            assert frames[-1]["seq"] == fresh[0]["seq"] + 1 == 1
            assert frames.index(fresh[0]) < len(frames) - 1
            # Presence only for what the fresh list did not say, never about oneself.
            known = {m["user"] for m in fresh[0]["members"]}
            after = frames[frames.index(fresh[0]) :]
            changes = [(f["event"], f["user"]) for f in after if f["type"] == "presence"]
            assert all(event == "join" and who not in known for event, who in changes), changes
            assert not [f for f in frames if f["type"] == "presence" and f["user"] == user]
            assert known | {who for _, who in changes} == {"ann", "bo", "cy"}
    assert old[-1]["seq"] > 1
