"""Clean shutdown under the plain ``hypercorn`` command.

Hypercorn's lifespan shutdown comes only after it has dropped every
connection (clients saw 1011 after ``graceful_timeout``, or 1006 with
``-w 2``), and on Python 3.12+ Hypercorn 0.18 never exits while a WebSocket is
open. ``hypercorn.asyncio.run.raise_shutdown`` is wrapped: the worker's
shutdown trigger (the parent's event, a signal, a reload, ``max_requests``) or
a SIGTERM sent to the worker itself first drains the node (``bye``, 1001, a
bounded wait), then lets Hypercorn close its listeners with nothing left
open. Measured (``python -m bench.shutdown_timing``, 20 sessions): the last
close 0.03 to 0.07 s after the signal and exit 0.2 s after it, on Python
3.11 and 3.12, with one worker or two (``tests/e2e/test_shutdown.py``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import hypercorn.asyncio.run as hypercorn_run

if TYPE_CHECKING:
    from chat.node import Node

log = logging.getLogger("chat.hypercorn")


class _Drain:
    node: Node | None = None
    task: asyncio.Task[None] | None = None
    signalled: asyncio.Event | None = None


def patch_shutdown(node: Node) -> None:
    """Make each worker's shutdown trigger drain ``node`` first."""
    _Drain.node = node
    # worker_serve looks this name up at call time (imported there from hypercorn.utils).
    original = hypercorn_run.raise_shutdown  # type: ignore[attr-defined]

    async def raise_shutdown(shutdown_event: Callable[[], Awaitable[Any]]) -> None:
        async def trigger() -> None:
            await _first_of(shutdown_event, _worker_signal().wait)
            await _drain()

        await original(trigger)

    hypercorn_run.raise_shutdown = raise_shutdown  # type: ignore[attr-defined]


def _worker_signal() -> asyncio.Event:
    """An event set by SIGTERM to this worker (installed once per process).

    With ``-w N`` the parent ``terminate()``s workers still busy as soon as one
    exits, and systemd signals every process: without this handler a worker
    would die in the middle of closing its sessions. With ``-w 0`` it replaces
    Hypercorn's own SIGTERM handler, which is why the trigger waits for it too.
    """
    if _Drain.signalled is None:
        _Drain.signalled = asyncio.Event()
        with suppress(NotImplementedError, RuntimeError):  # not on Unix: nothing to do
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _Drain.signalled.set)
    return _Drain.signalled


async def _first_of(*waiters: Callable[[], Awaitable[Any]]) -> None:
    tasks = [asyncio.ensure_future(waiter()) for waiter in waiters]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _drain() -> None:
    """Drain the node once per process, whoever asks first; never raises."""
    if _Drain.task is None:
        _Drain.task = asyncio.ensure_future(_drain_node())
    await asyncio.shield(_Drain.task)


async def _drain_node() -> None:
    node = _Drain.node
    if node is None:
        return
    try:
        await node.shutdown()
    except Exception:
        log.exception("draining sessions at shutdown failed")
