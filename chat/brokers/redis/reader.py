"""Reading a room's history from Redis for the server API: a read that starts nothing.

:meth:`~chat.brokers.redis.streams.Streams.recover` starts a run for a room
that has none (a joining member needs one); a reader must not, so that asking
about a room leaves no trace. One script (``scripts/read.lua``) reads the
room's run, its latest ``seq`` and the kept entries after ``since``; Redis time
decides which are too old, as for a recovery.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from chat.brokers.redis import keys
from chat.brokers.redis.link import Link, script_source
from chat.brokers.redis.streams import parse_publication
from chat.envelope import HistoryPage, Publication, history_page


class Reader:
    """Reads rooms' histories; ``run()`` is the Redis server's current run (part of
    every epoch, see :mod:`chat.brokers.redis.streams`)."""

    def __init__(self, link: Link, *, history_ttl: float, run: Callable[[], str]) -> None:
        self._link = link
        self._history_ttl = history_ttl
        self._run = run
        self._script = link.commands.register_script(script_source("read"))

    async def read(self, room: str, since: int, limit: int, epoch: str | None) -> HistoryPage:
        """See :meth:`chat.brokers.History.read`."""
        stored, seq, now_ms, entries = await self._link.call(
            self._script(keys=[keys.meta(room), keys.log(room)], args=[since])
        )
        if not stored:
            return history_page(0, None, since, epoch, (), limit)
        current = f"{stored!s}.{self._run()}"
        horizon_ms = int(now_ms) - self._history_ttl * 1000
        kept: list[Publication] = []
        for entry_id, raw in reversed(list(zip(entries[::2], entries[1::2], strict=True))):
            publication = parse_publication(orjson.loads(raw))
            fresh = int(str(entry_id).partition("-")[0]) > horizon_ms
            if fresh and publication.epoch == current and publication.seq > since:
                kept.append(publication)
        return history_page(int(seq), current, since, epoch, kept, limit)
