"""The status API and metrics against the real server."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import StartServer
from tests.e2e.harness import JsonClient, Server, open_ws
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

SESSION_FIELDS = {
    "id",
    "user",
    "state",
    "closing",
    "protocol",
    "rooms",
    "remote",
    "node",
    "connected_at",
    "last_activity_at",
    "idle_s",
    "messages_in",
    "messages_out",
    "queue",
    "close_code",
    "close_reason",
    "closed_by",
    "closed_at",
}


@pytest.fixture(scope="module")
def server(start_shared: StartServer) -> Server:
    return start_shared({"CHAT_NODE_ID": "status-node"})


def is_iso_utc(value: Any) -> bool:
    return isinstance(value, str) and value.endswith("Z") and bool(datetime.fromisoformat(value))


async def settled(server: Server) -> None:
    """Wait until no session of an earlier test is live (its close is counted by then)."""

    def quiet() -> bool:
        sessions: dict[str, int] = server.json("/status")["sessions"]
        return sessions["connecting"] + sessions["active"] + sessions["idle"] == 0

    assert await eventually(quiet), server.json("/status")["sessions"]


def test_health_and_readiness(server: Server) -> None:
    assert server.json("/healthz") == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 200


async def test_status_summarises_the_node(server: Server) -> None:
    # The server serves the whole module: count this test's traffic from here.
    await settled(server)
    before = (await asyncio.to_thread(server.json, "/status"))["totals"]
    async with (
        open_ws(server.ws("/ws/alpha?user=ann"), subprotocols=["chat.v1"]) as ann_ws,
        open_ws(server.ws("/ws/alpha?user=bo")) as bo,
        open_ws(server.ws("/ws/beta")),
    ):
        ann = JsonClient(ann_ws)
        await ann.greeted()
        await ann.send({"type": "send", "room": "alpha", "text": "hello"})
        assert await bo.recv() == "hello"
        status = await asyncio.to_thread(server.json, "/status")
    assert status["node"] == "status-node"
    assert status["version"]
    assert is_iso_utc(status["started_at"])
    assert status["uptime_s"] > 0
    assert status["draining"] is False
    assert status["broker"] == {"url": "memory://", "healthy": True}
    assert set(status["sessions"]) == {"connecting", "active", "idle", "closed"}
    assert status["sessions"]["active"] >= 3
    assert status["rooms"]["alpha"] == 2
    assert status["rooms"]["beta"] == 1
    totals = status["totals"]
    assert set(totals) == {
        "accepted",
        "rejected",
        "messages_in",
        "messages_out",
        "closed_by_reason",
        "rate_limited",
    }
    assert totals["accepted"] == before["accepted"] + 3
    assert totals["messages_in"] == before["messages_in"] + 1
    # Welcome, joined and presence frames count too: at least the two deliveries.
    assert totals["messages_out"] >= before["messages_out"] + 2


async def test_sessions_are_listed_with_their_fields_and_filtered(server: Server) -> None:
    async with (
        open_ws(server.ws("/ws/gamma?user=cy"), subprotocols=["chat.v1"]) as cy_ws,
        open_ws(server.ws("/ws/gamma?user=di")),
    ):
        welcome, _ = await JsonClient(cy_ws).greeted()
        everyone = (await asyncio.to_thread(server.json, "/status/sessions"))["sessions"]
        assert len(everyone) >= 2
        assert {"cy", "di"} <= {s["user"] for s in everyone}
        assert all(set(s) == SESSION_FIELDS for s in everyone)
        in_gamma = (await asyncio.to_thread(server.json, "/status/sessions?room=gamma"))["sessions"]
        assert sorted(s["user"] for s in in_gamma) == ["cy", "di"]
        cy = (await asyncio.to_thread(server.json, "/status/sessions?user=cy"))["sessions"]
        assert [s["id"] for s in cy] == [welcome["session"]]
        assert cy[0]["protocol"] == "chat.v1"
        assert (cy[0]["state"], cy[0]["closing"]) == ("active", False)
        assert cy[0]["rooms"] == ["gamma"]
        assert cy[0]["remote"].startswith("127.0.0.1:")
        assert cy[0]["node"] == "status-node"
        assert is_iso_utc(cy[0]["connected_at"])
        assert cy[0]["close_code"] is None
        one = await asyncio.to_thread(server.json, "/status/sessions?limit=1")
        assert len(one["sessions"]) == 1
    bad = server.get("/status/sessions?state=sleepy")
    assert bad.status_code == 422


async def test_a_session_detail_has_its_history_and_a_closed_one_its_cause(server: Server) -> None:
    async with open_ws(server.ws("/ws/delta"), subprotocols=["chat.v1"]) as ws:
        welcome, _ = await JsonClient(ws).greeted()
        session_id = welcome["session"]

    def closed() -> dict[str, Any]:
        detail: dict[str, Any] = server.json(f"/status/sessions/{session_id}")
        return detail if detail["state"] == "closed" else {}

    detail = await eventually(closed)
    assert (detail["close_code"], detail["close_reason"], detail["closed_by"]) == (
        1000,
        "client_closed",
        "client",
    )
    assert is_iso_utc(detail["closed_at"])
    states = [entry["state"] for entry in detail["history"]]
    assert states == ["connecting", "active", "closed"]
    assert all(is_iso_utc(entry["at"]) for entry in detail["history"])
    listed = server.json("/status/sessions?state=closed")["sessions"]
    assert session_id in [s["id"] for s in listed]
    assert server.get("/status/sessions/no-such-session").status_code == 404


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_count_sessions_messages_and_closes(server: Server) -> None:
    # The server serves the whole module: count this test's traffic from here.
    await settled(server)
    before = metric_values((await asyncio.to_thread(server.get, "/metrics")).text)
    client_closed = ("chat_sessions_closed_total", (("reason", "client_closed"),))
    async with open_ws(server.ws("/ws/epsilon")) as ws:
        await ws.send("one")
        assert await ws.recv() == "one"
        response = await asyncio.to_thread(server.get, "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    values = metric_values(response.text)
    assert values[("chat_sessions", (("state", "active"),))] >= 1
    assert ("chat_sessions", (("state", "idle"),)) in values
    # One frame in, its echo out (the only traffic since ``before``), one session.
    assert values[("chat_messages_in_total", ())] == before[("chat_messages_in_total", ())] + 1
    assert values[("chat_messages_out_total", ())] >= before[("chat_messages_out_total", ())] + 1
    accepted = ("chat_sessions_accepted_total", ())
    assert values[accepted] == before[accepted] + 1
    assert values[("chat_draining", ())] == 0

    def closes_counted() -> bool:
        after = metric_values(server.get("/metrics").text)
        return after.get(client_closed, 0) >= before.get(client_closed, 0) + 1

    assert await eventually(closes_counted)
    closes = metric_values(server.get("/metrics").text)[client_closed]
    assert closes == before.get(client_closed, 0) + 1


def test_a_status_token_guards_status_and_metrics_but_not_health(start: StartServer) -> None:
    server = start({"CHAT_STATUS_TOKEN": "s3cret-status-token-0123"})
    for path in ["/status", "/status/sessions", "/status/sessions/x", "/metrics"]:
        refused = server.get(path)
        assert refused.status_code == 401, path
        assert "s3cret-status-token-0123" not in refused.text
        wrong = server.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
    allowed = server.get("/status", headers={"Authorization": "Bearer s3cret-status-token-0123"})
    assert allowed.status_code == 200
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").status_code == 200
    assert httpx.get(server.http("/"), timeout=5).status_code == 200
    assert "s3cret-status-token-0123" not in server.log()
