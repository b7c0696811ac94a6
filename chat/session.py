"""The session state machine and the session record. Pure: time comes in as ``now``.

Everything that affects a session's state lives in this module. The legal
moves are the data in :data:`TRANSITIONS`; :meth:`Session.handle` is the only
code that assigns :attr:`Session.state`, and an illegal move raises
:class:`IllegalTransition` and changes nothing.

Times named ``now`` are the injected clock's monotonic seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from chat.protocol import Subprotocol

if TYPE_CHECKING:
    from chat.settings import Settings


class SessionState(StrEnum):
    """Where a session is in its life (``docs/architecture.md``, The session lifecycle).

    The contract's public states are four; :attr:`CLOSING` is internal, shown
    in status as the state it was closed from, with ``closing: true``.
    """

    #: The WebSocket handshake reached the app; not accepted yet.
    CONNECTING = "connecting"
    #: Accepted, and the client did something within ``CHAT_IDLE_AFTER``.
    ACTIVE = "active"
    #: Accepted, but no client activity for ``CHAT_IDLE_AFTER`` (heartbeats do not count).
    IDLE = "idle"
    #: The server started closing: its close frame is on its way, the peer's awaited.
    CLOSING = "closing"
    #: Ended: rejected, closed by either side, or lost. Terminal.
    CLOSED = "closed"


#: The states of the contract (``/status`` shows these; :attr:`SessionState.CLOSING` is not one).
PUBLIC_STATES = (
    SessionState.CONNECTING,
    SessionState.ACTIVE,
    SessionState.IDLE,
    SessionState.CLOSED,
)


class SessionEvent(StrEnum):
    """What can happen to a session."""

    #: The handshake passed every check and was accepted.
    ACCEPT = "accept"
    #: The handshake was refused with an HTTP status.
    REJECT = "reject"
    #: No client activity for ``CHAT_IDLE_AFTER`` seconds.
    QUIET = "quiet"
    #: Client activity (any frame but ``ping``/``pong``) while idle.
    ACTIVITY = "activity"
    #: The server starts a close (shutdown, a timeout, a limit, ...).
    CLOSE = "close"
    #: The connection ended: the peer closed or answered our close, or it died.
    END = "end"


_S, _E = SessionState, SessionEvent

#: ``(state, event) -> new state``; every pair not listed is illegal.
TRANSITIONS: Mapping[tuple[SessionState, SessionEvent], SessionState] = {
    (_S.CONNECTING, _E.ACCEPT): _S.ACTIVE,
    (_S.CONNECTING, _E.REJECT): _S.CLOSED,
    (_S.ACTIVE, _E.QUIET): _S.IDLE,
    (_S.IDLE, _E.ACTIVITY): _S.ACTIVE,
    (_S.ACTIVE, _E.CLOSE): _S.CLOSING,
    (_S.IDLE, _E.CLOSE): _S.CLOSING,
    (_S.ACTIVE, _E.END): _S.CLOSED,
    (_S.IDLE, _E.END): _S.CLOSED,
    (_S.CLOSING, _E.END): _S.CLOSED,
}


@dataclass(frozen=True, slots=True)
class Allowed:
    """What a session does in one state."""

    #: Client frames are handled (otherwise read and dropped, until the connection ends).
    frames: bool
    #: Heartbeat, idle and token timers run.
    timers: bool
    #: New frames may be queued for the client.
    sends: bool
    #: It counts as connected: in the registry's live sessions, its rooms joined.
    live: bool


#: What each state allows; every decision of :mod:`chat.core` reads it from here.
ALLOWED: Mapping[SessionState, Allowed] = {
    _S.CONNECTING: Allowed(frames=False, timers=False, sends=True, live=False),
    _S.ACTIVE: Allowed(frames=True, timers=True, sends=True, live=True),
    _S.IDLE: Allowed(frames=True, timers=True, sends=True, live=True),
    _S.CLOSING: Allowed(frames=False, timers=False, sends=False, live=True),
    _S.CLOSED: Allowed(frames=False, timers=False, sends=False, live=False),
}


class IllegalTransition(RuntimeError):
    """``event`` is not allowed in ``state``; nothing was changed."""

    def __init__(self, state: SessionState, event: SessionEvent) -> None:
        super().__init__(f"{event.value!r} is not allowed in state {state.value!r}")
        self.state = state
        self.event = event


def next_state(state: SessionState, event: SessionEvent) -> SessionState:
    """The state after ``event`` in ``state``; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state, event) from None


def allowed(state: SessionState, event: SessionEvent) -> bool:
    """Whether ``event`` may happen in ``state``."""
    return (state, event) in TRANSITIONS


class Due(StrEnum):
    """What a session's timers ask for at a given ``now`` (see :meth:`Session.due`)."""

    #: Send a heartbeat ``ping``.
    PING = "ping"
    #: Move from ``active`` to ``idle``.
    IDLE = "idle"
    #: Close 4001: the last ping went unanswered.
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    #: Close 4500: no activity for ``CHAT_IDLE_TIMEOUT``.
    IDLE_TIMEOUT = "idle_timeout"
    #: Close 1008: the session's token expired and was not refreshed.
    TOKEN_EXPIRED = "token_expired"


@dataclass(frozen=True, slots=True)
class Timers:
    """The session timers, from settings. ``idle_timeout`` 0 means never."""

    heartbeat_interval: float
    heartbeat_timeout: float
    idle_after: float
    idle_timeout: float

    @classmethod
    def of(cls, settings: Settings) -> Timers:
        """The timers ``settings`` configure."""
        return cls(
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            idle_after=settings.idle_after,
            idle_timeout=settings.idle_timeout,
        )


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One state change: the new public ``state``, when (``at``, monotonic) and why.

    The start of a close keeps the public state (its ``reason`` says closing).
    """

    state: SessionState
    at: float
    reason: str


#: State changes kept per session; the oldest are dropped beyond this.
HISTORY_LIMIT = 64


class Session:
    """One WebSocket connection's record: state, history, timers and counters.

    Created in ``connecting``. The session core (:mod:`chat.core`) reports
    what happens (:meth:`accept`, :meth:`touch`, :meth:`ping_sent`,
    :meth:`pong_received`, :meth:`begin_close`, :meth:`close`) and asks
    :meth:`due` what the timers want; it never assigns state itself.
    """

    __slots__ = (
        "_next_ping_at",
        "_pong_deadline",
        "close_code",
        "close_reason",
        "closed_at",
        "closed_by",
        "connected_at",
        "heartbeats",
        "history",
        "host",
        "id",
        "last_activity",
        "messages_in",
        "messages_out",
        "node",
        "protocol",
        "public_state",
        "remote",
        "room",
        "rooms",
        "state",
        "timers",
        "token_deadline",
        "user",
    )

    def __init__(
        self,
        *,
        id: str,
        user: str,
        protocol: Subprotocol,
        remote: str,
        node: str,
        timers: Timers,
        now: float,
        host: str = "",
        room: str | None = None,
    ) -> None:
        self.id = id
        self.user = user
        self.protocol = protocol
        self.remote = remote
        #: The client's address without the port, for per-address caps.
        self.host = host
        #: The room of the URL it connected to (``/ws/{room}``); None on ``/ws``.
        self.room = room
        #: When the session's token expires (monotonic, leeway included); None without one.
        self.token_deadline: float | None = None
        self.node = node
        self.timers = timers
        #: JSON sessions answer ``ping`` frames; plain-text ones cannot.
        self.heartbeats = protocol is not Subprotocol.TEXT
        self.rooms: list[str] = []
        self.state = SessionState.CONNECTING
        #: :attr:`state` as the contract shows it (a closing session: the state it closed from).
        self.public_state = SessionState.CONNECTING
        # A list, trimmed by hand: a bounded deque costs a 64-slot block per session.
        self.history: list[HistoryEntry] = [HistoryEntry(SessionState.CONNECTING, now, "handshake")]
        self.connected_at = now
        self.last_activity = now
        self.messages_in = 0
        self.messages_out = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by: str | None = None
        self.closed_at: float | None = None
        self._next_ping_at = now + timers.heartbeat_interval
        self._pong_deadline: float | None = None

    def handle(self, event: SessionEvent, now: float, reason: str) -> SessionState:
        """Apply ``event`` through :data:`TRANSITIONS`, record it, return the new state.

        Raises :class:`IllegalTransition` (changing nothing) for an illegal event.
        """
        new = next_state(self.state, event)
        self.state = new
        if new is not SessionState.CLOSING:
            self.public_state = new
        self.history.append(HistoryEntry(self.public_state, now, reason))
        if len(self.history) > HISTORY_LIMIT:
            del self.history[0]
        return new

    @property
    def is_live(self) -> bool:
        """Accepted and not closed (closing included)."""
        return ALLOWED[self.state].live

    @property
    def closing(self) -> bool:
        """The server started closing and the connection has not ended yet."""
        return self.state is SessionState.CLOSING

    def accept(self, now: float) -> None:
        """The handshake was accepted: ``connecting`` to ``active``; timers start."""
        self.handle(SessionEvent.ACCEPT, now, "accepted")
        self.last_activity = now
        self._next_ping_at = now + self.timers.heartbeat_interval

    def reject(self, now: float, status: int, reason: str) -> None:
        """The handshake was refused with HTTP ``status``: ``connecting`` to ``closed``."""
        self.handle(SessionEvent.REJECT, now, f"rejected {status} {reason}")
        self.close_reason = reason
        self.closed_by = "server"
        self.closed_at = now

    def touch(self, now: float) -> bool:
        """Record client activity; an idle session becomes active. True if it woke up."""
        self.last_activity = now
        if self.state is SessionState.IDLE:
            self.handle(SessionEvent.ACTIVITY, now, "activity")
            return True
        return False

    def ping_sent(self, now: float) -> None:
        """A heartbeat ``ping`` went out: the ``pong`` is due within the timeout."""
        self._pong_deadline = now + self.timers.heartbeat_timeout
        self._next_ping_at = now + self.timers.heartbeat_interval

    @property
    def awaiting_pong(self) -> bool:
        """A heartbeat ``ping`` is out and its ``pong`` not back yet."""
        return self._pong_deadline is not None

    def pong_received(self, now: float) -> None:
        """The client answered: the heartbeat deadline is lifted (not activity)."""
        self._pong_deadline = None

    def go_idle(self, now: float) -> None:
        """``active`` to ``idle`` after ``CHAT_IDLE_AFTER`` without activity."""
        self.handle(SessionEvent.QUIET, now, f"no activity for {self.timers.idle_after:g}s")

    def begin_close(self, now: float, code: int, reason: str) -> None:
        """The server starts closing with ``code``: ``active``/``idle`` to ``closing``."""
        self.handle(SessionEvent.CLOSE, now, f"closing: {code} {reason}")
        self._pong_deadline = None

    def close(self, now: float, code: int, reason: str, closed_by: str) -> None:
        """The connection ended: ``active``, ``idle`` or ``closing`` to ``closed``, with why."""
        self.handle(SessionEvent.END, now, f"{code} {reason} by {closed_by}")
        self.close_code = code
        self.close_reason = reason
        self.closed_by = closed_by
        self.closed_at = now
        self._pong_deadline = None

    def log_fields(self, **more: object) -> dict[str, object]:
        """This session as the fields of a log record (``extra=``): never a token.

        ``session``, ``user``, ``room`` (the URL's, or ``more``'s), ``remote``,
        and once closed ``close_code``, ``close_reason`` and ``closed_by``.
        """
        fields: dict[str, object] = {
            "session": self.id,
            "user": self.user,
            "room": self.room,
            "remote": self.remote,
        }
        if self.closed_at is not None:
            fields["close_code"] = self.close_code
            fields["close_reason"] = self.close_reason
            fields["closed_by"] = self.closed_by
        fields.update(more)
        return fields

    def due(self, now: float) -> Due | None:
        """What the timers want at ``now``, the most pressing first; None when nothing.

        A close wins over going idle, going idle over a ping; a heartbeat timeout
        wins over an expired token, that over the idle timeout. Heartbeats apply
        to JSON sessions only; plain-text liveness is left to the server's
        protocol pings.
        """
        if not ALLOWED[self.state].timers:
            return None
        if self._pong_deadline is not None and now >= self._pong_deadline:
            return Due.HEARTBEAT_TIMEOUT
        if self.token_deadline is not None and now >= self.token_deadline:
            return Due.TOKEN_EXPIRED
        quiet = now - self.last_activity
        if self.timers.idle_timeout and quiet >= self.timers.idle_timeout:
            return Due.IDLE_TIMEOUT
        if self.state is SessionState.ACTIVE and quiet >= self.timers.idle_after:
            return Due.IDLE
        if self.heartbeats and self._pong_deadline is None and now >= self._next_ping_at:
            return Due.PING
        return None


@dataclass(slots=True)
class Totals:
    """This process's counters since start."""

    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    #: Client frames dropped for going over the rate.
    rate_limited: int = 0
    messages_in: int = 0
    messages_out: int = 0
    closed_by_reason: Counter[str] = field(default_factory=Counter)
