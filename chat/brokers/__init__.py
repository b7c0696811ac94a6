"""Brokers move publications between processes; they know nothing of sessions.

Pick one by URL scheme with :func:`open_broker`; each implementation is
imported only when its scheme is used.
"""

from __future__ import annotations

from chat.brokers.base import Broker, BrokerUnavailable, Deliver, Draft, Publication


def open_broker(url: str) -> Broker:
    """The broker for ``url``: ``memory://`` (the embedded default).

    Raises :class:`ValueError` for an unsupported scheme.
    """
    scheme = url.partition("://")[0]
    if scheme == "memory":
        from chat.brokers.memory import InMemoryBroker

        return InMemoryBroker()
    raise ValueError(f"unsupported broker URL scheme {scheme!r} (supported: memory://)")


__all__ = ["Broker", "BrokerUnavailable", "Deliver", "Draft", "Publication", "open_broker"]
