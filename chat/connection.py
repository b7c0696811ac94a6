"""The live side of one session: its reader, its writer, and how it ends.

A :class:`Connection` runs in its reader (the calling task, handling each
client frame in order). Everything sent to the client goes through the
session's :class:`~chat.sendqueue.SendQueue`, so a broadcast never waits for
this session, and a close is just the last thing queued. The node's
:class:`~chat.sendqueue.Flusher` writes the queue straight to a socket that
can take it, once per turn of the event loop; a writer task (in the node's
task group) exists only while the socket is backed up, or the server cannot
write directly, or the session is closing.

A server-side close is :meth:`Connection.close`: idempotent, never waits.
The writer task sends what is queued, the ``bye`` (JSON sessions) and the close
frame; the reader then waits for the peer's close reply. A peer that does not
answer within ``CHAT_DRAIN_TIMEOUT`` is cut by the supervisor
(:meth:`Connection.on_timer` calls :meth:`Connection.abort`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import anyio

from chat.auth import Identity, TokenError
from chat.brokers import BrokerUnavailable, Draft, Publication
from chat.envelope import PresenceChange, RunStarted, encode_message
from chat.errors import (
    BinaryFrame,
    BrokerDown,
    CloseCode,
    ErrorCode,
    Flooding,
    FrameError,
    HeartbeatTimeout,
    IdleTimeout,
    InternalError,
    MessageTooBig,
    SessionClosed,
    SlowConsumer,
    TokenExpired,
)
from chat.protocol import (
    PING,
    PONG,
    Ack,
    Bye,
    ClientFrame,
    FrameId,
    HeartbeatInfo,
    Join,
    Joined,
    Leave,
    Left,
    LimitsInfo,
    MemberInfo,
    Ping,
    Pong,
    Refresh,
    Send,
    Subprotocol,
    Welcome,
    decode_client_frame,
    encode,
    error_frame,
    peek_id,
)
from chat.ratelimit import RateLimiter, Verdict
from chat.sendqueue import SendQueue
from chat.session import Due, Session

if TYPE_CHECKING:
    from chat.node import Node

log = logging.getLogger("chat.session")


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The connection ended without the server asking: ``code`` and why, as seen below us."""

    code: int
    reason: str
    by: str = "client"


#: The ``detail`` of ``error`` ``rate_limited``.
RATE_DETAIL = "over the message rate: slow down"
#: The ``detail`` of ``error`` ``unavailable`` when nothing was done.
UNAVAILABLE_DETAIL = "the broker is unavailable, nothing was done: try again"
#: ... and when the broker did not answer in time (a ``send`` may still be published, once).
UNCERTAIN_DETAIL = (
    "the broker did not answer in time: a send may still be published;"
    " retry with the same id to get its ack"
)

#: The peer's close frame arrived (``code`` is the peer's, when the server can tell).
CLIENT_CLOSED = "client_closed"
#: The connection died without a close frame (reset, timeout).
CONNECTION_LOST = "connection_lost"


class Transport(Protocol):
    """One WebSocket as the domain sees it; the edge adapts ASGI to this."""

    async def accept(self, subprotocol: str | None) -> None:
        """Complete the handshake, selecting ``subprotocol``."""
        ...

    async def reject(self, status: int, detail: str) -> None:
        """Refuse the handshake with an HTTP ``status`` and a JSON ``detail``."""
        ...

    async def receive(self) -> str | bytes | Disconnect:
        """The next text or binary message, or :class:`Disconnect` once the connection ended."""
        ...

    async def send_texts(self, texts: list[str]) -> None:
        """Send several text frames, in order (at once where the server allows)."""
        ...

    def writable_now(self) -> bool:
        """True when :meth:`write_now` may be used: the socket takes frames without waiting."""
        ...

    def input_pending(self) -> bool:
        """True when more client frames are known to be waiting (or it cannot be known)."""
        ...

    def write_now(self, texts: list[str]) -> None:
        """Write text frames without waiting (only after :meth:`writable_now`)."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame; returns quietly if the connection is already gone."""
        ...

    def abort(self) -> None:
        """Drop the connection now, without waiting for anything."""
        ...


class Endpoint(StrEnum):
    """Which WebSocket route a handshake came through."""

    #: ``/ws``: each text frame answered with ``Message text was: X``.
    ECHO = "echo"
    #: ``/ws/{room_id}``: plain-text or JSON rooms.
    ROOM = "room"


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the app knows of a WebSocket handshake before accepting it.

    ``token`` came in a header, the query or a ``bearer.`` subprotocol; it is
    never logged nor shown. ``origin`` is the ``Origin`` header (browsers).
    """

    endpoint: Endpoint
    remote: str
    room: str | None = None
    subprotocols: tuple[str, ...] = ()
    user: str | None = None
    since: int | None = None
    epoch: str | None = None
    host: str = ""
    origin: str | None = None
    token: str | None = field(default=None, repr=False)
    #: The HTTP version of the upgrade request ("1.1"; "2" for RFC 8441).
    http_version: str = "1.1"


class Connection:
    """Runs one accepted session until it ends; see the module docstring."""

    __slots__ = (
        "_aborted",
        "_accepted",
        "_closing",
        "_epochs",
        "_finished",
        "_flush_pending",
        "_held",
        "_left",
        "_limiter",
        "_node",
        "_on_text",
        "_room_seq",
        "_scope",
        "_writer_scope",
        "_writing",
        "close_deadline",
        "identity",
        "queue",
        "session",
        "transport",
    )

    def __init__(self, node: Node, session: Session, transport: Transport) -> None:
        self._node = node
        self.session = session
        self.transport = transport
        self.queue = SendQueue(node.settings.send_queue)
        self.close_deadline: float | None = None
        #: Who the session's token speaks for; None in open mode.
        self.identity: Identity | None = None
        self._limiter = RateLimiter(node.settings.rate, node.settings.burst, node.clock.now())
        self._closing: SessionClosed | None = None
        self._accepted = False
        self._aborted = False
        self._finished = False
        #: The node's flusher will visit this session this turn.
        self._flush_pending = False
        #: A writer task runs: it sends everything queued, then ends.
        self._writing = False
        self._writer_scope: anyio.CancelScope | None = None
        self._scope: anyio.CancelScope | None = None
        self._on_text: Callable[[str], Awaitable[None]] = self._on_json
        #: The last ``seq`` sent per joined room: nothing at or below it is sent again.
        self._room_seq: dict[str, int] = {}
        #: Live messages held back per room while its history is being read.
        self._held: dict[str, list[tuple[Publication, str]]] = {}
        #: The epoch (run) of each joined room's ``seq``.
        self._epochs: dict[str, str] = {}
        #: ``(epoch, last seq sent)`` of rooms left, so a rejoin never resends them.
        self._left: dict[str, tuple[str, int]] = {}

    # -- what the registry and the rooms see ------------------------------------

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def user(self) -> str:
        return self.session.user

    @property
    def queued(self) -> int:
        return len(self.queue)

    @property
    def closing(self) -> SessionClosed | None:
        """The close the server started, if any."""
        return self._closing

    def deliver(self, publication: Publication, frame: str) -> None:
        """Queue a room message (JSON ``frame``, or the bare text); never waits.

        Each ``seq`` reaches the client at most once, after its room's replay.
        """
        room = publication.room
        if self._held:
            held = self._held.get(room)
            if held is not None:
                if len(held) < self._node.settings.send_queue:
                    held.append((publication, frame))
                else:
                    self._overflowed()
                return
        known = self._epochs.get(room)
        if known is not None and publication.epoch != known:
            # A new run that came without its notice (see restarted): say so now.
            self._start_run(
                room, publication.epoch, publication.seq - 1, self._node.rooms.users(room)
            )
        elif publication.seq <= self._room_seq.get(room, 0):
            return
        self._room_seq[room] = publication.seq
        self.send(publication.text if self.session.protocol is Subprotocol.TEXT else frame)

    def restarted(self, run: RunStarted) -> None:
        """The room began a new run of its ``seq``: a fresh ``joined`` (``recovered:
        false``, the new ``epoch``, the members) before the run's first message."""
        known = self._epochs.get(run.room)
        if run.room in self._held or known is None or known == run.epoch:
            return  # joining (its recovery tells the run), or told already
        self._start_run(run.room, run.epoch, run.seq, list(run.users))

    def _start_run(self, room: str, epoch: str, seq: int, users: list[str]) -> None:
        self._epochs[room] = epoch
        self._room_seq[room] = seq
        if self.session.protocol is not Subprotocol.TEXT:
            self._send_joined(room, seq, epoch, False, users)

    def notify(self, frame: str) -> None:
        """Queue an event frame for JSON sessions (plain-text clients cannot read it)."""
        if self.session.protocol is not Subprotocol.TEXT:
            self.send(frame)

    def send(self, frame: str) -> None:
        """Queue one encoded frame; a full queue closes this session with 1013."""
        if self._closing is not None:
            return
        if not self.queue.put_nowait(frame):
            self._overflowed()
        elif not self._flush_pending:
            self._flush_pending = True
            if not self._node.flusher.add(self):
                self.start_writer()

    def _overflowed(self) -> None:
        """More is waiting for this session than ``CHAT_SEND_QUEUE``: close it 1013."""
        self.close(SlowConsumer(retry_after_ms=self._node.retry_after_ms()))

    def flush(self) -> None:
        """Write what is queued now if the socket takes it; else start the writer."""
        self._flush_pending = False
        if not self.queue or self._writing:
            return  # nothing, or the writer sends it (after what it is sending)
        if self._accepted and self.transport.writable_now():
            frames = self.queue.take()
            try:
                self.transport.write_now(self._encoded(frames))
            except Exception:
                log.exception("session %s: write failed", self.session.id)
                self.abort()
                return
            self._count(frames)
        else:
            self.start_writer()

    def start_writer(self) -> None:
        """Start a writer task unless one runs (nothing is written before the accept)."""
        self._flush_pending = False
        if self._writing or not self._accepted or self._finished or self._aborted:
            return
        if self._node.spawn(self._write_loop):
            self._writing = True
        else:
            # The node has stopped: nothing can be written any more.
            self.transport.abort()

    # -- closing ---------------------------------------------------------------

    def close(self, error: SessionClosed) -> None:
        """Start closing with ``error``'s code; idempotent, never waits.

        A slow consumer's backlog is dropped; otherwise what is queued is sent
        first. JSON sessions then get ``bye``, and every session the close frame.
        A session still connecting is closed this way as soon as it is accepted.
        """
        if self._closing is not None or self._finished:
            return
        self._closing = error
        grace = 0.0 if error.presumed_dead else self._node.settings.drain_timeout
        self.close_deadline = self._node.clock.now() + grace
        if isinstance(error, SlowConsumer):
            self.queue.clear()
        if self._accepted:
            self._seal(error)

    def _seal(self, error: SessionClosed) -> None:
        """Queue the ``bye`` (JSON sessions) and end the queue: the writer then closes."""
        if error.bye_reason is not None and self.session.protocol is not Subprotocol.TEXT:
            bye = Bye(
                reason=error.bye_reason,
                reconnect=error.reconnect,
                retry_after_ms=error.retry_after_ms,
            )
            self.queue.put_final(encode(bye))
        self.queue.close()
        self.start_writer()

    def abort(self) -> None:
        """Cut the connection now (a peer that does not answer the close)."""
        self._aborted = True
        if self._closing is None:
            self.close(InternalError())
        self.transport.abort()
        if self._scope is not None:
            self._scope.cancel()
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    def on_timer(self, now: float) -> None:
        """Act on what the session's timers ask for at ``now`` (called by the supervisor)."""
        if self._closing is not None:
            if self.close_deadline is not None and now >= self.close_deadline:
                self.abort()
            return
        if not self._accepted:
            return
        while (due := self.session.due(now)) is not None:
            if due is Due.PING:
                self.send(PING)
                self.session.ping_sent(now)
            elif due is Due.IDLE:
                self.session.go_idle(now)
            elif due is Due.HEARTBEAT_TIMEOUT:
                self.close(HeartbeatTimeout())
                return
            elif due is Due.TOKEN_EXPIRED:
                self.close(TokenExpired())
                return
            else:
                self.close(IdleTimeout())
                return

    # -- running ---------------------------------------------------------------

    async def serve(self, handshake: Handshake) -> None:
        """Run the accepted session until it ends, then record how it ended."""
        self._accepted = True
        disconnect: Disconnect | None = None
        try:
            try:
                if self._closing is not None:
                    self._seal(self._closing)
                else:
                    await self._greet(handshake)
            except BrokerUnavailable:
                self.close(BrokerDown(retry_after_ms=self._node.retry_after_ms()))
            except Exception:
                log.exception("session %s: internal error", self.session.id)
                self.close(InternalError())
            with anyio.CancelScope() as self._scope:
                disconnect = await self._read_loop()
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(disconnect)

    async def _greet(self, handshake: Handshake) -> None:
        node = self._node
        protocol = self.session.protocol
        if handshake.endpoint is Endpoint.ECHO:
            self._on_text = self._on_echo
            return
        assert handshake.room is not None
        if protocol is Subprotocol.TEXT:
            self._on_text = self._on_room_text
        else:
            settings = node.settings
            self.send(
                encode(
                    Welcome(
                        session=self.session.id,
                        user=self.session.user,
                        node=settings.node_id,
                        heartbeat=HeartbeatInfo(
                            interval=settings.heartbeat_interval,
                            timeout=settings.heartbeat_timeout,
                        ),
                        limits=LimitsInfo(
                            max_message_bytes=settings.max_message_bytes,
                            rate=settings.rate,
                            burst=settings.burst,
                        ),
                    )
                )
            )
        await self._join(handshake.room, handshake.since, handshake.epoch, None)

    async def _read_loop(self) -> Disconnect:
        transport = self.transport
        session = self.session
        totals = self._node.registry.totals
        limit = self._node.settings.max_message_bytes
        flusher = self._node.flusher
        while True:
            try:
                item = await transport.receive()
            except Exception:
                return Disconnect(CloseCode.ABNORMAL, CONNECTION_LOST)
            if isinstance(item, Disconnect):
                return item
            if self._closing is not None:
                continue
            session.messages_in += 1
            totals.messages_in += 1
            if isinstance(item, bytes):
                self.close(BinaryFrame())
            elif _too_big(item, limit):
                self.close(MessageTooBig())
            else:
                try:
                    await self._on_text(item)
                except Exception:
                    log.exception("session %s: internal error", session.id)
                    self.close(InternalError())
            if not transport.input_pending():
                # Nothing more to read now: write what this frame caused at once
                # (a burst of frames is written together, at its end).
                flusher.flush_now()

    async def _write_loop(self) -> None:
        """Send everything queued, waiting for the socket; then the close frame, if due."""
        queue = self.queue
        try:
            with anyio.CancelScope() as self._writer_scope:
                while not self._aborted and (frames := queue.take()):
                    await self.transport.send_texts(self._encoded(frames))
                    self._count(frames)
                if queue.closed and not (self._finished or self._aborted):
                    error = self._closing or InternalError()
                    await self.transport.close(error.code, error.description)
        except Exception:
            log.exception("session %s: writer failed", self.session.id)
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

    def _count(self, frames: list[str]) -> None:
        self.session.messages_out += len(frames)
        self._node.registry.totals.messages_out += len(frames)

    async def _finish(self, disconnect: Disconnect | None) -> None:
        self._finished = True
        node = self._node
        session = self.session
        # session.rooms stays as it was: status shows where a closed session was.
        for room in session.rooms:
            self._leave_room(room)
        if self._closing is not None:
            code, reason, by = int(self._closing.code), self._closing.reason, "server"
        elif disconnect is not None:
            code, reason, by = disconnect.code, disconnect.reason, disconnect.by
        else:
            code, reason, by = CloseCode.ABNORMAL, CONNECTION_LOST, "client"
        session.close(node.clock.now(), code, reason, by)
        node.registry.finished(self)
        log.debug("session %s closed: %s %s by %s", session.id, code, reason, by)
        self.queue.close()
        self.queue.clear()
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    # -- client frames -----------------------------------------------------------

    async def _on_echo(self, text: str) -> None:
        now = self._node.clock.now()
        if self._within_rate(now):
            self.session.touch(now)
            self.send(f"Message text was: {text}")

    async def _on_room_text(self, text: str) -> None:
        session = self.session
        clock = self._node.clock
        now = clock.now()
        if not self._within_rate(now):
            return
        session.touch(now)
        room = session.rooms[0]
        try:
            await self._node.broker.publish(Draft(room, session.user, text, None, clock.time()))
        except BrokerUnavailable:
            self.close(BrokerDown(retry_after_ms=self._node.retry_after_ms()))

    def _within_rate(self, now: float, raw: str | None = None) -> bool:
        """Take a token for one client frame, before it is even parsed.

        False when it must be dropped: over the rate, JSON sessions get
        ``error`` ``rate_limited`` (plain text: dropped and counted); a flood
        closes the session with 1008.
        """
        verdict = self._limiter.check(now)
        if verdict is Verdict.ALLOW:
            return True
        self._node.registry.totals.rate_limited += 1
        if verdict is Verdict.ABUSE:
            self.close(Flooding())
        elif self.session.protocol is not Subprotocol.TEXT:
            error = FrameError(ErrorCode.RATE_LIMITED, RATE_DETAIL, peek_id(raw or ""))
            self.send(error_frame(error))
        return False

    async def _on_json(self, raw: str) -> None:
        now = self._node.clock.now()
        if not self._within_rate(now, raw):
            return
        try:
            frame = decode_client_frame(raw)
        except FrameError as error:
            self.session.touch(now)
            self.send(error_frame(error))
            return
        if isinstance(frame, Pong):
            # A pong the server asked for is free; an unsolicited one is not.
            if self.session.awaiting_pong:
                self._limiter.refund()
            self.session.pong_received(now)
            return
        if isinstance(frame, Ping):
            self.send(PONG)
            return
        self.session.touch(now)
        try:
            await self._on_request(frame)
        except FrameError as error:
            self.send(error_frame(error))

    async def _on_request(self, frame: ClientFrame) -> None:
        try:
            if isinstance(frame, Send):
                await self._publish(frame)
            elif isinstance(frame, Join):
                await self._join(frame.room, frame.since, frame.epoch, frame.id)
            elif isinstance(frame, Leave):
                self._leave(frame)
            elif isinstance(frame, Refresh):
                self._refresh(frame)
        except BrokerUnavailable as error:
            detail = UNCERTAIN_DETAIL if error.uncertain else UNAVAILABLE_DETAIL
            raise FrameError(ErrorCode.UNAVAILABLE, detail, frame.id) from None

    def _refresh(self, frame: Refresh) -> None:
        """Replace the session's token; a refused one changes nothing."""
        node = self._node
        if not node.auth.enabled:
            raise FrameError(
                ErrorCode.BAD_REQUEST, "refresh needs JWT auth, which is not configured", frame.id
            )
        try:
            identity = node.auth.verify(frame.token, node.clock.time())
        except TokenError as error:
            raise FrameError(
                ErrorCode.BAD_REQUEST, f"refresh refused: {error.detail}", frame.id
            ) from None
        if identity.user != self.session.user:
            raise FrameError(
                ErrorCode.FORBIDDEN, "refresh must be for the session's own user", frame.id
            )
        self.identity = identity
        self.session.token_deadline = node.token_deadline(identity)
        # The new token's rooms apply at once: rooms it no longer allows are left.
        for room in [r for r in self.session.rooms if not identity.may_join(r)]:
            self._drop(room)

    async def _publish(self, frame: Send) -> None:
        session = self.session
        if frame.room not in session.rooms:
            raise FrameError(ErrorCode.NOT_JOINED, f"not joined to {frame.room}", frame.id)
        draft = Draft(frame.room, session.user, frame.text, frame.id, self._node.clock.time())
        publication = await self._node.broker.publish(draft)
        self.send(encode(Ack(id=frame.id, room=frame.room, seq=publication.seq)))

    async def _join(
        self, room: str, since: int | None, epoch: str | None, frame_id: FrameId
    ) -> None:
        """Join ``room``: ``joined``, the missed messages after ``since``, then live ones.

        Live messages that arrive while the history is read are held back and
        sent after the replay, each at most once (by ``seq``); so are messages
        this connection already had before it left the room and came back.
        Raises :class:`~chat.brokers.BrokerUnavailable` with nothing joined.
        """
        node = self._node
        session = self.session
        json = session.protocol is not Subprotocol.TEXT
        if self.identity is not None and not self.identity.may_join(room):
            raise FrameError(ErrorCode.FORBIDDEN, "this room is not allowed by the token", frame_id)
        if room in session.rooms:
            # Already a member: nothing to join or replay; say where the session is.
            at = self._room_seq.get(room, 0)
            if json:
                current = self._epochs.get(room, "")
                same_run = epoch is None or epoch == current
                users = await node.broker.presence_users(room)
                self._send_joined(room, at, current, since == at and same_run, users)
            return
        if len(session.rooms) >= node.settings.max_rooms_per_session:
            raise FrameError(
                ErrorCode.FORBIDDEN,
                f"at most {node.settings.max_rooms_per_session} rooms at once",
                frame_id,
            )
        # Recorded first, so that however the join ends, _finish leaves the room.
        session.rooms.append(room)
        held: list[tuple[Publication, str]] = []
        self._held[room] = held
        try:
            await node.rooms.join(room, self)
            try:
                recovery = await node.broker.recover(room, since if json else None, epoch)
                if self._closing is not None:
                    # Closed while joining: no presence, nothing more to send.
                    node.rooms.leave(room, self)
                    session.rooms.remove(room)
                    return
                first, users = await node.broker.presence_enter(room, session.user)
            except BaseException:
                node.rooms.leave(room, self)
                raise
        except BaseException:
            session.rooms.remove(room)
            raise
        finally:
            del self._held[room]
        node.rooms.enter(room, self, users)
        self._epochs[room] = recovery.epoch
        # Messages this connection had before it left the room are not sent twice.
        floor = self._left.pop(room, (None, 0))
        sent_before = floor[1] if floor[0] == recovery.epoch else 0
        self._room_seq[room] = max(recovery.latest, sent_before)
        if json:
            replay = [p for p in recovery.publications if p.seq > sent_before]
            # A replay must fit in the send queue, or the client is told to refetch.
            fits = len(replay) + 2 <= node.settings.send_queue - len(self.queue)
            recovered = recovery.complete and fits
            self._send_joined(room, recovery.latest, recovery.epoch, recovered, users)
            if recovered:
                for publication in replay:
                    self.send(encode_message(publication))
        for publication, frame in held:
            self.deliver(publication, frame)
        if first:
            try:
                await node.broker.announce(PresenceChange(room, "join", session.user, session.id))
            except BrokerUnavailable:
                log.warning("session %s: presence join in %s not announced", session.id, room)

    def _send_joined(
        self, room: str, seq: int, epoch: str, recovered: bool, users: list[str]
    ) -> None:
        members = tuple(MemberInfo(user) for user in users)
        joined = Joined(room=room, seq=seq, epoch=epoch, recovered=recovered, members=members)
        self.send(encode(joined))

    def _leave(self, frame: Leave) -> None:
        if frame.room not in self.session.rooms:
            raise FrameError(ErrorCode.NOT_JOINED, f"not joined to {frame.room}", frame.id)
        self._drop(frame.room)

    def _drop(self, room: str) -> None:
        """Leave a joined ``room`` and tell the client (``left``)."""
        self.session.rooms.remove(room)
        self._leave_room(room)
        self.send(encode(Left(room=room)))

    def _leave_room(self, room: str) -> None:
        """Leave ``room`` now (presence is released, and announced, in the background)."""
        epoch = self._epochs.pop(room, None)
        seq = self._room_seq.pop(room, 0)
        if epoch is not None:
            self._left[room] = (epoch, seq)
            while len(self._left) > self._node.settings.max_rooms_per_session:
                del self._left[next(iter(self._left))]
        self._node.rooms.leave(room, self)


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


def _too_big(text: str, limit: int) -> bool:
    """True when ``text`` is longer than ``limit`` bytes in UTF-8 (encoding only when it may be)."""
    length = len(text)
    if length > limit:
        return True
    if length * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit
