"""The driver of one session: it carries out what the session's core decides.

A :class:`Connection` reads client frames in its reader (the calling task)
and hands each to its :class:`~chat.core.SessionCore`, then carries out the
core's requests (publish, join, list members, leave, announce) in
order, before it reads the next frame, and reports each outcome back.

Everything for the client goes through the core's outbox, which the
session's :class:`~chat.writer.Writer` writes, with the node's
:class:`~chat.flusher.Flusher` as its one owner. The flusher runs once per
turn of the event loop, and also when a reader has read all the frames that
were waiting, so that a reply goes out in the turn that caused it. A peer
that does not answer the close within ``CHAT_DRAIN_TIMEOUT`` is cut when the
core asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio

from chat.brokers import BrokerUnavailable, Bus, History, PresenceStore
from chat.clock import Clock
from chat.core import SessionCore
from chat.envelope import Publication, RunStarted
from chat.errors import CloseCode, InternalError, SessionClosed
from chat.flusher import Flusher
from chat.registry import Registry
from chat.requests import (
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
from chat.writer import Writer

log = logging.getLogger("chat.session")

#: Sends of one burst published together, at most.
MAX_BATCH = 64


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

    __slots__ = ("_host", "_scope", "core", "transport", "writer")

    def __init__(self, core: SessionCore, transport: Transport, host: Host) -> None:
        self.core = core
        self.transport = transport
        self._host = host
        #: The session's write side (the node's flusher owns its writes).
        self.writer = Writer(core, transport, host.flusher, host.spawn, self.abort)
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
        if self.core.deliver(publication, frame) and not self.writer.pending:
            self.writer.schedule()

    def notify(self, frame: str) -> None:
        """An event frame for JSON sessions; never waits."""
        if self.core.notify(frame):
            self.writer.schedule()

    def restarted(self, run: RunStarted) -> bool:
        """A room's new run; never waits (see :meth:`SessionCore.restarted`)."""
        told = self.core.restarted(run)
        if self.core.has_output:
            self.writer.schedule()
        return told

    def on_timer(self, now: float) -> None:
        """The session's timers at ``now`` (the supervisor calls this every tick)."""
        core = self.core
        if core.tick(now):
            self.abort()
        elif core.has_output:
            self.writer.schedule()  # a ping, or a close begun

    def close(self, error: SessionClosed) -> None:
        """Start closing with ``error``'s code; idempotent, never waits."""
        self.core.close(error, self._host.clock.now())
        self.writer.schedule()

    def abort(self) -> None:
        """Cut the connection now (a peer that does not answer the close, a failure)."""
        self.writer.stop()
        self.core.close(InternalError(), self._host.clock.now())
        self.transport.abort()
        if self._scope is not None:
            self._scope.cancel()

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
            with anyio.CancelScope() as self._scope:
                await self._carry_out()  # the URL's room (an abort cuts it short)
                if self.core.has_output:
                    self.writer.schedule()
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
                item = Disconnect(CloseCode.ABNORMAL, CONNECTION_LOST)
            if core.has_requests and (isinstance(item, Disconnect) or not core.batches(item)):
                await self._carry_out()  # the burst's sends, before what follows them
            if isinstance(item, Disconnect):
                return item
            core.receive(item, clock.now(), clock.time())
            if core.has_requests and not (
                # More sends of the burst wait: heard first, they are published with
                # these in one round trip to the broker (a Redis pipeline), and reach
                # every member together, in one write.
                transport.ready() and core.waiting_requests < MAX_BATCH
            ):
                await self._carry_out()
            if core.has_output:
                self.writer.schedule()
            if not transport.pending():
                # The burst is read: the flusher writes what it caused now, in this
                # turn of the event loop, not the next (a fifth of echo's throughput).
                flusher.flush_now()

    async def _carry_out(self) -> None:
        """Carry out the core's requests, in order, reporting each outcome back (which
        may make more: a join's presence announcement). Publishes that follow one
        another go to the broker together (:meth:`Bus.publish_many`).

        What the core queued meanwhile (a ``joined``, a ``pong``) is written
        before each wait, not after the last.
        """
        core = self.core
        while requests := core.requests():
            start = 0
            while start < len(requests):
                if core.has_output:
                    self.writer.schedule()
                end = start + 1
                if type(requests[start]) is Publish:
                    while end < len(requests) and type(requests[end]) is Publish:
                        end += 1
                try:
                    if end - start > 1:
                        await self._publish_many(requests[start:end])  # type: ignore[arg-type]
                    else:
                        await self._do(requests[start])
                except Exception:
                    log.exception(
                        "session %s: internal error", self.id, extra=self.session.log_fields()
                    )
                    core.close(InternalError(), self._host.clock.now())
                start = end

    async def _publish_many(self, requests: list[Publish]) -> None:
        found = await self._host.broker.publish_many([request.draft for request in requests])
        replies = self.core.replies
        for request, outcome in zip(requests, found, strict=True):
            if isinstance(outcome, BrokerUnavailable):
                replies.failed(request, outcome)
            else:
                replies.published(request, outcome)

    async def _do(self, request: Request) -> None:
        host, core = self._host, self.core
        try:
            if isinstance(request, Publish):
                core.replies.published(request, await host.broker.publish(request.draft))
            elif isinstance(request, Subscribe):
                await self._subscribe(request)
            elif isinstance(request, ListMembers):
                core.replies.listed(request, await host.broker.presence_users(request.room))
            elif isinstance(request, Unsubscribe):
                host.rooms.leave(request.room, self)
            else:
                await self._announce(request)
        except BrokerUnavailable as error:
            assert isinstance(request, Publish | Subscribe | ListMembers)
            core.replies.failed(request, error)

    async def _subscribe(self, request: Subscribe) -> None:
        """Join: subscribed first, so that nothing published meanwhile is lost; the
        history read next; presence counted only if the session is not closing."""
        host, core, room = self._host, self.core, request.room
        subscribed = counted = False
        try:
            await host.rooms.join(room, self)
            subscribed = True
            recovery = await host.broker.recover(room, request.since, request.epoch)
            if core.closing is None:
                first, users = await host.broker.presence_enter(room, self.user)
                counted = True
        except BaseException as error:
            if subscribed:
                host.rooms.leave(room, self)
            if not isinstance(error, BrokerUnavailable):  # that one is answered as failed
                core.replies.abandoned(request)
            raise
        if core.closing is not None:
            # Closing while it joined: nothing more to send; presence counted
            # meanwhile is entered, so that leaving releases it.
            if counted:
                host.rooms.enter(room, self, users)
            host.rooms.leave(room, self)
            core.replies.abandoned(request)
            return
        host.rooms.enter(room, self, users)
        core.replies.entered(request, recovery, first, users)

    async def _announce(self, request: Announce) -> None:
        try:
            await self._host.broker.announce(request.change)
        except BrokerUnavailable:
            log.warning(
                "session %s: presence join in %s not announced",
                self.id,
                request.change.room,
                extra=self.session.log_fields(room=request.change.room),
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
            extra=session.log_fields(),
        )
        self.writer.stop()
