"""chat behind a real nginx running the shipped deploy/nginx/chat.conf.

Every address here is on loopback: the test clients bind their own source
address (127.0.0.0/8 is all loopback on Linux), so nginx's ``$remote_addr``
is the client's, while hypercorn's TCP peer is always nginx at 127.0.0.1.
Without ``CHAT_TRUSTED_PROXIES`` every session would show 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import StartServer
from tests.e2e.harness import JsonClient, Server, open_ws, refused
from tests.nginx_server import Nginx
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

#: nginx connects from 127.0.0.1; 127.0.0.4 plays a trusted load balancer in front of it.
TRUSTED = "127.0.0.1, 127.0.0.4"
ENV = {"CHAT_TRUSTED_PROXIES": TRUSTED, "CHAT_MAX_SESSIONS_PER_IP": "1"}
CONFIG = ["-c", "config/hypercorn.toml"]


@pytest.fixture(scope="module")
def server(start_shared: StartServer) -> Server:
    return start_shared(ENV, CONFIG)


@pytest.fixture(scope="module")
def nginx(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    proxy = Nginx(tmp_path_factory.mktemp("nginx"), server.port)
    proxy.start()
    yield proxy
    proxy.stop()


def connect(url: str, source: str, *, headers: dict[str, str] | None = None) -> Any:
    """A ``chat.v1`` connection from loopback address ``source``."""
    return open_ws(
        url,
        subprotocols=["chat.v1"],
        local_addr=(source, 0),
        additional_headers=headers,
        max_queue=None,
    )


def remote_of(server: Server, user: str) -> str | None:
    """The ``remote`` status shows for ``user``'s live session."""
    sessions = server.json(f"/status/sessions?user={user}&state=active")["sessions"]
    return sessions[0]["remote"] if sessions else None


async def test_two_clients_chat_through_nginx(nginx: Nginx) -> None:
    async with (
        connect(nginx.ws("/ws/lobby?user=ann"), "127.0.0.10") as ann_ws,
        connect(nginx.ws("/ws/lobby?user=bob"), "127.0.0.11") as bob_ws,
    ):
        ann, bob = JsonClient(ann_ws), JsonClient(bob_ws)
        await ann.greeted()
        await bob.greeted()
        await ann.send({"type": "send", "room": "lobby", "text": "hi bob", "id": "m1"})
        async with asyncio.timeout(5):
            ack = await ann.recv_type("ack")
            got = await bob.recv_type("message")
        assert ack["id"] == "m1"
        assert (got["user"], got["text"], got["seq"]) == ("ann", "hi bob", ack["seq"])


@pytest.mark.parametrize(
    ("source", "forged", "seen"),
    [
        # nginx appends the client's address to a forged header: the forgery is never read.
        ("127.0.0.2", None, "127.0.0.2"),
        ("127.0.0.3", "203.0.113.7", "127.0.0.3"),
        # A trusted load balancer in front of nginx: its client is the client.
        ("127.0.0.4", "203.0.113.7", "203.0.113.7"),
    ],
)
async def test_status_shows_the_address_nginx_forwarded(
    nginx: Nginx, server: Server, source: str, forged: str | None, seen: str
) -> None:
    user = f"via-{source.replace('.', '-')}"
    headers = {"X-Forwarded-For": forged} if forged else None
    async with connect(nginx.ws(f"/ws/lobby?user={user}"), source, headers=headers) as ws:
        await JsonClient(ws).greeted()
        assert remote_of(server, user) == seen
    # Hypercorn's access log shows it too (port 0: nginx forwarded none).
    assert f'{seen}:0 "GET /ws/lobby 1.1" 101' in server.log()


async def test_a_forged_header_sent_straight_to_hypercorn_is_not_believed(server: Server) -> None:
    headers = {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9"}
    async with connect(server.ws("/ws/lobby?user=direct"), "127.0.0.5", headers=headers) as ws:
        await JsonClient(ws).greeted()
        remote = remote_of(server, "direct")
    assert remote is not None and remote.startswith("127.0.0.5:")


async def test_the_per_address_cap_counts_each_forwarded_client(nginx: Nginx) -> None:
    async with connect(nginx.ws("/ws/lobby?user=cap-a"), "127.0.0.20") as first:
        await JsonClient(first).greeted()
        # The same client again: over CHAT_MAX_SESSIONS_PER_IP=1, refused through nginx.
        response = await refused(
            nginx.ws("/ws/lobby?user=cap-b"), subprotocols=["chat.v1"], local_addr=("127.0.0.20", 0)
        )
        assert response.status_code == 429
        assert b"at most 1 sessions per address" in response.body
        # Another client through the same nginx is its own address, not nginx's.
        async with connect(nginx.ws("/ws/lobby?user=cap-c"), "127.0.0.21") as other:
            await JsonClient(other).greeted()


async def test_shutdown_is_seen_cleanly_through_nginx(start: StartServer, tmp_path: Path) -> None:
    server = start(ENV, CONFIG)
    proxy = Nginx(tmp_path / "nginx", server.port)
    proxy.start()
    try:
        async with connect(proxy.ws("/ws/lobby?user=leaving"), "127.0.0.30") as ws:
            client = JsonClient(ws)
            await client.greeted()
            await eventually(lambda: remote_of(server, "leaving") == "127.0.0.30")
            server.signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                bye = await client.recv_type("bye")
                with pytest.raises(ConnectionClosed) as closed:
                    await client.recv()
        assert (bye["reason"], bye["reconnect"]) == ("shutdown", True)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        assert await asyncio.to_thread(server.wait, 10) == 0
    finally:
        proxy.stop()
