"""One load-generating client process, driven by the runner (``python -m bench``).

    python -m bench.client      # the JSON spec on the first line of stdin

It opens its connections (picows: a client cheap enough not to measure
itself), prints ``ready`` with its connect time, waits for ``go`` on stdin,
runs, prints one JSON line of results and exits. Everything is bounded by
the spec's ``limit_s``.

Each sent text is ``<sender>:<monotonic ns>:<n>``: receivers (any process on
this machine) compute the latency from the same system-wide monotonic clock.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

#: Latency samples kept per process (every n-th beyond this).
MAX_SAMPLES = 50_000


@dataclass
class Spec:
    url: str
    protocol: str
    connections: list[dict[str, Any]]
    messages: int = 0
    rate: float = 0.0
    window: int = 16
    echo: int = 0
    limit_s: float = 60.0
    idle: bool = False
    pad: int = 0

    @property
    def json_protocol(self) -> bool:
        return self.protocol != "text"


@dataclass
class Totals:
    received: int = 0
    samples: list[int] = field(default_factory=list)
    seen: int = 0
    expected: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: Close frames received from the server, by code.
    closes: dict[str, int] = field(default_factory=dict)

    def sample(self, latency_us: int) -> None:
        self.seen += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(latency_us)
        elif self.seen % 8 == 0:  # thin out, keeping the spread
            self.samples[self.seen % MAX_SAMPLES] = latency_us


class Member(WSListener):
    """One connection: counts what arrives, samples latency, answers JSON pings."""

    def __init__(self, spec: Spec, totals: Totals, name: str, room: str) -> None:
        self.spec = spec
        self.totals = totals
        self.name = name
        self.room = room
        self.transport: WSTransport | None = None
        self.own_back = 0
        self.window_open = asyncio.Event()
        self.greeted = asyncio.Event()
        self.expect = 0
        self.got = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if not self.spec.json_protocol:
            self.greeted.set()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            code = str(frame.get_close_code().value)
            self.totals.closes[code] = self.totals.closes.get(code, 0) + 1
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_utf8_text()
        if self.spec.json_protocol:
            for line in payload.split("\n"):
                self._on_object(orjson.loads(line))
        else:
            self._on_text(payload)

    def _on_object(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        if kind == "message":
            self._on_text(obj["text"])
        elif kind == "ping":
            assert self.transport is not None
            self.transport.send(WSMsgType.TEXT, b'{"type":"pong"}')
        elif kind == "joined":
            self.greeted.set()

    def _on_text(self, text: str) -> None:
        sender, _, rest = text.partition(":")
        sent_ns, _, _ = rest.partition(":")
        now = time.monotonic_ns()
        if sent_ns.isdigit():
            self.totals.sample((now - int(sent_ns)) // 1000)
        self.totals.received += 1
        self.got += 1
        if sender == self.name:
            self.own_back += 1
            self.window_open.set()
        if self.expect and self.got == self.expect:
            self.totals.expected -= 1
            if self.totals.expected == 0:
                self.totals.done.set()

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        if self.spec.json_protocol:
            data = orjson.dumps({"type": "send", "room": self.room, "text": text})
        else:
            data = text.encode()
        self.transport.send(WSMsgType.TEXT, data)


async def connect(spec: Spec, totals: Totals, index: int, conn: dict[str, Any]) -> Member:
    headers = {"Sec-WebSocket-Protocol": spec.protocol} if spec.json_protocol else None
    name = f"c{conn.get('id', index)}"
    _, member = await ws_connect(
        lambda: Member(spec, totals, name, conn["room"]),
        f"{conn.get('url', spec.url)}/ws/{conn['room']}",
        extra_headers=headers,
        websocket_handshake_timeout=30,
    )
    assert isinstance(member, Member)
    member.expect = int(conn.get("expect", 0))
    await asyncio.wait_for(member.greeted.wait(), 30)
    if conn.get("stuck"):
        # A member that never reads: a small receive buffer (no autotuning up to
        # tens of MB) fills, then the server's socket buffer, then its queue.
        assert member.transport is not None
        underlying = member.transport.underlying_transport
        underlying.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        underlying.pause_reading()
    return member


async def send_all(spec: Spec, member: Member) -> None:
    count = spec.messages
    padding = ":" + "x" * spec.pad if spec.pad else ""
    if spec.rate:
        start = time.monotonic()
        for n in range(count):
            delay = start + n / spec.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            member.send_text(f"{member.name}:{time.monotonic_ns()}:{n}{padding}")
        return
    for n in range(count):
        while n - member.own_back >= spec.window:
            member.window_open.clear()
            await member.window_open.wait()
        member.send_text(f"{member.name}:{time.monotonic_ns()}:{n}{padding}")


async def echo(spec: Spec, member: Member) -> float:
    """Sequential round trips on a room of one; round trips per second."""
    start = time.monotonic()
    for n in range(spec.echo):
        member.send_text(f"{member.name}:{time.monotonic_ns()}:{n}")
        while member.own_back <= n:
            member.window_open.clear()
            await member.window_open.wait()
    return spec.echo / (time.monotonic() - start)


async def main(spec: Spec) -> dict[str, Any]:
    totals = Totals()
    started = time.monotonic()
    members: list[Member] = []
    for index, conn in enumerate(spec.connections):
        members.append(await connect(spec, totals, index, conn))
    connect_s = time.monotonic() - started
    totals.expected = sum(1 for m in members if m.expect)
    print(json.dumps({"ready": True, "connect_s": connect_s}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    go = time.monotonic()
    result: dict[str, Any] = {"connect_s": connect_s}
    try:
        if spec.echo:
            result["round_trips_per_s"] = await asyncio.wait_for(
                echo(spec, members[0]), spec.limit_s
            )
        elif spec.idle:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        else:
            senders = [
                asyncio.create_task(send_all(spec, m))
                for m, conn in zip(members, spec.connections, strict=True)
                if conn.get("sender")
            ]
            if totals.expected:
                await asyncio.wait_for(totals.done.wait(), spec.limit_s)
            await asyncio.gather(*senders)
    except TimeoutError:
        result["timed_out"] = True
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        elapsed_s=time.monotonic() - go,
        received=totals.received,
        samples=totals.samples,
        closes=totals.closes,
        client_cpu_s=usage.ru_utime + usage.ru_stime - cpu_before,
    )
    for member in members:
        if member.transport is not None:
            member.transport.disconnect()
    return result


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    outcome = asyncio.run(main(Spec(**json.loads(sys.stdin.readline()))))
    print(json.dumps(outcome), flush=True)
