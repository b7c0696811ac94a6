"""When to reconnect, and after how long: the contract's close-code table and backoff. Pure.

The table is README "Close codes and refusals": 4000-4499 mean reconnect,
4500-4999 do not; 1000, 1003, 1008 and 1009 are final; 1001 (shutdown)
reconnects after ``bye.retry_after_ms``; 1011, 1013 and a lost connection
reconnect with backoff. A ``bye`` with ``reconnect: false`` is final whatever
the code. Handshake refusals (HTTP statuses) follow the same idea: a request
the server will never accept (400, 403, 505; 401 without a way to get a new
token) is final, the rest is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Close codes after which the client never reconnects on its own.
FINAL_CODES = frozenset({1000, 1003, 1008, 1009})
#: HTTP statuses of a refused handshake that no retry can change.
FINAL_STATUSES = frozenset({400, 403, 404, 505})


@dataclass(frozen=True, slots=True)
class ByeInfo:
    """The server's ``bye``, read before its close."""

    reason: str
    reconnect: bool
    retry_after_ms: int = 0
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a connection ended or a handshake failed.

    ``reconnect`` false means stop for good. ``after`` is a delay the server
    asked for (``bye.retry_after_ms``) in seconds, or None for the backoff's.
    """

    reconnect: bool
    reason: str
    after: float | None = None


def after_close(code: int | None, bye: ByeInfo | None) -> Decision:
    """The decision for a connection that ended with close ``code`` (None: no close frame)."""
    if bye is not None:
        reason = f"bye: {bye.reason}"
        if not bye.reconnect or (code is not None and _final(code)):
            return Decision(False, reason)
        return Decision(True, reason, bye.retry_after_ms / 1000 if bye.retry_after_ms else None)
    if code is None or code == 1006:
        return Decision(True, "connection lost")
    return Decision(not _final(code), f"close {code}")


def _final(code: int) -> bool:
    return code in FINAL_CODES or 4500 <= code <= 4999


def after_refusal(status: int | None, *, can_renew_token: bool) -> Decision:
    """The decision for a handshake refused with HTTP ``status`` (None: no answer at all)."""
    if status is None:
        return Decision(True, "unreachable")
    reason = f"refused: {status}"
    if status in FINAL_STATUSES or (status == 401 and not can_renew_token):
        return Decision(False, reason)
    return Decision(True, reason)


class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits ``random() * min(cap, base*2**n)``.

    Full jitter (every delay uniform from 0 to the exponential bound) spreads
    clients that lost the same server over the whole window instead of
    sending them back together. ``random`` is injected (``random.random`` in
    production, a fixed sequence in tests). :meth:`reset` after a connection
    that lasted, so a server that accepts and drops at once is not hammered.
    """

    def __init__(self, base: float, cap: float, random: Callable[[], float]) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._random = random
        #: Attempts since the last :meth:`reset`.
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts it."""
        bound = min(self.cap, self.base * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        return self._random() * bound

    def reset(self) -> None:
        self.attempts = 0
