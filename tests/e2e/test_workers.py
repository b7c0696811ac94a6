"""``hypercorn -w 2``: ``/metrics`` and ``/status`` on either worker cover both.

The workers share one listening socket and the kernel gives a connection to
whichever accepts first, often the same one many times over. To put a
connection on a chosen worker, the test pauses the other one (SIGSTOP) while
it connects; a keep-alive HTTP client then stays with the worker it reached,
which every ``/status`` through it confirms.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StartServer
from tests.e2e.harness import JsonClient, Server, open_ws
from tests.e2e.test_status import metric_values
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: Sessions opened on each worker: not the same number, so that a mix-up shows.
SESSIONS = (2, 3)
#: Frames sent afterwards, on both workers in turn, with a scrape after each.
MORE = 10

ACTIVE = ("chat_sessions", (("state", "active"),))
MESSAGES_IN = ("chat_messages_in_total", ())
MESSAGES_OUT = ("chat_messages_out_total", ())
ACCEPTED = ("chat_sessions_accepted_total", ())
CLIENT_CLOSED = ("chat_sessions_closed_total", (("reason", "client_closed"),))
COUNTERS = (MESSAGES_IN, MESSAGES_OUT, ACCEPTED, CLIENT_CLOSED)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


@asynccontextmanager
async def paused(pid: int) -> AsyncIterator[None]:
    """Worker ``pid`` stopped (so that the other one accepts every new connection)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        assert await eventually(lambda: process_state(pid) == "T")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class Worker:
    """One worker, reached through a keep-alive HTTP client that stays with it."""

    def __init__(self, server: Server) -> None:
        self.http = httpx.Client(base_url=server.http(""), timeout=5)
        status: dict[str, Any] = self.http.get("/status").json()
        self.pid: int = status["worker"]["pid"]
        self.node: str = status["worker"]["node"]

    def status(self) -> dict[str, Any]:
        """``/status``, answered by this worker."""
        status: dict[str, Any] = self.http.get("/status").json()
        assert status["worker"] == {"pid": self.pid, "node": self.node}
        return status

    def scrape(self) -> Values:
        """``/metrics``, answered by this worker (asked before and after)."""
        self.status()
        text = self.http.get("/metrics").text
        self.status()
        return metric_values(text)


@asynccontextmanager
async def both_workers(server: Server) -> AsyncIterator[tuple[Worker, Worker]]:
    first = Worker(server)
    async with paused(first.pid):
        second = Worker(server)
    try:
        assert second.pid != first.pid
        yield first, second
    finally:
        first.http.close()
        second.http.close()


async def test_metrics_and_status_on_either_worker_cover_both(start: StartServer) -> None:
    server = start(args=["-w", "2"])
    total = sum(SESSIONS)
    async with both_workers(server) as workers:
        async with AsyncExitStack() as stack:
            sessions: list[JsonClient] = []
            for worker, other, count in zip(workers, reversed(workers), SESSIONS, strict=True):
                async with paused(other.pid):
                    for _ in range(count):
                        room = f"room-{len(sessions)}"
                        ws = await stack.enter_async_context(
                            open_ws(server.ws(f"/ws/{room}"), subprotocols=["chat.v1"])
                        )
                        client = JsonClient(ws)
                        welcome, _ = await client.greeted()
                        assert welcome["node"] == worker.node
                        sessions.append(client)
            for index, client in enumerate(sessions):
                await client.send({"type": "send", "room": f"room-{index}", "text": "hi", "id": 1})
                assert (await client.recv_type("ack"))["id"] == 1

            held = list(zip(workers, SESSIONS, strict=True))
            listed = [
                {"pid": worker.pid, "node": worker.node, "sessions": count}
                for worker, count in sorted(held, key=lambda pair: pair[0].pid)
            ]

            def both_list_both() -> bool:
                return all(worker.status()["workers"] == listed for worker in workers)

            # Each worker lists the other's sessions too, at most a second late.
            assert await eventually(both_list_both)
            for worker, count in held:
                status = await asyncio.to_thread(worker.status)
                assert status["node"] == worker.node
                # The rest of the summary stays the answering worker's own.
                assert status["sessions"]["active"] == count
                assert status["totals"]["accepted"] == count

            def both_sum_both() -> bool:
                return all(
                    (values[ACTIVE], values[ACCEPTED], values[MESSAGES_IN]) == (total,) * 3
                    for values in (worker.scrape() for worker in workers)
                )

            assert await eventually(both_sum_both)
            for worker in workers:
                values = await asyncio.to_thread(worker.scrape)
                assert values[MESSAGES_OUT] >= 3 * total  # welcome, joined, the message, ...
                assert {
                    labels: value
                    for (name, labels), value in values.items()
                    if name == "chat_worker_sessions"
                } == {(("node", w.node), ("pid", str(w.pid))): n for w, n in held}
                info = [dict(labels) for (name, labels) in values if name == "chat_node_info"]
                assert sorted((i["pid"], i["node"]) for i in info) == sorted(
                    (str(w.pid), w.node) for w in workers
                )

            # More frames on both workers, scraped from each in turn: nothing ever goes down.
            previous = await asyncio.to_thread(workers[0].scrape)
            for round_ in range(MORE):
                client = sessions[round_ % total]
                await client.send({"type": "send", "room": f"room-{round_ % total}", "text": "+"})
                await client.recv_type("message")
                values = await asyncio.to_thread(workers[round_ % 2].scrape)
                for counter in COUNTERS:
                    assert values.get(counter, 0) >= previous.get(counter, 0), (counter, round_)
                previous = values

            def both_count_every_frame() -> bool:
                return all(worker.scrape()[MESSAGES_IN] == total + MORE for worker in workers)

            assert await eventually(both_count_every_frame)

        # Every session has said goodbye: the live gauges drop, the closes add up.
        def both_count_every_close() -> bool:
            return all(
                (values[ACTIVE], values.get(CLIENT_CLOSED)) == (0, total)
                for values in (worker.scrape() for worker in workers)
            )

        assert await eventually(both_count_every_close)
        for worker in workers:
            status = await asyncio.to_thread(worker.status)
            assert [w["sessions"] for w in status["workers"]] == [0, 0]


async def test_a_worker_that_stops_takes_its_sessions_away_and_leaves_its_counts(
    start: StartServer,
) -> None:
    server = start(args=["-w", "2"])
    async with both_workers(server) as (leaving, staying):
        async with (
            paused(staying.pid),
            open_ws(server.ws("/ws/solo"), subprotocols=["chat.v1"]) as ws,
        ):
            client = JsonClient(ws)
            welcome, _ = await client.greeted()
            assert welcome["node"] == leaving.node
            await client.send({"type": "send", "room": "solo", "text": "hi", "id": 1})
            assert (await client.recv_type("ack"))["id"] == 1
        # The session said goodbye; a second session stays open while its worker stops.
        async with paused(staying.pid):
            ws = await open_ws(server.ws("/ws/solo"), subprotocols=["chat.v1"])
        try:
            welcome, _ = await JsonClient(ws).greeted()
            assert welcome["node"] == leaving.node
            os.kill(leaving.pid, signal.SIGTERM)  # Hypercorn starts another worker in its place

            def replaced() -> list[dict[str, Any]]:
                workers: list[dict[str, Any]] = staying.status()["workers"]
                pids = {worker["pid"] for worker in workers}
                return workers if len(pids) == 2 and leaving.pid not in pids else []

            workers = await eventually(replaced, 10.0)
            assert workers, staying.status()["workers"]
            assert [w["sessions"] for w in workers] == [0, 0]
            values = await asyncio.to_thread(staying.scrape)
            assert values[ACTIVE] == 0
            # The stopped worker's counts stay in the sums: counters never go down.
            assert values[ACCEPTED] == 2
            assert values[MESSAGES_IN] == 1
            assert values[CLIENT_CLOSED] == 1
            assert values[("chat_sessions_closed_total", (("reason", "shutdown"),))] == 1
            pids = sorted(
                dict(labels)["pid"] for (name, labels) in values if name == "chat_node_info"
            )
            assert pids == sorted(str(w["pid"]) for w in workers)
        finally:
            await ws.close()


def test_one_process_is_its_only_worker(start: StartServer) -> None:
    server = start({"CHAT_NODE_ID": "alone"}, args=["-w", "0"])
    status = server.json("/status")
    assert status["worker"] == {"pid": server.process.pid, "node": "alone"}
    assert status["workers"] == [{"pid": server.process.pid, "node": "alone", "sessions": 0}]
    values = metric_values(server.get("/metrics").text)
    # No pid label: the process's own registry, not prometheus-client's multiprocess files.
    assert values[("chat_node_info", (("node", "alone"), ("version", status["version"])))] == 1
    assert values[("chat_worker_sessions", (("node", "alone"),))] == 0
