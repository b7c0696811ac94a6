"""Sends awaiting their ``ack``: ids, the bounded outbox, retries, the client's own rate. Pure.

Every send gets an ``id`` and stays here until its ``ack``. A send that got
``error`` ``unavailable`` (or ``rate_limited``), or whose connection was lost
before its ``ack``, goes out again with the same ``id``: the server publishes
one message per ``id`` within ``CHAT_SEND_ID_WINDOW`` (``docs/protocol.md``,
Retrying a send), so a retry never duplicates. The table is bounded: a send
over :attr:`Outbox.limit` raises :class:`~chat.client.events.OutboxFull` and
queues nothing.

Past that window the server no longer knows the id: a send first written
longer ago than the window is not sent again (:meth:`Outbox.expired`; it
fails as ``uncertain``), and a message of the room that carries a pending
id settles that send (:meth:`Outbox.delivered`), so a send published before
a lost connection is settled from the recovery's replay.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from chat.client.events import OutboxFull

#: Codes after which a send is retried with its id; any other ``error`` fails it.
RETRIED_CODES = frozenset({"unavailable", "rate_limited"})
#: The longest wait before retrying a refused send (or ``join``).
MAX_RETRY_DELAY = 5.0


def retry_delay(refusals: int, random: Callable[[], float]) -> float:
    """The wait before trying again a frame refused ``refusals`` times (at least once).

    Exponential from a quarter second to :data:`MAX_RETRY_DELAY`, half fixed
    and half jitter: a retry never comes back at once, and many refused
    clients do not come back together.
    """
    bound = min(MAX_RETRY_DELAY, 0.25 * 2.0 ** min(max(refusals, 1) - 1, 8))
    return bound * (0.5 + 0.5 * random())


class SendState(Enum):
    #: Waits for its room to be joined, or for its retry time.
    QUEUED = "queued"
    #: Written on the current connection; waits for its ``ack``.
    INFLIGHT = "inflight"


@dataclass
class PendingSend:
    id: str
    room: str
    text: str
    state: SendState = SendState.QUEUED
    #: Not sent again before this time.
    ready_at: float = 0.0
    #: Times refused with a retried code.
    refusals: int = 0
    #: Times written.
    writes: int = 0
    #: When it was first written (None: never); the server's id window starts about then.
    first_written_at: float | None = None


class Bucket:
    """A token bucket: at most ``rate`` sends per second, ``burst`` at once.

    The client keeps below the server's own limits (``welcome.limits``) so a
    burst of queued sends after a reconnect is paced instead of refused.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at = now

    def _fill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    def take(self, now: float) -> bool:
        self._fill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def ready_at(self) -> float:
        """When the next token is there (at once if the time is past)."""
        return self._at + max(0.0, 1 - self._tokens) / self.rate


class Outbox:
    """Every send not yet acknowledged, in the order they were made."""

    def __init__(self, limit: int, random: Callable[[], float], prefix: str) -> None:
        if limit < 1:
            raise ValueError("the outbox limit must be at least 1")
        self.limit = limit
        self._random = random
        self._prefix = prefix
        self._counter = itertools.count(1)
        self._pending: dict[str, PendingSend] = {}
        #: Sends refused with a retried code, then sent again.
        self.retries = 0

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, send_id: object) -> bool:
        return send_id in self._pending

    def add(self, room: str, text: str, send_id: str | None = None) -> PendingSend:
        """A new send, queued. Raises :class:`OutboxFull` (queuing nothing) when full,
        ``ValueError`` for an ``id`` already pending."""
        if len(self._pending) >= self.limit:
            raise OutboxFull(
                f"{len(self._pending)} sends await their ack (the outbox holds {self.limit});"
                " wait for some before sending more"
            )
        if send_id is None:
            send_id = f"{self._prefix}-{next(self._counter)}"
        if send_id in self._pending:
            raise ValueError(f"a send with id {send_id!r} is already pending")
        pending = self._pending[send_id] = PendingSend(send_id, room, text)
        return pending

    def due(self, now: float, joined: Callable[[str], bool]) -> list[PendingSend]:
        """Queued sends that may go out now, oldest first (not yet marked in flight)."""
        return [
            p
            for p in self._pending.values()
            if p.state is SendState.QUEUED and p.ready_at <= now and joined(p.room)
        ]

    def next_ready(self, joined: Callable[[str], bool]) -> float | None:
        """The earliest time a queued send of a joined room may go out."""
        times = [
            p.ready_at
            for p in self._pending.values()
            if p.state is SendState.QUEUED and joined(p.room)
        ]
        return min(times) if times else None

    def written(self, pending: PendingSend, now: float) -> None:
        pending.state = SendState.INFLIGHT
        pending.writes += 1
        if pending.first_written_at is None:
            pending.first_written_at = now

    def expired(self, now: float, window: float) -> list[PendingSend]:
        """Remove and return the queued sends first written ``window`` seconds ago or more.

        The server remembers an id for ``window`` seconds: written again now,
        such a send would be published a second time if the first write was.
        Whether it was is unknown (its ack was lost): the caller fails it.
        """
        old = [
            p
            for p in self._pending.values()
            if p.state is SendState.QUEUED
            and p.first_written_at is not None
            and now - p.first_written_at >= window
        ]
        for pending in old:
            del self._pending[pending.id]
        return old

    def delivered(self, send_id: object, room: str) -> PendingSend | None:
        """The send a message of ``room`` from this client's user with ``send_id`` settles
        (removed), or None. Only a send already written can have been published."""
        pending = self._pending.get(send_id) if isinstance(send_id, str) else None
        if pending is None or pending.room != room or pending.first_written_at is None:
            return None
        return self._pending.pop(pending.id)

    def acked(self, send_id: object) -> PendingSend | None:
        """The send this ``ack`` settles (removed), or None if it is not pending."""
        if not isinstance(send_id, str):
            return None
        return self._pending.pop(send_id, None)

    def refused(self, send_id: object, code: str, now: float) -> tuple[PendingSend | None, bool]:
        """A send got ``error`` ``code``: ``(send, retried)``; a send not retried is removed."""
        if not isinstance(send_id, str) or send_id not in self._pending:
            return None, False
        pending = self._pending[send_id]
        if code not in RETRIED_CODES:
            del self._pending[send_id]
            return pending, False
        pending.refusals += 1
        self.retries += 1
        pending.ready_at = now + retry_delay(pending.refusals, self._random)
        pending.state = SendState.QUEUED
        return pending, True

    def connection_lost(self) -> None:
        """Sends in flight may or may not have been published: queue them again, same ids."""
        for pending in self._pending.values():
            pending.state = SendState.QUEUED

    def drop_room(self, room: str) -> list[PendingSend]:
        """Remove and return the sends to ``room`` (the application left it)."""
        dropped = [p for p in self._pending.values() if p.room == room]
        for pending in dropped:
            del self._pending[pending.id]
        return dropped

    def drain(self) -> list[PendingSend]:
        """Remove and return every pending send (the client closed for good)."""
        dropped = list(self._pending.values())
        self._pending.clear()
        return dropped
