"""The Redis broker: many processes and hosts share rooms, presence and session caps.

Imported only for ``redis://`` and ``rediss://`` URLs (:func:`chat.brokers.open_broker`).
:mod:`~chat.brokers.redis.broker` puts the parts together; the keys are in
:mod:`~chat.brokers.redis.keys`, the Lua scripts in ``scripts/``.
"""

from __future__ import annotations

from chat.brokers.redis.broker import RedisBroker
from chat.brokers.redis.link import mask_url

__all__ = ["RedisBroker", "mask_url"]
