"""Brokers move publications between processes; they know nothing of sessions.

Pick one by URL scheme with :func:`open_broker`; each implementation is
imported only when its scheme is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chat.brokers.base import (
    Apply,
    Broker,
    BrokerUnavailable,
    Bus,
    Claims,
    ClusterView,
    Control,
    Deliver,
    History,
    PresenceStore,
)
from chat.envelope import Draft, Publication, Recovery

if TYPE_CHECKING:
    from chat.clock import Clock
    from chat.settings import Settings


def open_broker(settings: Settings, clock: Clock) -> Broker:
    """The broker for ``settings.broker_url``: ``memory://`` (the embedded default),
    or ``redis://`` / ``rediss://`` (imported only then).

    Raises :class:`ValueError` for an unsupported scheme.
    """
    scheme = settings.broker_url.partition("://")[0]
    if scheme == "memory":
        from chat.brokers.memory import InMemoryBroker

        return InMemoryBroker(
            clock,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            history_max_bytes=settings.history_max_bytes,
            send_id_window=settings.send_id_window,
        )
    if scheme in {"redis", "rediss"}:
        from chat.brokers.redis import RedisBroker

        return RedisBroker(
            settings.broker_url,
            clock,
            node_id=settings.node_id,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            send_id_window=settings.send_id_window,
        )
    raise ValueError(f"unsupported broker URL scheme {scheme!r}")


__all__ = [
    "Apply",
    "Broker",
    "BrokerUnavailable",
    "Bus",
    "Claims",
    "ClusterView",
    "Control",
    "Deliver",
    "Draft",
    "History",
    "PresenceStore",
    "Publication",
    "Recovery",
    "open_broker",
]
