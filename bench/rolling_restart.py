"""Zero loss across a rolling restart: two nodes on one Redis, clients of chat.client on both.

    .venv/bin/python -m bench.rolling_restart --clients 1000 --rate 5

Starts a redis-server and two nodes (``hypercorn main:app``) on free loopback
ports, connects ``--clients`` listeners, 50 to a room (half list node A first,
half node B; every one has both URLs), and one sender in every room, which
sends continuously (``--rate`` per second over the rooms in turn, each send
awaited until its ``ack``).
Then SIGTERM to node A, start it again on its port, wait until every client
is back; the same for node B. Reports, per listener, every acknowledged
message lost or duplicated, messages out of ``seq`` order, the time from
each ``bye`` to the room being joined again (p50/p99/max) and how the
reconnects spread over time. Results go to ``bench/results/rolling-<time>.json``.
``tests/e2e/test_rolling_restart.py`` runs the same scenario with tens of clients.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio

from chat.client import Client, ConnectionState, Event, Joined, Message, StateChanged
from tests.e2e.harness import REPO, Server, start_server
from tests.redis_server import RedisServer

ROOM = "roll"
#: Listeners per room: one room of a thousand would cost a million presence frames.
ROOM_SIZE = 50
#: Bound of every wait of the scenario, in seconds.
WAIT = 60.0


@dataclass
class Listener:
    """One client and what it saw, each event with its time."""

    client: Client
    messages: list[Message] = field(default_factory=list)
    #: ``(time of the bye, time the room was joined again)`` for each bye.
    backs: list[tuple[float, float]] = field(default_factory=list)
    _bye_at: float | None = None

    async def run(self) -> None:
        # Each listener's task owns its client: a thousand clients nested in one
        # exit stack would nest a thousand cancel scopes.
        async with self.client:
            async for event in self.client:
                self.see(event, time.monotonic())

    def see(self, event: Event, now: float) -> None:
        if isinstance(event, Message):
            self.messages.append(event)
        elif isinstance(event, StateChanged) and event.reason.startswith("bye"):
            if self._bye_at is None:
                self._bye_at = now
        elif isinstance(event, Joined) and event.rejoined and self._bye_at is not None:
            self.backs.append((self._bye_at, now))
            self._bye_at = None

    @property
    def back(self) -> bool:
        return self.client.state is ConnectionState.CONNECTED and self._bye_at is None


@dataclass
class Report:
    clients: int
    rooms: int
    acked: int
    lost: int
    duplicated: int
    out_of_order: int
    unrecoverable: int
    byes: int
    back_p50_s: float
    back_p99_s: float
    back_max_s: float
    #: Seconds between the first and the last reconnect after each node's SIGTERM.
    reconnect_spread_s: list[float]
    reconnect_stdev_s: list[float]
    duration_s: float


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def until(check: Callable[[], object], what: str) -> None:
    """Wait (bounded by :data:`WAIT`) until ``check()`` is true; ``what`` names it in a timeout."""
    try:
        with anyio.fail_after(WAIT):
            # A condition over a thousand clients' states: polled, not evented.
            while not check():  # noqa: ASYNC110
                await anyio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"not {what} within {WAIT:.0f} s") from None


async def restart(server: Server, log_dir: Path, env: dict[str, str]) -> Server:
    """SIGTERM, wait for the exit, start again on the same port."""
    server.signal(signal.SIGTERM)
    await anyio.to_thread.run_sync(server.wait, 15.0)
    return await anyio.to_thread.run_sync(lambda: start_server(log_dir, env, port=server.port))


async def rolling_restart(log_dir: Path, redis: RedisServer, clients: int, rate: float) -> Report:
    """Run the scenario once (servers started and stopped here); its report."""

    def env(node: str) -> dict[str, str]:
        return {
            "CHAT_BROKER_URL": redis.url,
            "CHAT_NODE_ID": node,
            "CHAT_HISTORY_SIZE": "500",
            "CHAT_MAX_SESSIONS_PER_USER": "10",
        }

    servers = [start_server(log_dir, env("node-a")), start_server(log_dir, env("node-b"))]
    began = time.monotonic()
    try:
        rooms = [f"{ROOM}{n}" for n in range(max(1, clients // ROOM_SIZE))]
        async with AsyncExitStack() as stack:
            group = await stack.enter_async_context(anyio.create_task_group())
            listeners = []
            for n in range(clients):
                urls = [server.ws(f"/ws/{rooms[n % len(rooms)]}") for server in servers]
                order = urls if n % 2 == 0 else urls[::-1]
                listener = Listener(Client(order, user=f"u{n}"))
                listeners.append(listener)
                group.start_soon(listener.run)
                if n % 50 == 49:  # within the servers' listen backlog
                    await until(lambda: all(x.back for x in listeners), "connected")
            await until(lambda: all(x.back for x in listeners), "connected")
            urls = [server.ws(f"/ws/{rooms[0]}") for server in servers]
            sender = await stack.enter_async_context(Client(urls, user="sender", rooms=rooms[1:]))
            acked: list[tuple[str, str]] = []
            stop, stopped = anyio.Event(), anyio.Event()

            async def send() -> None:
                n = 0
                while not stop.is_set():
                    room = rooms[n % len(rooms)]
                    await sender.send(room, f"m{n}")
                    acked.append((room, f"m{n}"))
                    n += 1
                    await anyio.sleep(1 / rate)
                stopped.set()

            group.start_soon(send)
            await until(lambda: len(acked) >= rate, "sending")
            sigterms = []
            for index in (0, 1):
                sigterms.append(time.monotonic())
                name = f"node-{'ab'[index]}"
                servers[index] = await restart(servers[index], log_dir, env(name))
                await until(lambda: all(x.back for x in listeners), "back")
                await anyio.sleep(1.0)
            stop.set()
            with anyio.fail_after(WAIT):
                await stopped.wait()
            await until(lambda: all(not missing(x, acked) for x in listeners), "delivered")
            group.cancel_scope.cancel()
    finally:
        for server in servers:
            server.stop()
    return report(listeners, acked, sigterms, time.monotonic() - began)


def missing(listener: Listener, acked: list[tuple[str, str]]) -> set[str]:
    """The acknowledged messages of the listener's room it did not receive."""
    room = listener.client.rooms[0]
    return {text for to, text in acked if to == room} - {m.text for m in listener.messages}


def report(
    listeners: list[Listener], acked: list[tuple[str, str]], sigterms: list[float], took: float
) -> Report:
    lost = duplicated = out_of_order = 0
    backs: list[float] = []
    for listener in listeners:
        texts = [m.text for m in listener.messages]
        lost += len(missing(listener, acked))
        duplicated += len(texts) - len(set(texts))
        seqs = [m.seq for m in listener.messages]
        out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        backs += [back - bye for bye, back in listener.backs]
    spreads, stdevs = [], []
    for n, sigterm in enumerate(sigterms):
        end = sigterms[n + 1] if n + 1 < len(sigterms) else float("inf")
        times = [back for x in listeners for _, back in x.backs if sigterm <= back < end]
        spreads.append(round(max(times) - min(times), 3) if times else 0.0)
        stdevs.append(round(statistics.pstdev(times), 3) if times else 0.0)
    return Report(
        clients=len(listeners),
        rooms=len({x.client.rooms[0] for x in listeners}),
        acked=len(acked),
        lost=lost,
        duplicated=duplicated,
        out_of_order=out_of_order,
        unrecoverable=sum(x.client.statistics()["unrecoverable"] for x in listeners),
        byes=len(backs),
        back_p50_s=round(percentile(backs, 0.5), 3),
        back_p99_s=round(percentile(backs, 0.99), 3),
        back_max_s=round(max(backs, default=0.0), 3),
        reconnect_spread_s=spreads,
        reconnect_stdev_s=stdevs,
        duration_s=round(took, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rolling_restart")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second sent")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(Path(directory))
        redis.start()
        try:
            result = anyio.run(rolling_restart, Path(directory), redis, args.clients, args.rate)
        finally:
            redis.stop()
    print(json.dumps(asdict(result), indent=2))
    out = REPO / "bench" / "results" / f"rolling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"scenario": "rolling-restart", **asdict(result)}, indent=2) + "\n")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
