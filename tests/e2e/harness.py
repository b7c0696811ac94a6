"""Run the real ``hypercorn main:app`` in a subprocess on a free loopback port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response
from websockets.typing import Subprotocol

from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0


@dataclass
class Server:
    """One hypercorn process (and its workers) serving ``main:app``."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    stopped: bool = field(default=False)

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.http(path), timeout=5, **kwargs)

    def json(self, path: str) -> Any:
        response = self.get(path)
        response.raise_for_status()
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit status, waiting at most ``timeout`` seconds."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        # Workers of a killed parent must not outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.stopped = True


def start_server(
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    python: str = sys.executable,
    ready_path: str = "/readyz",
    app: str = "main:app",
    port: int | None = None,
) -> Server:
    """Start hypercorn with ``CHAT_*`` settings ``env``; return once ``ready_path`` is 200.

    ``port`` restarts a server where it was (default: a free port).
    """
    port = port or free_port()
    log_path = log_dir / f"server-{port}.log"
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CHAT_")}
    command = [python, "-m", "hypercorn", "-b", f"127.0.0.1:{port}", *args, app]
    with log_path.open("ab") as log:  # a restart on the same port keeps the first log
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**clean, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if app != "main:app":  # not ours: any HTTP answer means it serves
                httpx.get(server.http("/"), timeout=1)
                return server
            if httpx.get(server.http(ready_path), timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.log()}")


def open_ws(url: str, *, subprotocols: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """A ``websockets`` client connection without its own keepalive pings."""
    return connect(
        url,
        subprotocols=[Subprotocol(name) for name in subprotocols] if subprotocols else None,
        ping_interval=None,
        open_timeout=5,
        **kwargs,
    )


async def refused(url: str, **kwargs: Any) -> Response:
    """The HTTP response that refused the WebSocket handshake to ``url`` (fails if accepted)."""
    try:
        async with open_ws(url, **kwargs):
            pass
    except InvalidStatus as refusal:
        return refusal.response
    raise AssertionError(f"the handshake to {url} was accepted, not refused")


class JsonClient:
    """A ``chat.v1`` client over a ``websockets`` connection, batches split."""

    def __init__(self, ws: ClientConnection, *, answer_pings: bool = True) -> None:
        self.ws = ws
        self.answer_pings = answer_pings
        self._pending: list[dict[str, Any]] = []
        #: The ``welcome`` and the ``joined`` of the URL's room, once :meth:`greeted`
        #: has read them.
        self.welcome: dict[str, Any] = {}
        self.joined: dict[str, Any] = {}

    async def recv(self) -> dict[str, Any]:
        """The next object that is not a heartbeat ``ping`` (those are answered)."""
        while True:
            if not self._pending:
                raw = await self.ws.recv()
                assert isinstance(raw, str)
                self._pending.extend(orjson.loads(line) for line in raw.split("\n") if line)
            frame = self._pending.pop(0)
            if frame.get("type") == "ping" and self.answer_pings:
                await self.send({"type": "pong"})
                continue
            return frame

    async def recv_type(self, kind: str) -> dict[str, Any]:
        """Skip frames until one of type ``kind``."""
        while True:
            frame = await self.recv()
            if frame["type"] == kind:
                return frame

    async def send(self, frame: Mapping[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def greeted(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The ``welcome`` and ``joined`` every room session starts with."""
        welcome = await self.recv()
        joined = await self.recv()
        assert (welcome["type"], joined["type"]) == ("welcome", "joined")
        self.welcome, self.joined = welcome, joined
        return welcome, joined


@contextlib.asynccontextmanager
async def json_client(server: Server, path: str) -> AsyncIterator[JsonClient]:
    """A greeted ``chat.v1`` session on ``path`` with an unbounded receive queue."""
    async with open_ws(server.ws(path), subprotocols=["chat.v1"], max_queue=None) as ws:
        client = JsonClient(ws)
        await client.greeted()
        yield client


async def messages(client: JsonClient, count: int, room: str | None = None) -> list[dict[str, Any]]:
    """The next ``count`` messages (of ``room``), skipping other frames."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while len(found) < count:
            frame = await client.recv_type("message")
            if room is None or frame["room"] == room:
                found.append(frame)
    return found


def client_frame(payload: bytes, *, opcode: int = 0x1, fin: bool = True) -> bytes:
    """One masked client WebSocket frame, built by hand (for clients that misbehave)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


def raw_handshake(port: int, path: str) -> socket.socket:
    """A raw TCP WebSocket client past its handshake: it does only what the test makes it do."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1024)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def read_frame(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    """The next server frame on a raw socket: ``(opcode, payload)`` (server frames are unmasked)."""
    sock.settimeout(timeout)

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(exactly(2), "big")
    elif length == 127:
        length = int.from_bytes(exactly(8), "big")
    return first & 0x0F, exactly(length)
