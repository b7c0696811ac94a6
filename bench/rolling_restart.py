"""Zero loss across a rolling restart: two nodes on one Redis, clients of chat.client on both.

    .venv/bin/python -m bench.rolling_restart --clients 1000 --rate 20

Starts a redis-server and two nodes (``hypercorn main:app``) on free loopback
ports, and ``--clients`` listeners, 50 to a room (half list node A first,
half node B; every one has both URLs), run by ``--processes`` listener
processes (default: one per 250 listeners), so that the load generator is not
what is measured: one Python process running a thousand clients on the same
two cores as the servers answers their frames late, and a time it notes late
is the client's, not the server's. One sender, in every room, sends
continuously: ``--rate`` messages per second over the rooms in turn, each
``send`` in flight until its ``ack`` (up to :data:`IN_FLIGHT` at once) while it
is itself moved from node to node, so a send may wait in the client's outbox
through a reconnect and be retried with its id.

Then SIGTERM to node A, start it again on its port, wait until every client
that was on it is back; the same for node B. Reports, per listener, every
acknowledged message lost or duplicated, messages out of ``seq`` order, the
time from each ``bye`` to the room being joined again (p50/p99/max; and the
part of it that is not the ``retry_after_ms`` the server asked the client to
wait), how the reconnects spread over time, the sender's ack times, the CPU
time of the listener processes and of the nodes, the listener processes'
event-loop lag (their own delay in noting what happened) and the machine's
load average. Results go to ``bench/results/rolling-<time>.json``.
``tests/e2e/test_rolling_restart.py`` runs the same scenario with tens of clients.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from chat.client import (
    Client,
    ClientError,
    ConnectionState,
    Event,
    Joined,
    Message,
    StateChanged,
)

if TYPE_CHECKING:
    from tests.e2e.harness import Server
    from tests.redis_server import RedisServer

# The listener processes import only chat.client: the harness (httpx, the
# servers' helpers) is imported by the scenario's process alone, when it runs.
REPO = Path(__file__).resolve().parents[1]

ROOM = "roll"
#: Listeners per room: one room of a thousand would cost a million presence frames.
ROOM_SIZE = 50
#: Listeners per listener process when ``--processes`` is not given.
PER_PROCESS = 250
#: Bound of every wait of the scenario, in seconds.
WAIT = 60.0
#: The sender's sends awaiting their ack at most (its outbox holds 1,000).
IN_FLIGHT = 200
#: Seconds between two status lines of a listener process.
STATUS_EVERY = 0.1


@dataclass
class Listener:
    """One client and what it saw, each event with its time."""

    client: Client
    messages: list[Message] = field(default_factory=list)
    #: Per ``bye``: its time, the ``retry_after`` it asked (s), the time of the last
    #: attempt to connect, of the ``welcome``, and of the room joined again.
    backs: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    #: The port of the node it is connected to (None while it is not).
    port: int | None = None
    _bye: tuple[float, float] | None = None
    _attempt_at = 0.0
    _welcome_at = 0.0

    async def run(self) -> None:
        # Each listener's task owns its client: a thousand clients nested in one
        # exit stack would nest a thousand cancel scopes.
        async with self.client:
            async for event in self.client:
                self.see(event, time.monotonic())

    def see(self, event: Event, now: float) -> None:
        if isinstance(event, Message):
            self.messages.append(event)
        elif isinstance(event, StateChanged):
            self.port = _port(event.url) if event.state is ConnectionState.CONNECTED else None
            if event.state is ConnectionState.CONNECTING:
                self._attempt_at = now
            elif event.state is ConnectionState.CONNECTED:
                self._welcome_at = now
            if event.reason.startswith("bye") and self._bye is None:
                self._bye = (now, event.retry_in or 0.0)
        elif isinstance(event, Joined) and event.rejoined and self._bye is not None:
            bye, retry = self._bye
            self.backs.append((bye, retry, self._attempt_at, self._welcome_at, now))
            self._bye = None

    @property
    def back(self) -> bool:
        return self.client.state is ConnectionState.CONNECTED and self._bye is None

    def missing(self, acked: list[tuple[str, str]]) -> set[str]:
        """The acknowledged messages of the listener's room it did not receive."""
        room = self.client.rooms[0]
        return {text for to, text in acked if to == room} - {m.text for m in self.messages}

    def result(self, acked: list[tuple[str, str]]) -> dict[str, Any]:
        texts = [m.text for m in self.messages]
        seqs = [m.seq for m in self.messages]
        return {
            "lost": len(self.missing(acked)),
            "duplicated": len(texts) - len(set(texts)),
            "out_of_order": sum(1 for a, b in itertools.pairwise(seqs) if b <= a),
            "unrecoverable": self.client.statistics()["unrecoverable"],
            "backs": self.backs,
        }


def _port(url: str) -> int | None:
    return int(url.split(":")[2].split("/")[0]) if url.count(":") >= 2 else None


@dataclass
class Report:
    clients: int
    rooms: int
    processes: int
    rate: float
    #: Messages the sender sent, had acknowledged, and saw fail.
    sent: int
    acked: int
    send_failed: int
    #: Seconds from ``send`` to its ``ack`` (through the sender's own reconnects).
    ack_p50_s: float
    ack_p99_s: float
    ack_max_s: float
    lost: int
    duplicated: int
    out_of_order: int
    unrecoverable: int
    byes: int
    back_p50_s: float
    back_p99_s: float
    back_max_s: float
    #: The server's ``bye.retry_after_ms`` (its jitter), part of every "back".
    retry_after_p50_s: float
    retry_after_p99_s: float
    #: "back" minus retry_after: reconnecting, joining and recovering.
    overhead_p50_s: float
    overhead_p99_s: float
    overhead_max_s: float
    #: Its parts (p99): the client's last attempt later than bye + retry_after
    #: (its own timers and loop), the handshake until the ``welcome``, the
    #: ``welcome`` until the room is joined (its missed messages replayed after).
    late_p99_s: float
    handshake_p99_s: float
    join_p99_s: float
    #: Seconds between the first and the last reconnect after each node's SIGTERM.
    reconnect_spread_s: list[float]
    reconnect_stdev_s: list[float]
    #: CPU seconds of all listener processes, and of the nodes' workers (every run of them).
    client_cpu_s: float
    server_cpu_s: float
    #: The listener processes' event-loop lag (how late they note what happens).
    client_lag_p99_s: float
    client_lag_max_s: float
    #: 1-minute load average of the machine at the start and at the end.
    load: list[float]
    duration_s: float


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def until(check: Callable[[], object], what: str) -> None:
    """Wait (bounded by :data:`WAIT`) until ``check()`` is true; ``what`` names it in a timeout."""
    try:
        with anyio.fail_after(WAIT):
            # A condition over the listener processes' last status lines: polled.
            while not check():  # noqa: ASYNC110
                await anyio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"not {what} within {WAIT:.0f} s") from None


# -- a listener process ------------------------------------------------------------


def _say(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def listen(plan: dict[str, Any]) -> None:
    """A listener process: run ``plan``'s listeners, told what to do on stdin.

    Writes ``{"ready": ...}`` once all are connected, then a status line every
    :data:`STATUS_EVERY`; reads the acknowledged messages (one JSON line),
    waits until every listener has them (bounded), writes ``{"result": ...}``.
    """
    ports, rooms = plan["ports"], plan["rooms"]
    listeners: list[Listener] = []
    lags: list[float] = []
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_lag, lags)
        for n in range(plan["first"], plan["first"] + plan["count"]):
            urls = [f"ws://127.0.0.1:{port}/ws/{rooms[n % len(rooms)]}" for port in ports]
            listener = Listener(Client(urls if n % 2 == 0 else urls[::-1], user=f"u{n}"))
            listeners.append(listener)
            group.start_soon(listener.run)
            if n % 50 == 49:  # within the servers' listen backlog
                await until(lambda: all(x.back for x in listeners), "connected")
        await until(lambda: all(x.back for x in listeners), "connected")
        _say({"ready": len(listeners)})
        group.start_soon(_tell_status, listeners)
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        acked = [(room, text) for room, text in json.loads(line)["acked"]]
        # Whatever is still missing then is counted as lost.
        with anyio.move_on_after(WAIT):
            while any(x.missing(acked) for x in listeners):  # noqa: ASYNC110
                await anyio.sleep(0.1)
        group.cancel_scope.cancel()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _say(
        {
            "result": [x.result(acked) for x in listeners],
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "lags": lags,
        }
    )


async def _tell_status(listeners: list[Listener]) -> None:
    while True:
        on: dict[int, int] = {}
        for listener in listeners:
            if listener.port is not None:
                on[listener.port] = on.get(listener.port, 0) + 1
        _say(
            {
                "back": all(x.back for x in listeners),
                "backs": sum(len(x.backs) for x in listeners),
                "on": on,
            }
        )
        await anyio.sleep(STATUS_EVERY)


async def _watch_lag(lags: list[float]) -> None:
    """How late a 0.1 s sleep wakes: the process's own delay in noting anything."""
    while True:
        began = time.monotonic()
        await anyio.sleep(0.1)
        lags.append(time.monotonic() - began - 0.1)


# -- the scenario ----------------------------------------------------------------


@dataclass
class Listeners:
    """One listener process, as the scenario sees it: its last status line."""

    process: Process
    lines: BufferedByteReceiveStream
    status: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] | None = None

    async def line(self) -> dict[str, Any]:
        raw = await self.lines.receive_until(b"\n", 1 << 26)
        line: dict[str, Any] = json.loads(raw)
        return line

    async def follow(self) -> None:
        while self.final is None:
            line = await self.line()
            if "result" in line:
                self.final = line
            else:
                self.status = line

    async def finish(self, acked: list[tuple[str, str]]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps({"acked": acked}).encode() + b"\n")


async def spawn(plan: dict[str, Any], group: TaskGroup) -> Listeners:
    """Start a listener process for ``plan``; return once its listeners are connected."""
    process = await anyio.open_process(
        [sys.executable, "-m", "bench.rolling_restart", "--listen", json.dumps(plan)],
        cwd=REPO,
        stderr=None,
    )
    assert process.stdout is not None
    listeners = Listeners(process, BufferedByteReceiveStream(process.stdout))
    with anyio.fail_after(WAIT):
        ready = await listeners.line()
    if ready.get("ready") != plan["count"]:
        raise RuntimeError(f"listener process not ready: {ready}")
    group.start_soon(listeners.follow)
    return listeners


@dataclass
class Sender:
    """One client sending to every room at ``rate``, many sends in flight at once."""

    client: Client
    rooms: list[str]
    rate: float
    sent: int = 0
    failed: int = 0
    acked: list[tuple[str, str]] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    stop: anyio.Event = field(default_factory=anyio.Event)

    async def run(self) -> None:
        """Send until :attr:`stop`, then wait (bounded) for the sends in flight."""
        window = anyio.Semaphore(IN_FLIGHT)
        async with anyio.create_task_group() as group:
            due = time.monotonic()
            for n in itertools.count():
                if self.stop.is_set():
                    break
                await window.acquire()
                group.start_soon(self._send, self.rooms[n % len(self.rooms)], f"m{n}", window)
                due += 1 / self.rate
                await anyio.sleep(max(0.0, due - time.monotonic()))
            with anyio.fail_after(WAIT):
                for _ in range(IN_FLIGHT):
                    await window.acquire()

    async def _send(self, room: str, text: str, window: anyio.Semaphore) -> None:
        began = time.monotonic()
        self.sent += 1
        try:
            await self.client.send(room, text)
        except ClientError:
            self.failed += 1
        else:
            self.acked.append((room, text))
            self.ack_times.append(time.monotonic() - began)
        finally:
            window.release()


class NodeCpu:
    """CPU seconds of every Hypercorn worker the scenario ran (sampled while they live)."""

    def __init__(self) -> None:
        self._workers: dict[int, int] = {}
        self._seen: dict[int, float] = {}

    def sample(self, servers: list[Server]) -> None:
        from bench.processes import cpu_s, worker_pid

        for server in servers:
            pid = self._workers.get(server.process.pid)
            if pid is None:
                try:  # once per server: worker_pid runs pgrep
                    pid = self._workers[server.process.pid] = worker_pid(server)
                except (RuntimeError, OSError):
                    continue
            self._seen[pid] = max(self._seen.get(pid, 0.0), cpu_s(pid))

    @property
    def total(self) -> float:
        return sum(self._seen.values())


async def restart(server: Server, log_dir: Path, env: dict[str, str]) -> Server:
    """SIGTERM, wait for the exit, start again on the same port."""
    from tests.e2e.harness import start_server

    server.signal(signal.SIGTERM)
    await anyio.to_thread.run_sync(server.wait, 15.0)
    return await anyio.to_thread.run_sync(lambda: start_server(log_dir, env, port=server.port))


async def rolling_restart(
    log_dir: Path,
    redis: RedisServer,
    clients: int,
    rate: float,
    processes: int | None = None,
) -> Report:
    """Run the scenario once (servers and listener processes started and stopped here)."""
    from tests.e2e.harness import start_server

    processes = processes or max(1, round(clients / PER_PROCESS))
    load = [round(os.getloadavg()[0], 2)]

    def env(node: str) -> dict[str, str]:
        return {
            "CHAT_BROKER_URL": redis.url,
            "CHAT_NODE_ID": node,
            "CHAT_HISTORY_SIZE": "500",
            "CHAT_MAX_SESSIONS_PER_USER": "10",
            # The sender is a service: its sends queued through a reconnect
            # must drain faster than it keeps sending (the default 20/s would not).
            "CHAT_RATE": str(max(20.0, 5 * rate)),
            "CHAT_BURST": str(max(40, math.ceil(10 * rate))),
        }

    servers = [start_server(log_dir, env("node-a")), start_server(log_dir, env("node-b"))]
    ports = [server.port for server in servers]
    rooms = [f"{ROOM}{n}" for n in range(max(1, clients // ROOM_SIZE))]
    node_cpu = NodeCpu()
    workers: list[Listeners] = []
    began = time.monotonic()
    try:
        async with anyio.create_task_group() as group:
            share = math.ceil(clients / processes)
            for first in range(0, clients, share):
                plan = {
                    "ports": ports,
                    "rooms": rooms,
                    "first": first,
                    "count": min(share, clients - first),
                }
                workers.append(await spawn(plan, group))

            def all_back() -> bool:
                node_cpu.sample(servers)
                return all(w.status.get("back") for w in workers)

            def backs() -> int:
                return sum(w.status.get("backs", 0) for w in workers)

            def moved(expected: int) -> bool:
                return backs() >= expected and all_back()

            def on(port: int) -> int:
                return sum(w.status.get("on", {}).get(str(port), 0) for w in workers)

            await until(lambda: all(w.status for w in workers) and all_back(), "connected")
            urls = [f"ws://127.0.0.1:{port}/ws/{rooms[0]}" for port in ports]
            async with Client(urls, user="sender", rooms=rooms[1:]) as client:
                sender = Sender(client, rooms, rate)
                async with anyio.create_task_group() as sending:
                    sending.start_soon(sender.run)
                    await until(lambda: len(sender.acked) >= rate, "sending")
                    sigterms = []
                    for index in (0, 1):
                        moving, before = on(ports[index]), backs()
                        sigterms.append(time.monotonic())
                        name = f"node-{'ab'[index]}"
                        servers[index] = await restart(servers[index], log_dir, env(name))
                        await until(partial(moved, before + moving), "back")
                        await anyio.sleep(1.0)
                    sender.stop.set()
            for worker in workers:
                await worker.finish(sender.acked)
            await until(lambda: all(w.final is not None for w in workers), "reported")
    finally:
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.kill()
            with anyio.CancelScope(shield=True):
                await worker.process.wait()
        for server in servers:
            server.stop()
    load.append(round(os.getloadavg()[0], 2))
    finals = [w.final for w in workers if w.final is not None]
    return report(
        finals,
        sender,
        sigterms,
        rooms=len(rooms),
        server_cpu=node_cpu.total,
        load=load,
        took=time.monotonic() - began,
    )


def report(
    finals: list[dict[str, Any]],
    sender: Sender,
    sigterms: list[float],
    *,
    rooms: int,
    server_cpu: float,
    load: list[float],
    took: float,
) -> Report:
    results = [result for final in finals for result in final["result"]]
    backs = [tuple(back) for result in results for back in result["backs"]]
    lags = [lag for final in finals for lag in final["lags"]]
    times = [back - bye for bye, _, _, _, back in backs]
    retries = [retry for _, retry, _, _, _ in backs]
    overheads = [back - bye - retry for bye, retry, _, _, back in backs]
    lates = [attempt - bye - retry for bye, retry, attempt, _, _ in backs]
    handshakes = [welcome - attempt for _, _, attempt, welcome, _ in backs]
    joins = [back - welcome for _, _, _, welcome, back in backs]
    spreads, stdevs = [], []
    for n, sigterm in enumerate(sigterms):
        end = sigterms[n + 1] if n + 1 < len(sigterms) else math.inf
        window = [back for _, _, _, _, back in backs if sigterm <= back < end]
        spreads.append(round(max(window) - min(window), 3) if window else 0.0)
        stdevs.append(round(statistics.pstdev(window), 3) if window else 0.0)
    return Report(
        clients=len(results),
        rooms=rooms,
        processes=len(finals),
        rate=sender.rate,
        sent=sender.sent,
        acked=len(sender.acked),
        send_failed=sender.failed,
        ack_p50_s=round(percentile(sender.ack_times, 0.5), 3),
        ack_p99_s=round(percentile(sender.ack_times, 0.99), 3),
        ack_max_s=round(max(sender.ack_times, default=0.0), 3),
        lost=sum(r["lost"] for r in results),
        duplicated=sum(r["duplicated"] for r in results),
        out_of_order=sum(r["out_of_order"] for r in results),
        unrecoverable=sum(r["unrecoverable"] for r in results),
        byes=len(backs),
        back_p50_s=round(percentile(times, 0.5), 3),
        back_p99_s=round(percentile(times, 0.99), 3),
        back_max_s=round(max(times, default=0.0), 3),
        retry_after_p50_s=round(percentile(retries, 0.5), 3),
        retry_after_p99_s=round(percentile(retries, 0.99), 3),
        overhead_p50_s=round(percentile(overheads, 0.5), 3),
        overhead_p99_s=round(percentile(overheads, 0.99), 3),
        overhead_max_s=round(max(overheads, default=0.0), 3),
        late_p99_s=round(percentile(lates, 0.99), 3),
        handshake_p99_s=round(percentile(handshakes, 0.99), 3),
        join_p99_s=round(percentile(joins, 0.99), 3),
        reconnect_spread_s=spreads,
        reconnect_stdev_s=stdevs,
        client_cpu_s=round(sum(final["cpu_s"] for final in finals), 1),
        server_cpu_s=round(server_cpu, 1),
        client_lag_p99_s=round(percentile(lags, 0.99), 3),
        client_lag_max_s=round(max(lags, default=0.0), 3),
        load=load,
        duration_s=round(took, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rolling_restart")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second sent")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help=f"listener processes (default: one per {PER_PROCESS} clients)",
    )
    parser.add_argument("--listen", metavar="PLAN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen is not None:
        anyio.run(listen, json.loads(args.listen))
        return
    from tests.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as directory:
        redis = RedisServer(Path(directory))
        redis.start()
        try:
            result = anyio.run(
                rolling_restart, Path(directory), redis, args.clients, args.rate, args.processes
            )
        finally:
            redis.stop()
    print(json.dumps(asdict(result), indent=2))
    out = REPO / "bench" / "results" / f"rolling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"scenario": "rolling-restart", **asdict(result)}, indent=2) + "\n")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
