"""CHAT_LOG_FORMAT=json under the real hypercorn: every line of its output is one JSON object."""

from __future__ import annotations

import signal
import time
from typing import Any

import jwt
import orjson
import pytest

from tests.e2e.conftest import StartServer, keep_secret
from tests.e2e.harness import JsonClient, open_ws, refused

pytestmark = pytest.mark.anyio

SECRET = keep_secret("json-logs-test-secret-that-is-long-enough")


def token(sub: str, key: str = SECRET) -> str:
    claims = {"sub": sub, "exp": int(time.time()) + 600}
    return keep_secret(jwt.encode(claims, key, algorithm="HS256"))


async def test_every_line_is_json_and_a_sessions_close_has_its_fields(start: StartServer) -> None:
    server = start(
        {
            "CHAT_LOG_FORMAT": "json",
            "CHAT_LOG_LEVEL": "DEBUG",
            "CHAT_JWT_SECRET": SECRET,
            "CHAT_STATUS_TOKEN": keep_secret("status-token-for-json-logs"),
        },
        ["-c", "config/hypercorn.toml"],
    )
    good = token("ann")
    async with open_ws(server.ws(f"/ws/lobby?token={good}"), subprotocols=["chat.v1"]) as ws:
        welcome, _ = await JsonClient(ws).greeted()
    # A token signed with another key, in each place a token may travel.
    bad = token("mallory", key="another-secret-of-at-least-32-bytes!")
    for kwargs in (
        {"url": server.ws(f"/ws/lobby?token={bad}")},
        {"url": server.ws("/ws/lobby"), "additional_headers": {"Authorization": f"Bearer {bad}"}},
        {"url": server.ws("/ws/lobby"), "subprotocols": ["chat.v1", f"bearer.{bad}"]},
    ):
        assert (await refused(**kwargs)).status_code == 401
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0

    output = server.log()
    # Not the bad token, nor any part of it that identifies it.
    assert bad not in output
    assert bad.split(".")[2] not in output
    assert good.split(".")[2] not in output
    lines = output.splitlines()
    entries: list[dict[str, Any]] = [orjson.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)

    closes = [e for e in entries if e.get("session") == welcome["session"] and "close_reason" in e]
    assert len(closes) == 1
    assert {key: closes[0][key] for key in ("user", "room", "close_code", "close_reason")} == {
        "user": "ann",
        "room": "lobby",
        "close_code": 1000,
        "close_reason": "client_closed",
    }
    refusals = [e for e in entries if e.get("close_reason") == "invalid_token"]
    assert len(refusals) == 3
    assert all(entry["close_code"] == 401 for entry in refusals)
    # Hypercorn's own lines are JSON too, with the access log's fields.
    loggers = {entry["logger"] for entry in entries}
    assert {"hypercorn.error", "hypercorn.access", "chat", "chat.session"} <= loggers
    access = [e for e in entries if e["logger"] == "hypercorn.access" and e["path"] == "/ws/lobby"]
    assert sorted(entry["status"] for entry in access) == [101, 401, 401, 401]
