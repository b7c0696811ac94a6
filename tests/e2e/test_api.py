"""The server API against the real server, as members see it; and across two nodes on Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from chat.status import ADMIN_ONLY
from tests.e2e.conftest import StartServer, keep_secret
from tests.e2e.harness import Server, json_client, messages, open_ws
from tests.redis_server import RedisServer
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

HISTORY_SIZE = 5
SECRET = keep_secret("an-hs256-secret-for-the-api-tests-0123456789")
STATUS_TOKEN = keep_secret("api-status-token-0123456789")


@pytest.fixture(scope="module")
def server(start_shared: StartServer) -> Server:
    """One open server (no credentials configured: the API is open, like /status)."""
    return start_shared({"CHAT_NODE_ID": "api-node", "CHAT_HISTORY_SIZE": str(HISTORY_SIZE)})


async def post(server: Server, path: str, body: Any, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.post(server.http(path), json=body, headers=headers)


async def get(server: Server, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(server.http(path), headers=headers)


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code the server sent, once the connection is over."""
    try:
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


# -- auth against the real server -------------------------------------------------------------


async def test_the_api_needs_an_admin_token_when_credentials_are_configured(
    start: StartServer,
) -> None:
    guarded = start({"CHAT_JWT_SECRET": SECRET, "CHAT_STATUS_TOKEN": STATUS_TOKEN})
    user = keep_secret(jwt.encode({"sub": "u", "exp": time.time() + 300}, SECRET, "HS256"))
    admin = keep_secret(
        jwt.encode({"sub": "ops", "exp": time.time() + 300, "admin": True}, SECRET, "HS256")
    )
    body = {"user": "system", "text": "hi"}
    for token, status in [(None, 401), ("nope", 401), (user, 403)]:
        refused = await post(guarded, "/api/rooms/lobby/messages", body, token)
        assert (refused.status_code, refused.json()) == (status, {"detail": ADMIN_ONLY})
        assert (await get(guarded, "/api/rooms/lobby/presence", token)).status_code == status
    for token in (admin, STATUS_TOKEN):
        assert (await post(guarded, "/api/rooms/lobby/messages", body, token)).status_code == 200
    assert (await get(guarded, "/openapi.json")).status_code == 200  # the docs are open


# -- publish --------------------------------------------------------------------------------


async def test_a_published_message_reaches_json_and_plain_text_members_like_a_send(
    server: Server,
) -> None:
    async with (
        json_client(server, "/ws/news?user=ann") as ann,
        open_ws(server.ws("/ws/news?user=pat")) as pat,
    ):
        body = {"user": "system", "text": "deploy at 5", "id": "n-1"}
        response = await post(server, "/api/rooms/news/messages", body)
        assert response.status_code == 200
        published = response.json()
        assert (published["room"], published["id"], published["duplicate"]) == (
            "news",
            "n-1",
            False,
        )
        [message] = await messages(ann, 1)
        assert message == {
            "type": "message",
            "room": "news",
            "seq": published["seq"],
            "id": "n-1",
            "user": "system",
            "text": "deploy at 5",
            "ts": message["ts"],
        }
        assert published["epoch"] == ann.joined["epoch"]
        assert await asyncio.wait_for(pat.recv(), 5) == "deploy at 5"


async def test_a_retried_publish_with_the_same_id_is_published_once(server: Server) -> None:
    async with json_client(server, "/ws/retries?user=ann") as ann:
        body = {"user": "system", "text": "once", "id": 42}
        first = (await post(server, "/api/rooms/retries/messages", body)).json()
        again = (await post(server, "/api/rooms/retries/messages", body)).json()
        assert again == {**first, "duplicate": True}
        after = {"user": "system", "text": "after"}
        assert (await post(server, "/api/rooms/retries/messages", after)).status_code == 200
        received = await messages(ann, 2)
        assert [(m["seq"], m["text"]) for m in received] == [
            (first["seq"], "once"),
            (first["seq"] + 1, "after"),
        ]


# -- history and presence -------------------------------------------------------------------


async def test_history_says_when_it_no_longer_covers_since(server: Server) -> None:
    for n in range(8):
        body = {"user": "system", "text": f"m{n}"}
        assert (await post(server, "/api/rooms/archive/messages", body)).status_code == 200
    old = (await get(server, "/api/rooms/archive/history?since=0")).json()
    assert (old["seq"], old["complete"], old["more"]) == (8, False, False)
    assert [m["seq"] for m in old["messages"]] == [4, 5, 6, 7, 8]  # the last HISTORY_SIZE
    covered = (await get(server, "/api/rooms/archive/history?since=3&limit=2")).json()
    assert (covered["complete"], covered["more"]) == (True, True)
    assert [m["text"] for m in covered["messages"]] == ["m3", "m4"]
    other_run = await get(server, "/api/rooms/archive/history?since=3&epoch=another")
    assert other_run.json()["complete"] is False


async def test_a_room_without_a_run_reads_as_empty_and_complete(server: Server) -> None:
    empty = (await get(server, "/api/rooms/untouched/history")).json()
    assert empty == {
        "room": "untouched",
        "epoch": None,
        "seq": 0,
        "since": 0,
        "complete": True,
        "more": False,
        "messages": [],
    }


async def test_presence_counts_each_users_sessions(server: Server) -> None:
    async with (
        json_client(server, "/ws/hall?user=ann"),
        open_ws(server.ws("/ws/hall?user=ann")),
        json_client(server, "/ws/hall?user=bo"),
    ):
        # The plain-text session's join may still be in flight.
        found = await eventually(
            lambda: (p := server.json("/api/rooms/hall/presence"))["sessions"] == 3 and p
        )
        assert found == {
            "room": "hall",
            "users": [{"user": "ann", "sessions": 2}, {"user": "bo", "sessions": 1}],
            "sessions": 3,
        }


# -- disconnect -----------------------------------------------------------------------------


async def test_a_disconnected_session_gets_bye_with_the_reason_then_1008(server: Server) -> None:
    async with (
        json_client(server, "/ws/kick?user=spammer") as spammer,
        json_client(server, "/ws/kick?user=spammer") as other,
    ):
        target = spammer.welcome["session"]
        response = await post(
            server, f"/api/sessions/{target}/disconnect", {"reason": "spam", "reconnect": False}
        )
        assert response.json() == {"closed": 1, "nodes": {"api-node": 1}, "unanswered": []}
        bye = await spammer.recv_type("bye")
        assert bye == {
            "type": "bye",
            "reason": "disconnected",
            "detail": "spam",
            "reconnect": False,
            "retry_after_ms": 0,
        }
        assert await closed_with(spammer.ws) == 1008
        # The user's other session goes on.
        await other.send({"type": "send", "room": "kick", "text": "still here", "id": "s"})
        assert (await other.recv_type("ack"))["id"] == "s"


async def test_disconnecting_a_user_closes_every_session_1013_when_it_may_come_back(
    server: Server,
) -> None:
    async with (
        json_client(server, "/ws/move?user=mover") as json_session,
        open_ws(server.ws("/ws/move?user=mover")) as plain,
        json_client(server, "/ws/move?user=stayer") as stayer,
    ):
        body = {"reason": "moving you to another server", "reconnect": True}
        response = await post(server, "/api/users/mover/disconnect", body)
        assert response.json()["closed"] == 2
        bye = await json_session.recv_type("bye")
        assert (bye["reason"], bye["detail"], bye["reconnect"]) == (
            "disconnected",
            "moving you to another server",
            True,
        )
        assert 1000 <= bye["retry_after_ms"] < 5000
        assert await closed_with(json_session.ws) == 1013
        assert await closed_with(plain) == 1013  # plain text: the close alone
        await stayer.send({"type": "send", "room": "move", "text": "still here", "id": 1})
        assert (await stayer.recv_type("ack"))["id"] == 1


# -- two nodes on one Redis -------------------------------------------------------------------


@pytest.fixture
def two_nodes(start: StartServer, own_redis: RedisServer) -> tuple[Server, Server]:
    def env(node: str) -> dict[str, str]:
        return {"CHAT_BROKER_URL": own_redis.url, "CHAT_NODE_ID": node}

    return start(env("node-a")), start(env("node-b"))


async def test_the_api_of_one_node_reaches_sessions_on_another(
    two_nodes: tuple[Server, Server],
) -> None:
    a, b = two_nodes
    async with (
        json_client(b, "/ws/cluster?user=far") as far,
        json_client(b, "/ws/cluster?user=watcher") as watcher,
        json_client(a, "/ws/cluster?user=far") as near,
    ):
        # A publish through A reaches a member on B.
        body = {"user": "system", "text": "across", "id": "x-1"}
        published = (await post(a, "/api/rooms/cluster/messages", body)).json()
        [message] = await messages(watcher, 1)
        assert (message["seq"], message["text"], message["user"]) == (
            published["seq"],
            "across",
            "system",
        )
        # Presence, counted over both nodes, from either.
        for server in (a, b):
            presence = (await get(server, "/api/rooms/cluster/presence")).json()
            assert presence["users"] == [
                {"user": "far", "sessions": 2},
                {"user": "watcher", "sessions": 1},
            ]
        # A disconnect sent to A closes the session B holds.
        target = far.welcome["session"]
        response = await post(a, f"/api/sessions/{target}/disconnect", {"reason": "bye, far"})
        assert response.json() == {
            "closed": 1,
            "nodes": {"node-a": 0, "node-b": 1},
            "unanswered": [],
        }
        bye = await far.recv_type("bye")
        assert (bye["reason"], bye["detail"]) == ("disconnected", "bye, far")
        assert await closed_with(far.ws) == 1008
        # Every session of a user, wherever it is.
        async with json_client(b, "/ws/cluster?user=far") as again:
            response = await post(a, "/api/users/far/disconnect", {"reconnect": True})
            assert response.json() == {
                "closed": 2,
                "nodes": {"node-a": 1, "node-b": 1},
                "unanswered": [],
            }
            assert await closed_with(again.ws) == 1013
            assert await closed_with(near.ws) == 1013
