"""A crowd of mostly quiet ``chat.v1`` sessions that churn, for ``bench.pages --crowd``.

    python -m bench.crowd       # the JSON spec on the first line of stdin

Opens ``count`` sessions (``first`` .. ``first + count - 1``, user ``c<n>``,
room ``r<n % rooms>``) with at most ``concurrency`` handshakes in flight,
prints one JSON line ``{"ready": ..., "open": n, "connect_s": s}``, then
churns until a ``stop`` line on stdin (or ``limit_s``): every second it
closes ``close_per_s`` random sessions (code 1000, so the server records
why) and opens as many new ones, and ``wake_per_s`` random sessions send one
message to their room (an idle session becomes active again; it goes idle
``CHAT_IDLE_AFTER`` later). A ``burst <n>`` line closes ``n`` at once and
reopens them. Pings are answered. Exits with a JSON line of counts.

picows keeps the generator cheap (one process holds 5,000 sessions on a
fraction of a core), so the server, not the crowd, is what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


@dataclass
class Spec:
    url: str
    count: int
    first: int = 0
    rooms: int = 20
    concurrency: int = 64
    close_per_s: float = 10.0
    wake_per_s: float = 5.0
    limit_s: float = 600.0
    seed: int = 1


@dataclass
class Counts:
    opened: int = 0
    failed: int = 0
    closed: int = 0
    woken: int = 0
    closes_from_server: dict[str, int] = field(default_factory=dict)


class Member(WSListener):
    """One session: answers pings, notes a close the server started."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.transport: WSTransport | None = None
        self.greeted = asyncio.Event()
        self.ended = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            if not self.ended:
                code = str(frame.get_close_code().value)
                self.counts.closes_from_server[code] = (
                    self.counts.closes_from_server.get(code, 0) + 1
                )
            self.ended = True
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if b'"ping"' in payload:
            transport.send(WSMsgType.TEXT, b'{"type":"pong"}')
        if b'"joined"' in payload:
            self.greeted.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.ended = True


class Crowd:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.counts = Counts()
        self.members: dict[int, Member] = {}
        self.next = spec.first + spec.count
        self.random = random.Random(spec.seed)
        self.gate = asyncio.Semaphore(spec.concurrency)

    def room(self, n: int) -> str:
        return f"r{n % self.spec.rooms}"

    async def open(self, n: int) -> None:
        async with self.gate:
            try:
                _, member = await ws_connect(
                    lambda: Member(self.counts),
                    f"{self.spec.url}/ws/{self.room(n)}?user=c{n}",
                    extra_headers={"Sec-WebSocket-Protocol": "chat.v1"},
                    websocket_handshake_timeout=30,
                )
                assert isinstance(member, Member)
                await asyncio.wait_for(member.greeted.wait(), 30)
            except (OSError, TimeoutError, RuntimeError, ValueError):
                self.counts.failed += 1
                return
        self.members[n] = member
        self.counts.opened += 1

    def close(self, n: int) -> None:
        member = self.members.pop(n)
        if member.transport is not None and not member.ended:
            member.ended = True
            member.transport.send_close(WSCloseCode.OK)
        self.counts.closed += 1

    def wake(self, n: int) -> None:
        member = self.members[n]
        if member.transport is not None and not member.ended:
            text = json.dumps({"type": "send", "room": self.room(n), "text": f"c{n} is back"})
            member.transport.send(WSMsgType.TEXT, text.encode())
            self.counts.woken += 1

    async def replace(self, how_many: int) -> None:
        live = [n for n, m in self.members.items() if not m.ended]
        gone = self.random.sample(live, min(how_many, len(live)))
        for n in gone:
            self.close(n)
        fresh = range(self.next, self.next + len(gone))
        self.next += len(gone)
        await asyncio.gather(*(self.open(n) for n in fresh))

    async def churn(self, stop: asyncio.Event) -> None:
        """Each second: replace ``close_per_s`` sessions, wake ``wake_per_s``."""
        tasks: set[asyncio.Task[None]] = set()
        tick = 0
        start = time.monotonic()
        while not stop.is_set() and time.monotonic() - start < self.spec.limit_s:
            tick += 1
            # Dead members (the server closed them) are replaced too, so the count holds.
            dead = [n for n, m in self.members.items() if m.ended]
            for n in dead:
                del self.members[n]
            task = asyncio.create_task(self.replace(int(self.spec.close_per_s) + len(dead)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            live = [n for n, m in self.members.items() if not m.ended]
            for n in self.random.sample(live, min(int(self.spec.wake_per_s), len(live))):
                self.wake(n)
            delay = start + tick - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        await asyncio.gather(*tasks)


async def commands(crowd: Crowd, stop: asyncio.Event) -> None:
    """``stop`` ends the churn; ``burst <n>`` replaces ``n`` sessions at once."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "stop":
            stop.set()
        elif line.startswith("burst "):
            await crowd.replace(int(line.split()[1]))
            print(json.dumps({"burst": True, "open": len(crowd.members)}), flush=True)


async def main(spec: Spec) -> dict[str, Any]:
    crowd = Crowd(spec)
    started = time.monotonic()
    await asyncio.gather(*(crowd.open(n) for n in range(spec.first, spec.first + spec.count)))
    print(
        json.dumps(
            {
                "ready": True,
                "open": len(crowd.members),
                "failed": crowd.counts.failed,
                "connect_s": round(time.monotonic() - started, 2),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    reader = asyncio.create_task(commands(crowd, stop))
    await crowd.churn(stop)
    stop.set()
    for member in crowd.members.values():
        if member.transport is not None:
            member.transport.disconnect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reader.cancel()
    counts = crowd.counts
    return {
        "opened": counts.opened,
        "failed": counts.failed,
        "closed": counts.closed,
        "woken": counts.woken,
        "closes_from_server": counts.closes_from_server,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


if __name__ == "__main__":
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.new_event_loop()
    outcome = loop.run_until_complete(main(Spec(**json.loads(sys.stdin.readline()))))
    print(json.dumps(outcome), flush=True)
    # The stdin reader thread may still wait for a line: do not wait for it.
    os._exit(0)
