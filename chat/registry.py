"""The session registry: every session of this process, live or recently closed.

Live sessions are kept with their connection; a closed session stays visible
for ``CHAT_CLOSED_RETENTION`` seconds and at most ``CHAT_CLOSED_MAX`` of them
(the oldest go first), so memory stays bounded whatever the churn.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import Protocol

import anyio

from chat.errors import SessionClosed
from chat.session import PUBLIC_STATES, Session, SessionEvent, SessionState, Totals, allowed
from chat.watch import Watch


class Live(Protocol):
    """What the registry needs of a live connection."""

    @property
    def session(self) -> Session: ...

    @property
    def queued(self) -> int:
        """Frames waiting in the send queue."""
        ...

    def on_timer(self, now: float) -> None:
        """Act on the session's timers at ``now``."""
        ...

    def close(self, error: SessionClosed) -> None:
        """Start closing the session with ``error``'s code; never waits."""
        ...

    def abort(self) -> None:
        """Cut the connection now."""
        ...


class Registry:
    """Sessions by id. Not thread-safe: use it from the event loop only."""

    def __init__(self, *, retention: float, max_closed: int) -> None:
        self._retention = retention
        self._max_closed = max_closed
        self._live: dict[str, Live] = {}
        self._closed: OrderedDict[str, Session] = OrderedDict()
        self._emptied: anyio.Event | None = None
        #: Admitted sessions per client address (for the cap).
        self._per_host: Counter[str] = Counter()
        #: Ids of the admitted sessions counted in ``_per_host``.
        self._counted: set[str] = set()
        self.totals = Totals()
        #: Subscribers to session changes (``/status/events``). The registry tells it
        #: of sessions added, accepted and retired; the supervisor of state changes.
        self.watch = Watch()

    def add(self, live: Live) -> None:
        """Track a new session (in ``connecting``)."""
        self._live[live.session.id] = live
        self.watch.changed(live.session.id)

    def accepted(self, live: Live) -> None:
        """Count a session that reached ``active``."""
        self.totals.accepted += 1
        self.watch.changed(live.session.id)

    def sessions_from(self, host: str) -> int:
        """Admitted sessions from client address ``host`` that are not closed."""
        return self._per_host[host]

    def admit(self, live: Live) -> None:
        """Count an admitted session against its address's cap (until retired)."""
        session = live.session
        self._counted.add(session.id)
        self._per_host[session.host] += 1

    def rejected(self, live: Live, reason: str) -> None:
        """Count a refused handshake and retire its (already closed) session."""
        self.totals.rejected[reason] += 1
        self._retire(live)

    def finished(self, live: Live) -> None:
        """Retire a session that reached ``closed``, counting why it closed."""
        self.totals.closed_by_reason[live.session.close_reason or "unknown"] += 1
        self._retire(live)

    def _retire(self, live: Live) -> None:
        session = live.session
        if self._live.pop(session.id, None) is None:
            return
        self.watch.changed(session.id)
        if session.id in self._counted:
            self._counted.discard(session.id)
            self._per_host[session.host] -= 1
            if not self._per_host[session.host]:
                del self._per_host[session.host]
        if self._max_closed:
            self._closed[session.id] = session
            while len(self._closed) > self._max_closed:
                self._closed.popitem(last=False)
        if not self._live and self._emptied is not None:
            self._emptied.set()

    def purge(self, now: float) -> None:
        """Forget closed sessions older than the retention."""
        horizon = now - self._retention
        while self._closed:
            session = next(iter(self._closed.values()))
            if session.closed_at is not None and session.closed_at > horizon:
                break
            self._closed.popitem(last=False)

    async def wait_empty(self) -> None:
        """Return once no session is live (connecting, active or idle)."""
        while self._live:
            if self._emptied is None:
                self._emptied = anyio.Event()
            await self._emptied.wait()
            self._emptied = None

    def live(self) -> list[Live]:
        """A snapshot of the live sessions' connections."""
        return list(self._live.values())

    def __len__(self) -> int:
        return len(self._live)

    def get(self, session_id: str) -> tuple[Session, int] | None:
        """``(session, queued frames)`` for a live or retained session, or None."""
        live = self._live.get(session_id)
        if live is not None:
            return live.session, live.queued
        session = self._closed.get(session_id)
        return None if session is None else (session, 0)

    def close_named(
        self, session_id: str | None, user: str | None, error: Callable[[], SessionClosed]
    ) -> int:
        """Start closing the live sessions named by ``session_id`` and ``user`` (each
        given one must match), each with a fresh ``error()``; how many began closing.

        A session already closing, or still in its handshake, is left as it is;
        never waits.
        """
        if session_id is not None:
            found = self._live.get(session_id)
            named = [found] if found is not None else []
        else:
            named = list(self._live.values())
        closed = 0
        for live in named:
            session = live.session
            if user is not None and session.user != user:
                continue
            if allowed(session.state, SessionEvent.CLOSE):
                live.close(error())
                closed += 1
        return closed

    def sessions(self) -> Iterator[tuple[Session, int]]:
        """Every live session, then the retained closed ones, newest first."""
        for live in list(self._live.values()):
            yield live.session, live.queued
        for session in reversed(list(self._closed.values())):
            yield session, 0

    def counts(self) -> dict[str, int]:
        """Sessions per public state (a closing one counts where it closed from);
        ``closed`` counts the retained ones."""
        counts = dict.fromkeys((state.value for state in PUBLIC_STATES), 0)
        for live in self._live.values():
            counts[live.session.public_state.value] += 1
        counts[SessionState.CLOSED.value] += len(self._closed)
        return counts
