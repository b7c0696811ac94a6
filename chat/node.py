"""A node: this process's registry, rooms, broker and supervisor, and the session lifecycle.

The edge hands every WebSocket handshake to :meth:`Node.handle` and calls
:meth:`Node.shutdown` when the server stops; everything between is here.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from chat.auth import Authenticator, Identity, TokenError
from chat.brokers import Broker, BrokerUnavailable, open_broker
from chat.clock import Clock, MonotonicClock, wait_within
from chat.connection import Connection
from chat.core import SessionCore
from chat.envelope import DisconnectCommand, Draft, Publication, Tally
from chat.errors import Disconnected, Rejection, Shutdown, retry_after_ms
from chat.flusher import Flusher
from chat.protocol import MAX_EPOCH_LENGTH, FrameId, Subprotocol
from chat.registry import Registry
from chat.rooms import Rooms
from chat.session import Session, Timers
from chat.settings import NAME_PATTERN, Settings
from chat.supervisor import Supervisor
from chat.transport import Endpoint, Handshake, Socket

log = logging.getLogger("chat")

#: After the drain timeout, how long aborted sessions get to finish.
ABORT_GRACE = 1.0
#: The HTTP versions a WebSocket handshake may come over (not 2: see :meth:`Node._admit`).
WEBSOCKET_HTTP_VERSIONS = frozenset({"1.1", "1.0"})


def choose_subprotocol(endpoint: Endpoint, offered: tuple[str, ...]) -> Subprotocol:
    """The first JSON subprotocol offered to a room, else plain text (always for echo)."""
    if endpoint is Endpoint.ECHO:
        return Subprotocol.TEXT
    for name in offered:
        if name == Subprotocol.JSON.value:
            return Subprotocol.JSON
        if name == Subprotocol.BATCH.value:
            return Subprotocol.BATCH
    return Subprotocol.TEXT


class Node:
    """One process's share of the chat service. Use as ``async with node:``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or MonotonicClock()
        self.broker: Broker = broker or open_broker(settings, self.clock)
        self.registry = Registry(
            retention=settings.closed_retention, max_closed=settings.closed_max
        )
        self.rooms = Rooms(self.broker, self.spawn)
        self.flusher = Flusher()
        self.auth = Authenticator(settings)
        self.supervisor = Supervisor(self.registry, self.clock, settings.supervisor_tick)
        self.timers = Timers.of(settings)
        self.started_at = self.clock.time()
        self.started_mono = self.clock.now()
        self.draining = False
        self.running = False
        self._group: TaskGroup | None = None
        self._drained: anyio.Event | None = None

    async def __aenter__(self) -> Self:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        await group.start(self._run_broker)
        group.start_soon(self.flusher.run)
        group.start_soon(self.supervisor.run)
        self.running = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        await self.shutdown()
        self.running = False
        assert self._group is not None
        self._group.cancel_scope.cancel()
        return await self._group.__aexit__(exc_type, exc, traceback)

    async def _run_broker(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        await self.broker.run(
            self.rooms.dispatch,
            lambda: len(self.registry),
            task_status=task_status,
            apply=self.close_sessions,
        )

    def spawn(self, work: Callable[..., Coroutine[Any, Any, None]], *args: object) -> bool:
        """Run ``work(*args)`` in the node's task group (it must handle its own errors).

        False, and nothing runs, once the node has stopped.
        """
        if not self.running or self._group is None:
            return False
        self._group.start_soon(work, *args)
        return True

    @property
    def ready(self) -> bool:
        """Accepting sessions: running, not draining, broker healthy."""
        return self.running and not self.draining and self.broker.healthy

    # -- sessions ----------------------------------------------------------------

    async def handle(self, handshake: Handshake, transport: Socket) -> None:
        """Admit or refuse one handshake, then run the session until it ends."""
        now = self.clock.now()
        session_id = secrets.token_hex(6)
        session = Session(
            id=session_id,
            user=f"anon-{session_id[:8]}",
            protocol=choose_subprotocol(handshake.endpoint, handshake.subprotocols),
            remote=handshake.remote,
            node=self.settings.node_id,
            timers=self.timers,
            now=now,
            host=handshake.host,
            room=handshake.room,
        )
        core = SessionCore(
            session, self.settings, self.auth, self.registry.totals, self.rooms.users
        )
        connection = Connection(core, transport, self)
        self.registry.add(connection)
        claimed = False
        try:
            try:
                identity = self._admit(handshake, connection)
                if identity is not None:
                    core.authenticate(identity)
                await self._claim(session.user)
                claimed = True
            except Exception as error:
                rejection = error if isinstance(error, Rejection) else None
                if rejection is None:
                    log.exception(
                        "session %s: admitting the handshake failed",
                        session.id,
                        extra=session.log_fields(),
                    )
                    rejection = Rejection(500, "internal_error", "internal error")
                session.reject(self.clock.now(), rejection.status, rejection.reason)
                log.debug(
                    "session %s refused: %d %s",
                    session.id,
                    rejection.status,
                    rejection.reason,
                    extra=session.log_fields(close_code=rejection.status),
                )
                self.registry.rejected(connection, rejection.reason)
                await transport.reject(rejection.status, rejection.detail)
                return
            await self._run(handshake, connection, transport)
        finally:
            if claimed:
                with anyio.CancelScope(shield=True):
                    await self._release(session)

    async def _claim(self, user: str) -> None:
        """Count a session against ``user``'s cluster-wide cap; raises :class:`Rejection`."""
        cap = self.settings.max_sessions_per_user
        try:
            if not await self.broker.claim_session(user, cap):
                raise Rejection(429, "max_sessions_per_user", f"at most {cap} sessions per user")
        except BrokerUnavailable:
            raise _broker_down() from None

    async def _release(self, session: Session) -> None:
        try:
            await self.broker.release_session(session.user)
        except BrokerUnavailable:
            log.warning(
                "session %s: its user's session count was not released",
                session.id,
                extra=session.log_fields(),
            )

    async def _run(self, handshake: Handshake, connection: Connection, transport: Socket) -> None:
        """Accept an admitted handshake and serve the session until it ends."""
        session = connection.session
        try:
            protocol = session.protocol
            await transport.accept(None if protocol is Subprotocol.TEXT else protocol.value)
        except BaseException:
            session.reject(self.clock.now(), 500, "accept_failed")
            self.registry.rejected(connection, "accept_failed")
            raise
        self.registry.accepted(connection)
        log.debug(
            "session %s accepted: %s, user %s, from %s",
            session.id,
            session.protocol.value,
            session.user,
            session.remote,
            extra=session.log_fields(),
        )
        # Admitted before a drain began: greeted, then closed like the others.
        closing = Shutdown(retry_after_ms=retry_after_ms()) if self.draining else None
        await connection.serve(handshake, closing)

    def _admit(self, handshake: Handshake, connection: Connection) -> Identity | None:
        """The session's identity (None in open mode); raises :class:`Rejection`.

        Checked in order: the HTTP version (505), the request's shape (400),
        its origin (403), its token (401) and the room it may join (403), then
        capacity (503, 429).
        The session then counts against its user's and address's caps.
        """
        session = connection.session
        if handshake.http_version not in WEBSOCKET_HTTP_VERSIONS:
            # Over HTTP/2 (RFC 8441) one TCP connection carries many sessions
            # and never pushes back on one: no slow-consumer close, no abort.
            raise Rejection(
                505,
                "http_version",
                "WebSockets are served over HTTP/1.1 only: connect without HTTP/2",
            )
        if handshake.endpoint is Endpoint.ROOM and (
            handshake.room is None or not NAME_PATTERN.fullmatch(handshake.room)
        ):
            raise Rejection(400, "bad_room", "room id must match [A-Za-z0-9_.-]{1,64}")
        if handshake.since is not None and handshake.since < 0:
            raise Rejection(400, "bad_since", "since must be a non-negative integer")
        if handshake.epoch is not None and len(handshake.epoch) > MAX_EPOCH_LENGTH:
            raise Rejection(
                400, "bad_epoch", f"epoch must be at most {MAX_EPOCH_LENGTH} characters"
            )
        origins = self.settings.origins
        origin = handshake.origin
        if origins is not None and origin is not None and origin.lower() not in origins:
            raise Rejection(403, "bad_origin", "origin not allowed")
        identity: Identity | None = None
        if self.auth.enabled:
            if not handshake.token:
                raise Rejection(401, "token_missing", "token required")
            try:
                identity = self.auth.verify(handshake.token, self.clock.time())
            except TokenError as error:
                raise Rejection(401, error.reason, error.detail) from None
            if handshake.room is not None and not identity.may_join(handshake.room):
                raise Rejection(403, "room_forbidden", "this room is not allowed by the token")
            session.user = identity.user
        elif handshake.user is not None:
            if not NAME_PATTERN.fullmatch(handshake.user):
                raise Rejection(400, "bad_user", "user must match [A-Za-z0-9_.-]{1,64}")
            session.user = handshake.user
        settings = self.settings
        if self.draining or not self.running:
            raise Rejection(503, "draining", "the server is shutting down")
        if not self.broker.healthy:
            raise _broker_down()
        if len(self.registry) > settings.max_sessions:
            raise Rejection(503, "max_sessions", "the server is full, try again later")
        cap = settings.max_sessions_per_ip
        if cap and self.registry.sessions_from(session.host) >= cap:
            raise Rejection(429, "max_sessions_per_ip", f"at most {cap} sessions per address")
        self.registry.admit(connection)
        return identity

    # -- the server API ----------------------------------------------------------------

    async def publish(self, room: str, user: str, text: str, id: FrameId = None) -> Publication:
        """Publish ``text`` to ``room`` as ``user``, exactly as a member's ``send`` would be
        (idempotent with ``id``: see :mod:`chat.idempotency`).

        ``room``, ``user`` and ``id`` must be valid already. Raises
        :class:`~chat.brokers.BrokerUnavailable`.
        """
        return await self.broker.publish(Draft(room, user, text, id, self.clock.time()))

    async def disconnect(self, command: DisconnectCommand) -> Tally:
        """Close the sessions ``command`` names on every node (this one through
        :meth:`close_sessions`); see :meth:`chat.brokers.Control.disconnect`."""
        return await self.broker.disconnect(command)

    def close_sessions(self, command: DisconnectCommand) -> int:
        """Apply ``command`` to this node: its live sessions that it names get ``bye``
        ``disconnected`` with its detail (JSON sessions) and close 1008, or 1013 when
        they may reconnect. Returns how many began closing; never waits."""
        closed = self.registry.close_named(
            command.session,
            command.user,
            lambda: Disconnected(command.detail, reconnect=command.reconnect),
        )
        if closed:
            log.info(
                "disconnected %d session(s) by the server API (session %s, user %s)",
                closed,
                command.session or "any",
                command.user or "any",
            )
        return closed

    async def shutdown(self) -> None:
        """Drain: refuse new handshakes, close every session with ``bye`` and 1001.

        Waits up to ``CHAT_DRAIN_TIMEOUT`` for the close handshakes, then cuts
        the rest. Idempotent: a second call waits for the first to finish.
        """
        if self._drained is not None:
            await self._drained.wait()
            return
        self._drained = anyio.Event()
        self.draining = True
        try:
            live = self.registry.live()
            if live:
                log.info("draining %d sessions", len(live))
            for connection in live:
                connection.close(Shutdown(retry_after_ms=retry_after_ms()))
            if not await wait_within(
                self.clock, self.settings.drain_timeout, self.registry.wait_empty
            ):
                stuck = self.registry.live()
                log.warning("cutting %d sessions that did not answer the close", len(stuck))
                for connection in stuck:
                    connection.abort()
                await wait_within(self.clock, ABORT_GRACE, self.registry.wait_empty)
        finally:
            self._drained.set()


def _broker_down() -> Rejection:
    return Rejection(503, "broker_unavailable", "unavailable, try again later")
