"""The driver of one session: it carries out what the session's core decides.

A :class:`Connection` reads client frames in its reader (the calling task)
and hands each to its :class:`~chat.core.SessionCore`, then carries out the
core's requests (publish, join, list members, leave, announce, abort) in
order, before it reads the next frame, and reports each outcome back.

Everything for the client goes through the core's outbox, and one owner
writes it: the node's :class:`~chat.flusher.Flusher`, which writes each
session's outbox straight to a socket that takes it, and otherwise starts the
session's writer task (in the node's task group), which waits for the
backed-up socket, and sends the close frame once the core is closing and the
outbox is empty. The flusher runs once per turn of the event loop, and also
when a reader has read all the frames that were waiting, so that a reply
goes out in the turn that caused it. A peer that does not answer
the close within ``CHAT_DRAIN_TIMEOUT`` is cut when the core asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol

import anyio

from chat.brokers import BrokerUnavailable, Bus, History, PresenceStore
from chat.clock import Clock
from chat.core import SessionCore
from chat.envelope import Publication, RunStarted
from chat.errors import CloseCode, InternalError, SessionClosed
from chat.flusher import Flusher
from chat.protocol import Subprotocol
from chat.registry import Registry
from chat.requests import (
    Abort,
    Announce,
    ListMembers,
    Publish,
    Request,
    Subscribe,
    Unsubscribe,
)
from chat.rooms import Rooms
from chat.session import Session
from chat.transport import CONNECTION_LOST, Disconnect, Handshake, Transport

log = logging.getLogger("chat.session")


class SessionBroker(Bus, History, PresenceStore, Protocol):
    """What a session needs of the broker: publishing, rooms' history, presence."""


class Host(Protocol):
    """What a session's driver needs of its node (:class:`chat.node.Node` is one)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def rooms(self) -> Rooms: ...

    @property
    def broker(self) -> SessionBroker: ...

    @property
    def flusher(self) -> Flusher: ...

    @property
    def registry(self) -> Registry: ...

    def spawn(self, work: Callable[..., Coroutine[Any, Any, None]], *args: object) -> bool:
        """Run ``work(*args)`` in the node's task group; False once the node stopped."""
        ...


class Connection:
    """Runs one session's I/O until it ends; see the module docstring."""

    __slots__ = (
        "_aborted",
        "_flush_pending",
        "_host",
        "_scope",
        "_writer_scope",
        "_writing",
        "core",
        "transport",
    )

    def __init__(self, core: SessionCore, transport: Transport, host: Host) -> None:
        self.core = core
        self.transport = transport
        self._host = host
        self._aborted = False
        #: The flusher will visit this session this turn.
        self._flush_pending = False
        #: A writer task runs: it sends everything queued, then ends.
        self._writing = False
        self._writer_scope: anyio.CancelScope | None = None
        self._scope: anyio.CancelScope | None = None

    # -- what the registry and the rooms see ------------------------------------

    @property
    def session(self) -> Session:
        return self.core.session

    @property
    def id(self) -> str:
        return self.core.session.id

    @property
    def user(self) -> str:
        return self.core.session.user

    @property
    def queued(self) -> int:
        return len(self.core.outbox)

    def deliver(self, publication: Publication, frame: str) -> None:
        """A room's message; never waits (see :meth:`SessionCore.deliver`)."""
        if self.core.deliver(publication, frame) and not self._flush_pending:
            self._schedule()

    def notify(self, frame: str) -> None:
        """An event frame for JSON sessions; never waits."""
        if self.core.notify(frame):
            self._schedule()

    def restarted(self, run: RunStarted) -> None:
        """A room's new run; never waits."""
        if self.core.restarted(run):
            self._schedule()

    def on_timer(self, now: float) -> None:
        """The session's timers at ``now`` (the supervisor calls this every tick)."""
        self.core.tick(now)
        self._carry_out_now()
        self._schedule()

    def close(self, error: SessionClosed) -> None:
        """Start closing with ``error``'s code; idempotent, never waits."""
        self.core.close(error, self._host.clock.now())
        self._schedule()

    def abort(self) -> None:
        """Cut the connection now (a peer that does not answer the close, a failure)."""
        self._aborted = True
        self.core.close(InternalError(), self._host.clock.now())
        self.transport.abort()
        if self._scope is not None:
            self._scope.cancel()
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    # -- running -------------------------------------------------------------------

    async def serve(self, handshake: Handshake, closing: SessionClosed | None = None) -> None:
        """Run the accepted session until it ends, then record how it ended.

        With ``closing`` (the server began draining meanwhile), the session is
        closed at once.
        """
        clock = self._host.clock
        disconnect: Disconnect | None = None
        try:
            self.core.accept(handshake, clock.now(), clock.time(), closing)
            await self._carry_out()
            self._schedule()
            with anyio.CancelScope() as self._scope:
                disconnect = await self._read_loop()
        finally:
            self._finish(disconnect)

    async def _read_loop(self) -> Disconnect:
        transport, core, clock = self.transport, self.core, self._host.clock
        flusher = self._host.flusher
        while True:
            try:
                item = await transport.receive()
            except Exception:
                return Disconnect(CloseCode.ABNORMAL, CONNECTION_LOST)
            if isinstance(item, Disconnect):
                return item
            core.receive(item, clock.now(), clock.time())
            if core.has_requests:
                await self._carry_out()
            if not self._flush_pending:
                self._schedule()
            if not transport.pending():
                # The burst is read: the flusher writes what it caused now, in this
                # turn of the event loop, not the next (a fifth of echo's throughput).
                flusher.flush_now()

    async def _carry_out(self) -> None:
        """Carry out the core's requests, in order, reporting each outcome back (which
        may make more: a join's presence announcement)."""
        while requests := self.core.requests():
            for request in requests:
                try:
                    await self._do(request)
                except Exception:
                    log.exception("session %s: internal error", self.id)
                    self.core.close(InternalError(), self._host.clock.now())

    def _carry_out_now(self) -> None:
        """The requests that need no waiting (a timer asks for nothing else)."""
        for request in self.core.requests():
            if isinstance(request, Abort):
                self.abort()
            elif isinstance(request, Unsubscribe):
                self._host.rooms.leave(request.room, self)

    async def _do(self, request: Request) -> None:
        host, core = self._host, self.core
        try:
            if isinstance(request, Publish):
                core.published(request, await host.broker.publish(request.draft))
            elif isinstance(request, Subscribe):
                await self._subscribe(request)
            elif isinstance(request, ListMembers):
                core.listed(request, await host.broker.presence_users(request.room))
            elif isinstance(request, Unsubscribe):
                host.rooms.leave(request.room, self)
            elif isinstance(request, Announce):
                await self._announce(request)
            else:
                self.abort()
        except BrokerUnavailable as error:
            assert isinstance(request, Publish | Subscribe | ListMembers)
            core.failed(request, error)

    async def _subscribe(self, request: Subscribe) -> None:
        """Join: subscribed first, so that nothing published meanwhile is lost; the
        history read next; presence counted only if the session is not closing."""
        host, core, room = self._host, self.core, request.room
        try:
            await host.rooms.join(room, self)
            try:
                recovery = await host.broker.recover(room, request.since, request.epoch)
                if core.closing is not None:
                    host.rooms.leave(room, self)
                    core.abandoned(request)
                    return
                first, users = await host.broker.presence_enter(room, self.user)
            except BaseException:
                host.rooms.leave(room, self)
                raise
        except BrokerUnavailable:
            raise
        except BaseException:
            core.abandoned(request)
            raise
        host.rooms.enter(room, self, users)
        core.entered(request, recovery, first, users)

    async def _announce(self, request: Announce) -> None:
        try:
            await self._host.broker.announce(request.change)
        except BrokerUnavailable:
            log.warning(
                "session %s: presence join in %s not announced", self.id, request.change.room
            )

    def _finish(self, disconnect: Disconnect | None) -> None:
        host = self._host
        for room in self.core.ended(disconnect, host.clock.now()):
            host.rooms.leave(room, self)
        host.registry.finished(self)
        session = self.session
        log.debug(
            "session %s closed: %s %s by %s",
            session.id,
            session.close_code,
            session.close_reason,
            session.closed_by,
        )
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    # -- writing (the flusher is its one owner) -----------------------------------

    def _schedule(self) -> None:
        """Have the flusher visit this session this turn (it writes, or starts the writer)."""
        if self._flush_pending or self._writing:
            return
        self._flush_pending = True
        if not self._host.flusher.add(self):
            self.start_writer([])

    def flush(self) -> None:
        """Write the outbox now if the socket takes it; else start the writer (flusher only)."""
        self._flush_pending = False
        if self._writing or not self.session.is_live:
            return
        core = self.core
        if not core.outbox:
            if core.close_frame is not None:
                self.start_writer([])
            return
        frames = core.outbox.take()
        try:
            written = self.transport.write(self._encoded(frames))
        except Exception:
            log.exception("session %s: write failed", self.id)
            self.abort()
            return
        if not written:
            self.start_writer(frames)
            return
        core.sent(len(frames))
        if core.close_frame is not None:
            self.start_writer([])

    def start_writer(self, frames: list[str]) -> None:
        """Start the writer task with ``frames`` first, unless one runs (then it sends them)."""
        self._flush_pending = False
        if self._writing or self._aborted or not self.session.is_live:
            return
        if self._host.spawn(self._write_loop, frames):
            self._writing = True
        else:
            # The node has stopped: nothing can be written any more.
            self.transport.abort()

    async def _write_loop(self, first: list[str]) -> None:
        """Send ``first`` and everything queued, waiting for the socket; then the close frame."""
        core = self.core
        try:
            with anyio.CancelScope() as self._writer_scope:
                frames = first or core.outbox.take()
                while frames and not self._aborted:
                    await self.transport.send(self._encoded(frames))
                    core.sent(len(frames))
                    frames = core.outbox.take()
                close = core.close_frame
                if close is not None and not self._aborted:
                    core.close_frame_sent()
                    await self.transport.close(*close)
        except Exception:
            log.exception("session %s: writer failed", self.id)
            self.abort()
        finally:
            # Nothing was queued since the last take: the flusher writes from here.
            self._writing = False
            self._writer_scope = None

    def _encoded(self, frames: list[str]) -> list[str]:
        """``frames`` as the WebSocket messages this session's protocol sends."""
        if self.session.protocol is Subprotocol.BATCH:
            return list(_batches(frames))
        return frames


#: A ``chat.v1.batch`` frame carries at most this many UTF-8 bytes (one larger object goes alone).
MAX_BATCH_BYTES = 65536


def _batches(frames: list[str]) -> Iterator[str]:
    """``frames`` joined by newlines into as few frames as :data:`MAX_BATCH_BYTES` allows."""
    batch: list[str] = []
    size = 0
    for frame in frames:
        # isascii() is a flag lookup: only text with other characters is encoded to count.
        length = len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))
        if batch and size + length + 1 > MAX_BATCH_BYTES:
            yield "\n".join(batch)
            batch, size = [], 0
        batch.append(frame)
        size += length + 1
    if batch:
        yield "\n".join(batch)
