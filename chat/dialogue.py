"""What a session says: its greeting, its answers to client frames, its timers. Pure.

The protocol half of :class:`chat.core.SessionCore`: ``/ws`` echo, plain-text
rooms and ``chat.v1`` JSON each hear a client frame their own way; every
frame is first counted against the session's rate; what the session asks of
the broker becomes a request of its core. Times come in as arguments: ``now``
(monotonic) for deadlines, ``wall`` (Unix seconds) for timestamps and tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chat.auth import Authenticator, Identity, TokenError
from chat.envelope import Draft, Publication
from chat.errors import (
    ErrorCode,
    Flooding,
    FrameError,
    HeartbeatTimeout,
    IdleTimeout,
    SessionClosed,
    TokenExpired,
)
from chat.membership import Membership
from chat.outbox import SendQueue
from chat.protocol import (
    PING,
    PONG,
    Bye,
    FrameId,
    HeartbeatInfo,
    Join,
    Leave,
    Left,
    LimitsInfo,
    Ping,
    Pong,
    Refresh,
    Send,
    Welcome,
    decode_client_frame,
    encode,
    error_frame,
    is_send,
    peek_id,
)
from chat.ratelimit import RateLimiter, Verdict
from chat.requests import ListMembers, Publish, Request, Subscribe, Unsubscribe
from chat.session import Due, Session
from chat.settings import Settings
from chat.transport import Endpoint, Handshake

#: The ``detail`` of ``error`` ``rate_limited``.
RATE_DETAIL = "over the message rate: slow down"

#: How a session hears a client's text frame: ``(text, now, wall)``.
Hear = Callable[[str, float, float], None]


class Core(Protocol):
    """What the dialogue uses of its session core (:class:`chat.core.SessionCore`)."""

    @property
    def session(self) -> Session: ...

    @property
    def plain(self) -> bool: ...

    @property
    def members(self) -> Membership: ...

    @property
    def outbox(self) -> SendQueue: ...

    def queue(self, frame: str) -> bool: ...

    def deliver(self, publication: Publication, frame: str) -> bool: ...

    def request(self, request: Request) -> None: ...

    @property
    def closing(self) -> SessionClosed | None: ...

    def close(self, error: SessionClosed, now: float | None = None) -> None: ...

    def count_rate_limited(self) -> None: ...


class Dialogue:
    """The session's side of the conversation; see the module docstring."""

    __slots__ = (
        "_auth",
        "_core",
        "_hear",
        "_limiter",
        "_settings",
        "identity",
    )

    def __init__(
        self,
        core: Core,
        settings: Settings,
        auth: Authenticator,
    ) -> None:
        self._core = core
        self._settings = settings
        self._auth = auth
        #: Who the session's token speaks for; None in open mode.
        self.identity: Identity | None = None
        self._limiter = RateLimiter(settings.rate, settings.burst, core.session.connected_at)
        self._hear: Hear = self._hear_json

    # -- start and end -------------------------------------------------------------

    def start(self, handshake: Handshake, now: float, wall: float) -> None:
        """Greet the client (``welcome``) and join the URL's room."""
        if self.identity is not None:
            self._expire_with(self.identity, now, wall)
        if handshake.endpoint is Endpoint.ECHO:
            self._hear = self._hear_echo
            return
        assert handshake.room is not None
        if self._core.plain:
            self._hear = self._hear_room_text
        else:
            self._welcome()
        self._join(handshake.room, handshake.since, handshake.epoch, None, from_url=True)

    def _welcome(self) -> None:
        settings, session = self._settings, self._core.session
        welcome = Welcome(
            session=session.id,
            user=session.user,
            node=settings.node_id,
            heartbeat=HeartbeatInfo(
                interval=settings.heartbeat_interval, timeout=settings.heartbeat_timeout
            ),
            limits=LimitsInfo(
                max_message_bytes=settings.max_message_bytes,
                rate=settings.rate,
                burst=settings.burst,
            ),
        )
        self._core.queue(encode(welcome))

    def bye(self, error: SessionClosed) -> str | None:
        """The ``bye`` before the close frame of ``error``, if the client gets one."""
        if error.bye_reason is None or self._core.plain:
            return None
        bye = Bye(
            reason=error.bye_reason,
            detail=error.bye_detail,
            reconnect=error.reconnect,
            retry_after_ms=error.retry_after_ms,
        )
        return encode(bye)

    def tick(self, now: float) -> None:
        """Act on what the session's timers ask for at ``now``."""
        core = self._core
        session = core.session
        while (due := session.due(now)) is not None:
            if due is Due.PING:
                core.queue(PING)
                session.ping_sent(now)
            elif due is Due.IDLE:
                session.go_idle(now)
            else:
                core.close(_TIMER_CLOSES[due](), now)
                return

    # -- client frames -----------------------------------------------------------

    def hear(self, text: str, now: float, wall: float) -> None:
        """One text frame from the client, as this kind of session hears it."""
        self._hear(text, now, wall)

    def publishes(self, text: str) -> bool:
        """True when ``text``, heard, can only ask to publish (or be refused with an
        ``error``): a ``send``, or any text of a room's plain-text session."""
        if self._hear == self._hear_json:
            return is_send(text)
        return self._hear == self._hear_room_text

    def _hear_echo(self, text: str, now: float, wall: float) -> None:
        if self._within_rate(now):
            self._core.session.touch(now)
            self._core.queue(f"Message text was: {text}")

    def _hear_room_text(self, text: str, now: float, wall: float) -> None:
        if not self._within_rate(now):
            return
        session = self._core.session
        session.touch(now)
        self._publish(Draft(session.rooms[0], session.user, text, None, wall))

    def _hear_json(self, raw: str, now: float, wall: float) -> None:
        if not self._within_rate(now, raw):
            return
        session = self._core.session
        try:
            frame = decode_client_frame(raw)
        except FrameError as error:
            session.touch(now)
            self._core.queue(error_frame(error))
            return
        if isinstance(frame, Pong):
            # A pong the server asked for is free; an unsolicited one is not.
            if session.awaiting_pong:
                self._limiter.refund()
            session.pong_received(now)
            return
        if isinstance(frame, Ping):
            self._core.queue(PONG)
            return
        session.touch(now)
        try:
            if isinstance(frame, Send):
                if frame.room not in self._core.members:
                    raise _not_joined(frame.room, frame.id)
                self._publish(Draft(frame.room, session.user, frame.text, frame.id, wall))
            elif isinstance(frame, Join):
                self._join(frame.room, frame.since, frame.epoch, frame.id)
            elif isinstance(frame, Leave):
                if frame.room not in self._core.members:
                    raise _not_joined(frame.room, frame.id)
                self._drop(frame.room)
            elif isinstance(frame, Refresh):
                self._refresh(frame, now, wall)
        except FrameError as error:
            self._core.queue(error_frame(error))

    def _within_rate(self, now: float, raw: str | None = None) -> bool:
        """Take a token for one client frame, before it is even parsed.

        False when it must be dropped: over the rate, JSON sessions get
        ``error`` ``rate_limited`` (plain text: dropped and counted); a flood
        closes the session with 1008.
        """
        verdict = self._limiter.check(now)
        if verdict is Verdict.ALLOW:
            return True
        self._core.count_rate_limited()
        if verdict is Verdict.ABUSE:
            self._core.close(Flooding(), now)
        elif not self._core.plain:
            error = FrameError(ErrorCode.RATE_LIMITED, RATE_DETAIL, peek_id(raw or ""))
            self._core.queue(error_frame(error))
        return False

    def _publish(self, draft: Draft) -> None:
        self._core.request(Publish(draft))

    def _join(
        self,
        room: str,
        since: int | None,
        epoch: str | None,
        frame_id: FrameId,
        *,
        from_url: bool = False,
    ) -> None:
        core = self._core
        if self.identity is not None and not self.identity.may_join(room):
            raise FrameError(ErrorCode.FORBIDDEN, "this room is not allowed by the token", frame_id)
        if room in core.members:
            # Already a member: nothing to join or replay; say where the session is.
            if not self._core.plain:
                core.request(ListMembers(room, since, epoch, frame_id))
            return
        limit = self._settings.max_rooms_per_session
        if len(core.members.rooms) >= limit:
            raise FrameError(ErrorCode.FORBIDDEN, f"at most {limit} rooms at once", frame_id)
        core.members.joining(room)
        core.request(Subscribe(room, None if core.plain else since, epoch, frame_id, from_url))

    def _drop(self, room: str) -> None:
        """Leave a joined ``room`` and tell the client (``left``)."""
        self._core.members.leave(room)
        self._core.request(Unsubscribe(room))
        if not self._core.plain:
            self._core.queue(encode(Left(room=room)))

    def _refresh(self, frame: Refresh, now: float, wall: float) -> None:
        """Replace the session's token; a refused one changes nothing."""
        if not self._auth.enabled:
            raise FrameError(
                ErrorCode.BAD_REQUEST, "refresh needs JWT auth, which is not configured", frame.id
            )
        try:
            identity = self._auth.verify(frame.token, wall)
        except TokenError as error:
            raise FrameError(
                ErrorCode.BAD_REQUEST, f"refresh refused: {error.detail}", frame.id
            ) from None
        if identity.user != self._core.session.user:
            raise FrameError(
                ErrorCode.FORBIDDEN, "refresh must be for the session's own user", frame.id
            )
        self.identity = identity
        self._expire_with(identity, now, wall)
        # The new token's rooms apply at once: rooms it no longer allows are left.
        for room in [r for r in self._core.members.rooms if not identity.may_join(r)]:
            self._drop(room)

    def _expire_with(self, identity: Identity, now: float, wall: float) -> None:
        left = identity.expires_at + self._settings.jwt_leeway - wall
        self._core.session.token_deadline = now + left


_TIMER_CLOSES: dict[Due, type[SessionClosed]] = {
    Due.HEARTBEAT_TIMEOUT: HeartbeatTimeout,
    Due.TOKEN_EXPIRED: TokenExpired,
    Due.IDLE_TIMEOUT: IdleTimeout,
}


def _not_joined(room: str, frame_id: FrameId) -> FrameError:
    return FrameError(ErrorCode.NOT_JOINED, f"not joined to {room}", frame_id)
