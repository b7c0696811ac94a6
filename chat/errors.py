"""One error tree: every way a session can be refused or ended, with its code.

* :class:`Rejection` ends a handshake before accept with an HTTP status.
* :class:`SessionClosed` ends an accepted session with a WebSocket close code.
  Codes 4000-4499 tell the client to reconnect, 4500-4999 not to; the
  standard codes carry the same promise in :attr:`SessionClosed.reconnect`.
* :class:`FrameError` refuses one client frame with an ``error`` frame; the
  session goes on.
"""

from __future__ import annotations

import random
from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """WebSocket close codes the server sends (README.md, Close codes and refusals)."""

    #: Normal closure.
    NORMAL = 1000
    #: The server is shutting down; reconnect after ``bye.retry_after_ms``.
    GOING_AWAY = 1001
    #: A binary frame was received.
    UNSUPPORTED_DATA = 1003
    #: The connection was lost without a close frame (never sent, only recorded).
    ABNORMAL = 1006
    #: Policy: token expired, forbidden, repeated abuse, disconnected by an operator.
    POLICY_VIOLATION = 1008
    #: A message larger than ``CHAT_MAX_MESSAGE_BYTES``.
    MESSAGE_TOO_BIG = 1009
    #: Internal error; reconnect with backoff.
    INTERNAL_ERROR = 1011
    #: Try again later: slow consumer, the broker down for a plain-text send or a URL
    #: room, or disconnected by an operator who allows reconnecting.
    TRY_AGAIN_LATER = 1013
    #: No ``pong`` within ``CHAT_HEARTBEAT_TIMEOUT``; reconnect.
    HEARTBEAT_TIMEOUT = 4001
    #: No activity for ``CHAT_IDLE_TIMEOUT``; do not reconnect on your own.
    IDLE_TIMEOUT = 4500


class ErrorCode(StrEnum):
    """``code`` values of the ``error`` frame (``docs/protocol.md``, Errors)."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    FORBIDDEN = "forbidden"
    NOT_JOINED = "not_joined"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


def retry_after_ms() -> int:
    """A jittered reconnect delay for ``bye`` (1 to 5 s), so clients do not return at once."""
    return 1000 + random.randrange(4000)


class ChatError(Exception):
    """Base of every error the server turns into a response for a client."""


class Rejection(ChatError):
    """Refuse a handshake before accept with an HTTP ``status``.

    ``reason`` is a short stable key, counted in ``/status``
    ``totals.rejected``; ``detail`` is the sentence sent to the client.
    """

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class SessionClosed(ChatError):
    """End an accepted session with ``code``; each subclass is one cause.

    JSON sessions receive a ``bye`` with :attr:`bye_reason` first, except when
    the peer is presumed dead (heartbeat timeout) or the server itself failed
    (1011).
    """

    code: CloseCode = CloseCode.INTERNAL_ERROR
    #: Stable key: recorded as the session's ``close_reason`` and counted in ``/status``.
    reason: str = "internal_error"
    #: The ``bye`` frame's ``reason``; None sends no ``bye`` (the peer is presumed dead).
    bye_reason: str | None = None
    #: The close frame's reason phrase, for people.
    description: str = "internal error"
    #: The peer is presumed dead: cut it right after the close frame, without
    #: waiting ``CHAT_DRAIN_TIMEOUT`` for a reply that will not come.
    presumed_dead: bool = False
    #: The ``bye`` frame's ``detail`` (a sentence for the user); None sends none.
    bye_detail: str | None = None

    def __init__(self, retry_after_ms: int = 0) -> None:
        super().__init__(self.description)
        #: Sent in ``bye``: how long the client should wait before reconnecting.
        self.retry_after_ms = retry_after_ms

    @property
    def reconnect(self) -> bool:
        """Whether a client should reconnect on its own after this close."""
        if 4000 <= self.code <= 4499:
            return True
        return self.code in {
            CloseCode.GOING_AWAY,
            CloseCode.INTERNAL_ERROR,
            CloseCode.TRY_AGAIN_LATER,
        }

    def __str__(self) -> str:
        return f"{self.code.value} {self.reason}"


class Shutdown(SessionClosed):
    """The server is draining: reconnect after ``retry_after_ms``."""

    code = CloseCode.GOING_AWAY
    reason = "shutdown"
    bye_reason = "shutdown"
    description = "server shutting down"


class BinaryFrame(SessionClosed):
    """The client sent a binary frame."""

    code = CloseCode.UNSUPPORTED_DATA
    reason = "binary_frame"
    bye_reason = "policy"
    description = "binary frames are not supported"


class MessageTooBig(SessionClosed):
    """The client sent more than ``CHAT_MAX_MESSAGE_BYTES``."""

    code = CloseCode.MESSAGE_TOO_BIG
    reason = "message_too_big"
    bye_reason = "policy"
    description = "message too big"


class SlowConsumer(SessionClosed):
    """The session's send queue overflowed ``CHAT_SEND_QUEUE``."""

    code = CloseCode.TRY_AGAIN_LATER
    reason = "slow_consumer"
    bye_reason = "slow_consumer"
    description = "send queue overflow"


class HeartbeatTimeout(SessionClosed):
    """No ``pong`` within ``CHAT_HEARTBEAT_TIMEOUT``: no ``bye``, the peer is presumed dead."""

    code = CloseCode.HEARTBEAT_TIMEOUT
    reason = "heartbeat_timeout"
    description = "heartbeat timeout"
    presumed_dead = True


class IdleTimeout(SessionClosed):
    """No client activity for ``CHAT_IDLE_TIMEOUT``."""

    code = CloseCode.IDLE_TIMEOUT
    reason = "idle_timeout"
    bye_reason = "idle_timeout"
    description = "idle timeout"


class PolicyViolation(SessionClosed):
    """Token expired, forbidden, or repeated abuse."""

    code = CloseCode.POLICY_VIOLATION
    reason = "policy"
    bye_reason = "policy"
    description = "policy violation"


class TokenExpired(SessionClosed):
    """The session's token expired (plus leeway) without a valid ``refresh``."""

    code = CloseCode.POLICY_VIOLATION
    reason = "token_expired"
    bye_reason = "token_expired"
    description = "token expired"


class Flooding(SessionClosed):
    """The session kept sending over its rate (the flood rule of :mod:`chat.ratelimit`)."""

    code = CloseCode.POLICY_VIOLATION
    reason = "flooding"
    bye_reason = "policy"
    description = "too many messages"


class BrokerDown(SessionClosed):
    """The broker is down for a plain-text send, or for the room in a JSON session's URL
    (a JSON session's later requests get ``error`` ``unavailable`` instead)."""

    code = CloseCode.TRY_AGAIN_LATER
    reason = "unavailable"
    bye_reason = "policy"
    description = "broker unavailable, try again later"


class Disconnected(SessionClosed):
    """An operator disconnected the session (``POST /api/.../disconnect``, :mod:`chat.api`).

    ``detail`` is the caller's reason, shown to the client in ``bye``. With
    ``reconnect`` the close is 1013 (try again later, after ``retry_after_ms``),
    without it 1008 (policy: do not reconnect on your own).
    """

    reason = "disconnected"
    bye_reason = "disconnected"
    description = "disconnected by the server"

    def __init__(self, detail: str = "", *, reconnect: bool = False) -> None:
        super().__init__(retry_after_ms() if reconnect else 0)
        self.code = CloseCode.TRY_AGAIN_LATER if reconnect else CloseCode.POLICY_VIOLATION
        self.bye_detail = detail or None


class InternalError(SessionClosed):
    """A bug: logged once with the session id; no ``bye``."""

    code = CloseCode.INTERNAL_ERROR
    reason = "internal_error"
    description = "internal error"


class FrameError(ChatError):
    """Refuse one client frame with an ``error`` frame; the session goes on."""

    def __init__(self, code: ErrorCode, detail: str, frame_id: str | int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.frame_id = frame_id
