"""The supervisor: one task that fires every session's timers from the injected clock.

Every ``settings.supervisor_tick`` seconds it asks each live connection what
its timers want (heartbeat ``ping``, ``idle``, close 4001 or 4500, cutting a
peer that ignores a close) and forgets closed sessions past their retention.
One task for all sessions instead of timers per session: at 10,000 sessions a
tick costs a few milliseconds.
"""

from __future__ import annotations

import logging

from chat.clock import Clock
from chat.registry import Registry

log = logging.getLogger("chat.supervisor")


class Supervisor:
    """Drives session timers; run :meth:`run` in the node's task group."""

    def __init__(self, registry: Registry, clock: Clock, tick: float) -> None:
        self._registry = registry
        self._clock = clock
        self.tick = tick
        #: When the last pass began: a session whose history grew since changed.
        self._checked_at = float("-inf")

    async def run(self) -> None:
        """Check every ``tick`` seconds until cancelled."""
        while True:
            await self._clock.sleep(self.tick)
            self.check(self._clock.now())

    def check(self, now: float) -> None:
        """One pass over every live session at ``now``.

        A session whose timers fail is logged and cut; the others, and the
        supervisor, go on. While someone watches the registry, every session
        whose state changed since the last pass is reported to the watch, once:
        a change made by this pass's timers now, one made on a frame of its client
        (later than the last pass) now too, and neither again at the next pass (a
        wave of 10,000 sessions going idle costs a watcher one resync, not two).
        """
        watch = self._registry.watch if self._registry.watch.watching else None
        since, self._checked_at = self._checked_at, now
        for live in self._registry.live():
            last = live.session.history[-1]
            try:
                live.on_timer(now)
            except Exception:
                log.exception(
                    "session %s: timer failed", live.session.id, extra=live.session.log_fields()
                )
                live.abort()
            if watch is not None and (last.at > since or live.session.history[-1] is not last):
                watch.changed(live.session.id)
        self._registry.purge(now)
