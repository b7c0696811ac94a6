"""Watching the registry: who changed, for live views such as ``/monitor``.

The registry and the supervisor call :meth:`Watch.changed` with a session's id
when that session may have changed (added, accepted, a state change, closed).
Each subscriber (a :class:`Feed`, one per open ``/status/events`` stream) keeps
the ids that changed since it last looked, once each, in a bounded set: when
more sessions change than it holds before it looks, it forgets them all and
is marked :attr:`Changes.overflowed`, and its reader reloads what it shows
instead. So a slow reader costs at most ``limit`` ids, never a growing queue,
and nothing is done per change while no one watches.

:class:`Trend` keeps the last minutes of the node's summaries (sessions per
state and the message counters) in a ring, for a chart that has data the
moment it opens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

#: Subscribers at once; one more is refused (:class:`TooManyWatchers`).
MAX_FEEDS = 16
#: Changed session ids a subscriber holds before it overflows.
FEED_LIMIT = 512


class TooManyWatchers(RuntimeError):
    """Already :data:`MAX_FEEDS` subscribers."""


@dataclass(frozen=True, slots=True)
class Changes:
    """What a subscriber takes: the ids that changed, oldest change first, or
    ``overflowed`` (and no ids) when more changed than its feed holds."""

    ids: tuple[str, ...]
    overflowed: bool = False

    def __bool__(self) -> bool:
        return bool(self.ids) or self.overflowed


class Feed:
    """One subscriber's changed session ids: bounded, each id once."""

    def __init__(self, limit: int = FEED_LIMIT) -> None:
        self._limit = limit
        # A dict as an ordered set: a session that changes twice is sent once.
        self._ids: dict[str, None] = {}
        self._overflowed = False
        self._marked = False
        # Made when someone waits: an anyio.Event needs a running event loop.
        self._ready: anyio.Event | None = None

    def mark(self, session_id: str) -> None:
        """Note that ``session_id`` changed; never blocks, never grows past the limit."""
        if not self._overflowed:
            if session_id not in self._ids and len(self._ids) >= self._limit:
                self._ids.clear()
                self._overflowed = True
            else:
                self._ids[session_id] = None
        self._marked = True
        if self._ready is not None:
            self._ready.set()

    def take(self) -> Changes:
        """The changes since the last take (possibly none), and start afresh."""
        changes = Changes(tuple(self._ids), self._overflowed)
        self._ids = {}
        self._overflowed = False
        self._marked = False
        return changes

    async def wait(self) -> None:
        """Return once something is marked and not taken yet."""
        while not self._marked:
            self._ready = anyio.Event()
            await self._ready.wait()
        self._ready = None


class Watch:
    """The registry's subscribers. Not thread-safe: use it from the event loop only."""

    def __init__(self, *, max_feeds: int = MAX_FEEDS, limit: int = FEED_LIMIT) -> None:
        self._max_feeds = max_feeds
        self._limit = limit
        self._feeds: list[Feed] = []

    @property
    def watching(self) -> bool:
        """Someone subscribes (the callers skip their work when not)."""
        return bool(self._feeds)

    @property
    def full(self) -> bool:
        """Another subscriber would be refused."""
        return len(self._feeds) >= self._max_feeds

    @contextmanager
    def subscribe(self) -> Iterator[Feed]:
        """A feed of changes for the ``with`` block; raises :class:`TooManyWatchers`."""
        if self.full:
            raise TooManyWatchers(f"at most {self._max_feeds} watchers at once")
        feed = Feed(self._limit)
        self._feeds.append(feed)
        try:
            yield feed
        finally:
            self._feeds.remove(feed)

    def changed(self, session_id: str) -> None:
        """Tell every subscriber that ``session_id`` may have changed."""
        for feed in self._feeds:
            feed.mark(session_id)


@dataclass(frozen=True, slots=True)
class Sample:
    """The node at one moment: ``at`` (Unix seconds), sessions per public state,
    and the message counters since start."""

    at: float
    sessions: Mapping[str, int]
    messages_in: int
    messages_out: int


class Trend:
    """The last ``size`` samples, oldest first (a ring: the oldest goes first)."""

    def __init__(self, size: int) -> None:
        self._samples: deque[Sample] = deque(maxlen=size)

    def record(self, sample: Sample) -> None:
        """Keep ``sample`` (the oldest is dropped when full)."""
        self._samples.append(sample)

    def samples(self) -> list[Sample]:
        """The kept samples, oldest first."""
        return list(self._samples)
