"""Inbound rate limiting per session: a token bucket, and the rule for floods. Pure.

Each client frame takes a token before it is parsed (a ``pong`` the server
asked for gets it back);
tokens come back at ``rate`` per second up to ``burst``. A frame without a
token is refused. The flood rule: refused frames are counted, and the count
drains at ``burst`` per :data:`FLOOD_WINDOW` seconds; when it passes
``burst`` the session is abusive and is closed (1008). So more than ``burst``
refusals in a burst, or a sustained excess over the rate of more than
``burst / FLOOD_WINDOW`` frames per second, ends the session; an occasional
refusal never does.
"""

from __future__ import annotations

from enum import StrEnum

#: Seconds over which refused frames are counted for the flood rule.
FLOOD_WINDOW = 10.0


class Verdict(StrEnum):
    """What to do with one inbound frame."""

    #: Within the rate: handle it.
    ALLOW = "allow"
    #: Over the rate: drop it (JSON sessions get ``error`` ``rate_limited``).
    REFUSE = "refuse"
    #: Flooding: close the session with 1008.
    ABUSE = "abuse"


class RateLimiter:
    """One session's bucket. ``now`` is monotonic seconds."""

    __slots__ = ("_burst", "_rate", "_refused", "_refused_at", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._updated = now
        #: Refused frames, decaying at burst per FLOOD_WINDOW.
        self._refused = 0.0
        self._refused_at = now

    def check(self, now: float) -> Verdict:
        """Take a token for one frame at ``now``."""
        now = max(now, self._updated)  # a clock that steps back mints nothing
        elapsed = now - self._updated
        self._updated = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ALLOW
        decay = max(0.0, now - self._refused_at) * self._burst / FLOOD_WINDOW
        self._refused_at = now
        self._refused = max(0.0, self._refused - decay) + 1.0
        return Verdict.ABUSE if self._refused > self._burst else Verdict.REFUSE

    def refund(self) -> None:
        """Give back the token of a frame that turned out to be free (a requested pong)."""
        self._tokens = min(float(self._burst), self._tokens + 1.0)
