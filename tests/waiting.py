"""Waiting for a condition, the one way the tests do it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Call ``check()`` until it returns a truthy value (returned) or ``timeout`` passes
    (its last value returned: the caller's assert then says what it was).

    ``check`` runs in a thread, so it may block (an HTTP request to a server
    under test) without stalling the event loop and the clients on it.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)
