"""Rooms in depth against the real server: isolation, one order, recovery, presence."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import StartServer
from tests.e2e.harness import JsonClient, Server, json_client, messages, open_ws
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

HISTORY = 50


@pytest.fixture(scope="module")
def server(start_shared: StartServer) -> Server:
    return start_shared(
        {
            "CHAT_HISTORY_SIZE": str(HISTORY),
            "CHAT_MAX_ROOMS_PER_SESSION": "3",
            "CHAT_RATE": "100000",
            "CHAT_BURST": "100000",
        }
    )


async def quiet(client: JsonClient, seconds: float = 0.3) -> list[dict[str, Any]]:
    """Everything received within ``seconds`` (expected: nothing of interest)."""
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                got.append(await client.recv())
    except TimeoutError:
        return got


async def test_two_sessions_in_two_rooms_each_see_only_their_rooms(server: Server) -> None:
    async with (
        json_client(server, "/ws/iso-a") as one,
        json_client(server, "/ws/iso-b") as two,
    ):
        await one.send({"type": "join", "room": "iso-both"})
        await two.send({"type": "join", "room": "iso-both"})
        assert (await one.recv_type("joined"))["room"] == "iso-both"
        assert (await two.recv_type("joined"))["room"] == "iso-both"
        await one.send({"type": "send", "room": "iso-a", "text": "a only"})
        await two.send({"type": "send", "room": "iso-b", "text": "b only"})
        await one.send({"type": "send", "room": "iso-both", "text": "both"})
        got_one = await messages(one, 2)
        got_two = await messages(two, 2)
        assert sorted((m["room"], m["text"]) for m in got_one) == [
            ("iso-a", "a only"),
            ("iso-both", "both"),
        ]
        assert sorted((m["room"], m["text"]) for m in got_two) == [
            ("iso-b", "b only"),
            ("iso-both", "both"),
        ]
        assert not [f for f in await quiet(one) if f["type"] == "message"]


async def test_500_messages_from_3_senders_arrive_everywhere_in_one_gap_free_order(
    server: Server,
) -> None:
    total, senders_count = 500, 3
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(json_client(server, "/ws/order"))
            for _ in range(senders_count + 2)
        ]
        senders = clients[:senders_count]
        receivers = [asyncio.create_task(messages(c, total, "order")) for c in clients]

        async def send(index: int, client: JsonClient) -> None:
            for n in range(index, total, senders_count):
                await client.send({"type": "send", "room": "order", "text": f"m{n}", "id": n})

        await asyncio.gather(*(send(i, c) for i, c in enumerate(senders)))
        streams = await asyncio.gather(*receivers)
    first = [(m["seq"], m["text"]) for m in streams[0]]
    start = first[0][0]
    assert [seq for seq, _ in first] == list(range(start, start + total))
    assert sorted(text for _, text in first) == sorted(f"m{n}" for n in range(total))
    for stream in streams[1:]:
        assert [(m["seq"], m["text"]) for m in stream] == first
    for index in range(senders_count):
        own = [m["id"] for m in streams[0] if m["id"] % senders_count == index]
        assert own == list(range(index, total, senders_count))


async def miss_20(sender: JsonClient) -> None:
    for n in range(20):
        await sender.send({"type": "send", "room": "recover", "text": f"missed {n}"})
    await messages(sender, 20, "recover")


async def recover(server: Server, since: int, epoch: str, *, on_url: bool) -> int:
    """Reconnect with ``since`` (in the URL with ``epoch``, or with a ``join`` without it);
    check the replay; return the last seq."""
    path = f"/ws/recover?since={since}&epoch={epoch}" if on_url else "/ws/recover-lobby"
    async with open_ws(server.ws(path), subprotocols=["chat.v1"], max_queue=None) as ws:
        back = JsonClient(ws)
        await back.recv_type("welcome")
        if not on_url:
            await back.recv_type("joined")
            await back.send({"type": "join", "room": "recover", "since": since})
        joined = await back.recv_type("joined")
        assert (joined["room"], joined["seq"], joined["recovered"]) == (
            "recover",
            since + 20,
            True,
        )
        replay = await messages(back, 20, "recover")
        assert [m["text"] for m in replay] == [f"missed {n}" for n in range(20)]
        assert [m["seq"] for m in replay] == list(range(since + 1, since + 21))
        assert not [f for f in await quiet(back) if f["type"] == "message"]
        return int(replay[-1]["seq"])


async def test_a_client_that_missed_20_messages_recovers_exactly_them(server: Server) -> None:
    async with json_client(server, "/ws/recover") as sender:
        async with json_client(server, "/ws/recover") as reader:
            await sender.send({"type": "send", "room": "recover", "text": "seen"})
            last_seen = (await messages(reader, 1))[0]["seq"]
        await messages(sender, 1)
        epoch = sender.joined["epoch"]
        await miss_20(sender)
        last_seen = await recover(server, last_seen, epoch, on_url=True)
        await miss_20(sender)
        await recover(server, last_seen, epoch, on_url=False)


async def test_a_gap_larger_than_the_history_is_reported_not_recovered(server: Server) -> None:
    async with json_client(server, "/ws/gap") as sender:
        for n in range(HISTORY + 10):
            await sender.send({"type": "send", "room": "gap", "text": str(n)})
        await messages(sender, HISTORY + 10)
        async with open_ws(server.ws("/ws/gap?since=1"), subprotocols=["chat.v1"]) as ws:
            back = JsonClient(ws)
            _, joined = await back.greeted()
            assert (joined["seq"], joined["recovered"]) == (HISTORY + 10, False)
            assert not [f for f in await quiet(back) if f["type"] == "message"]


async def presence_events(client: JsonClient) -> list[tuple[str, str]]:
    return [(f["event"], f["user"]) for f in await quiet(client) if f["type"] == "presence"]


async def test_presence_joins_and_leaves_once_per_user_with_two_sessions(server: Server) -> None:
    async with json_client(server, "/ws/presence?user=watcher") as watcher:
        async with json_client(server, "/ws/presence?user=ann"):
            assert await presence_events(watcher) == [("join", "ann")]
            async with json_client(server, "/ws/presence?user=ann"):
                room = server.json("/status/rooms?room=presence")["rooms"][0]
                assert (room["members"], room["users"]) == (3, ["watcher", "ann"])
            # Her second session came and went: nobody was told.
            assert await presence_events(watcher) == []
        assert await presence_events(watcher) == [("leave", "ann")]


async def test_joining_beyond_the_room_limit_is_forbidden_and_joins_nothing(
    server: Server,
) -> None:
    async with json_client(server, "/ws/limit-1") as client:
        for room in ["limit-2", "limit-3"]:
            await client.send({"type": "join", "room": room})
            assert (await client.recv_type("joined"))["room"] == room
        await client.send({"type": "join", "room": "limit-4", "id": "j4"})
        error = await client.recv_type("error")
        assert (error["code"], error["id"]) == ("forbidden", "j4")
        await client.send({"type": "send", "room": "limit-4", "text": "x", "id": "s4"})
        assert (await client.recv_type("error"))["code"] == "not_joined"
        sessions = server.json("/status/sessions?room=limit-1")["sessions"]
        assert sessions[0]["rooms"] == ["limit-1", "limit-2", "limit-3"]


async def test_a_plain_text_and_a_json_member_talk_to_each_other(server: Server) -> None:
    async with (
        open_ws(server.ws("/ws/mixed?user=pat")) as plain,
        json_client(server, "/ws/mixed?user=jo") as jo,
    ):
        await plain.send("hello from text")
        heard = (await messages(jo, 1))[0]
        assert (heard["user"], heard["text"]) == ("pat", "hello from text")
        await jo.send({"type": "send", "room": "mixed", "text": "hello from json"})
        async with asyncio.timeout(5):
            assert await plain.recv() == "hello from text"
            assert await plain.recv() == "hello from json"


async def test_status_rooms_shows_members_users_and_the_latest_seq(server: Server) -> None:
    async with (
        json_client(server, "/ws/stat?user=ann") as ann,
        json_client(server, "/ws/stat?user=bo"),
    ):
        for n in range(3):
            await ann.send({"type": "send", "room": "stat", "text": str(n)})
        await messages(ann, 3)

        def seen() -> list[dict[str, Any]]:
            rooms: list[dict[str, Any]] = server.json("/status/rooms?room=stat")["rooms"]
            return rooms if rooms and rooms[0]["seq"] == 3 else []

        assert await eventually(seen) == [
            {"room": "stat", "members": 2, "users": ["ann", "bo"], "seq": 3}
        ]


async def test_a_batched_replay_of_wide_characters_keeps_every_frame_within_64_kib(
    server: Server,
) -> None:
    wide = "\U0001f600" * 10_000  # 40,000 bytes in UTF-8, 10,000 characters
    async with json_client(server, "/ws/wide") as sender:
        for n in range(6):
            await sender.send({"type": "send", "room": "wide", "text": f"{n}{wide}"})
        await messages(sender, 6)
        epoch = sender.joined["epoch"]
    path = server.ws(f"/ws/wide?since=0&epoch={epoch}")
    async with open_ws(path, subprotocols=["chat.v1.batch"], max_size=None) as ws:
        frames: list[str] = []
        objects: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len([o for o in objects if o["type"] == "message"]) < 6:
                raw = await ws.recv()
                assert isinstance(raw, str)
                frames.append(raw)
                objects.extend(orjson.loads(line) for line in raw.split("\n"))
    assert [o["text"][0] for o in objects if o["type"] == "message"] == list("012345")
    assert max(len(frame.encode()) for frame in frames) <= 65536
