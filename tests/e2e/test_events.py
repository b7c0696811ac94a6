"""``GET /status/events`` against the real server: admin only, a hello with the trend,
summaries, and each changed session pushed as it changes; and ``/status/sessions``
paged with ``offset``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import orjson
import pytest

from tests.e2e.conftest import StartServer, keep_secret
from tests.e2e.harness import json_client

pytestmark = pytest.mark.anyio

TOKEN = "events-status-token-" + "t" * 24


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """``(event, data)`` of a server-sent event stream; comments skipped."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            yield name, orjson.loads(data)
            name, data = "message", ""


async def test_the_event_stream_pushes_a_session_as_it_appears_and_closes(
    start: StartServer,
) -> None:
    server = start({"CHAT_STATUS_TOKEN": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=server.http(""), timeout=10) as http:
        assert (await http.get("/status/events")).status_code == 401
        async with http.stream("GET", "/status/events", headers=auth) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response)
            async with asyncio.timeout(15):
                name, hello = await anext(stream)
                assert name == "hello" and isinstance(hello["trend"], list)
                name, summary = await anext(stream)
                assert name == "summary"
                assert set(summary["sample"]["sessions"]) == {
                    "connecting",
                    "active",
                    "idle",
                    "closed",
                }
                async with json_client(server, "/ws/lobby?user=gina") as gina:
                    session = gina.welcome["session"]
                    seen: dict[str, str] = {}
                    while seen.get(session) != "active":
                        name, data = await anext(stream)
                        if name == "sessions":
                            seen.update({v["id"]: v["state"] for v in data["sessions"]})
                while seen.get(session) != "closed":
                    name, data = await anext(stream)
                    if name == "sessions":
                        for view in data["sessions"]:
                            seen[view["id"]] = view["state"]
                            if view["state"] == "closed":
                                assert view["closed_by"] == "client"


async def test_status_sessions_pages_with_offset(start: StartServer) -> None:
    server = start()
    async with (
        json_client(server, "/ws/lobby?user=p1"),
        json_client(server, "/ws/lobby?user=p2"),
        json_client(server, "/ws/lobby?user=p3"),
    ):
        everyone = [s["user"] for s in server.json("/status/sessions")["sessions"]]
        pages = [
            [s["user"] for s in server.json(f"/status/sessions?limit=2&offset={o}")["sessions"]]
            for o in (0, 2, 4)
        ]
        assert everyone == ["p1", "p2", "p3"]
        assert pages == [["p1", "p2"], ["p3"], []]
        assert server.get("/status/sessions?offset=-1").status_code in (400, 422)


SECRET = keep_secret("events-hs256-secret-" + "e" * 32)


async def test_the_event_stream_ends_at_the_admin_jwts_exp(start: StartServer) -> None:
    # The credentials are checked once, when the stream starts: it must not outlive them.
    server = start({"CHAT_JWT_SECRET": SECRET})
    exp = time.time() + 2
    admin = keep_secret(jwt.encode({"sub": "ops", "admin": True, "exp": exp}, SECRET, "HS256"))
    auth = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=server.http(""), timeout=10) as http:
        async with http.stream("GET", "/status/events", headers=auth) as response:
            assert response.status_code == 200
            async with asyncio.timeout(10):
                names = [name async for name, _ in events(response)]
                ended = time.time()
        assert names[0] == "hello" and "summary" in names
        assert names[-1] == "expired"  # the last event: the stream then ends
        assert exp <= ended < exp + 3
