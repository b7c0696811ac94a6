"""Test doubles for the domain: a scripted WebSocket transport."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson

from chat.errors import CloseCode
from chat.transport import CLIENT_CLOSED, CONNECTION_LOST, Disconnect


@dataclass
class FakeTransport:
    """A client on the other end of a :class:`chat.transport.Socket`, driven by the test.

    ``answers_close``: reply to the server's close frame like a well-behaved
    client. ``stalled``: the socket never drains, so sends block (a client
    that stopped reading). ``writes`` holds each write's frames: what went
    to the socket together.
    """

    answers_close: bool = True
    stalled: bool = False
    subprotocol: str | None = None
    accepted: bool = False
    rejected: tuple[int, str] | None = None
    sent: list[str] = field(default_factory=list)
    writes: list[list[str]] = field(default_factory=list)
    closed: tuple[int, str] | None = None
    aborted: bool = False
    #: When set, the handshake stays in ``connecting`` until the event is set.
    accept_gate: anyio.Event | None = None

    def __post_init__(self) -> None:
        self._inbox: deque[str | bytes | Disconnect] = deque()
        self._arrived = anyio.Event()
        self._unstall = anyio.Event()
        self._ended = False

    # -- the Transport protocol --------------------------------------------------

    async def accept(self, subprotocol: str | None) -> None:
        if self.accept_gate is not None:
            await self.accept_gate.wait()
        self.accepted = True
        self.subprotocol = subprotocol

    async def reject(self, status: int, detail: str) -> None:
        self.rejected = (status, detail)

    async def receive(self) -> str | bytes | Disconnect:
        while not self._inbox:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._inbox.popleft()

    def pending(self) -> bool:
        return bool(self._inbox)

    def ready(self) -> bool:
        return bool(self._inbox)

    def write(self, texts: list[str]) -> bool:
        if (self.stalled and not self._unstall.is_set()) or self._ended:
            return False
        self.sent.extend(texts)
        self.writes.append(texts)
        return True

    async def send(self, texts: list[str]) -> None:
        if self.stalled:
            await self._unstall.wait()
        if not self._ended:
            self.sent.extend(texts)
            self.writes.append(texts)

    async def close(self, code: int, reason: str) -> None:
        if self.stalled:
            await self._unstall.wait()
        self.closed = (code, reason)
        if self.answers_close:
            self._end(Disconnect(CloseCode.NORMAL, CLIENT_CLOSED))

    def abort(self) -> None:
        self.aborted = True
        self._end(Disconnect(CloseCode.ABNORMAL, CONNECTION_LOST))

    # -- the client's side -------------------------------------------------------

    def type(self, text: str | bytes) -> None:
        """The client sends one frame."""
        self._inbox.append(text)
        self._arrived.set()

    def send_json(self, frame: dict[str, object]) -> None:
        self.type(orjson.dumps(frame).decode())

    def hang_up(self, code: int = CloseCode.NORMAL) -> None:
        """The client closes (or the connection dies, with 1006)."""
        reason = CONNECTION_LOST if code == CloseCode.ABNORMAL else CLIENT_CLOSED
        self._end(Disconnect(code, reason))

    def unstall(self) -> None:
        self._unstall.set()

    def _end(self, disconnect: Disconnect) -> None:
        if not self._ended:
            self._ended = True
            self._inbox.append(disconnect)
            self._arrived.set()

    # -- what the client received ------------------------------------------------

    def frames(self) -> list[dict[str, Any]]:
        """Every JSON object received, batches split."""
        objects: list[dict[str, Any]] = []
        for raw in self.sent:
            objects.extend(orjson.loads(line) for line in raw.split("\n") if line)
        return objects

    def was_closed(self) -> bool:
        """Whether the server sent its close frame (a call, so type narrowing does not stick)."""
        return self.closed is not None

    def was_aborted(self) -> bool:
        return self.aborted

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames() if frame.get("type") == kind]
