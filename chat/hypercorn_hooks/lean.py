"""Lighter stand-ins for the asyncio primitives Hypercorn creates per connection.

Every idle WebSocket under Hypercorn holds an ``asyncio.Queue`` (its app
queue: three deques and an ``Event`` with a fourth) and an ``asyncio.Event``
(``H11Protocol.can_read``). An empty deque takes about 750 bytes, so these
are some 3.5 KiB of every open connection, most of which never hold anything
(measured: 3.9 KiB less per idle connection with these, see
:mod:`chat.hypercorn_hooks`).
:func:`patch_lean` swaps in these two classes (``TaskGroup.spawn_app`` and
``WorkerContext.event_class``), which behave the same for how Hypercorn uses
them and allocate nothing until someone waits. The app queue is also how
the app learns whether more client frames wait (``input_pending``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import hypercorn.asyncio.task_group as task_group
from hypercorn.asyncio.worker_context import WorkerContext

from chat.hypercorn_hooks.handle import _current


def _wake_first(waiters: list[asyncio.Future[None]] | None) -> None:
    """Wake the oldest waiter that is still waiting."""
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return


async def _wait(waiters: list[asyncio.Future[None]]) -> None:
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except BaseException:
        if waiter in waiters:
            waiters.remove(waiter)
        elif not waiter.cancelled():
            # Woken, then cancelled before it ran: hand the wake-up on.
            _wake_first(waiters)
        raise


class AppQueue:
    """A FIFO queue with a bound (``maxsize`` <= 0: none), as ``asyncio.Queue`` for
    Hypercorn's app queue: ``put`` waits while it is full, ``get`` while it is empty."""

    __slots__ = ("_getters", "_items", "_maxsize", "_putters")

    def __init__(self, maxsize: int = 0) -> None:
        self._items: list[Any] = []
        self._maxsize = maxsize
        self._getters: list[asyncio.Future[None]] | None = None
        self._putters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return 0 < self._maxsize <= len(self._items)

    async def put(self, item: Any) -> None:
        while self.full():
            if self._putters is None:
                self._putters = []
            await _wait(self._putters)
        self._items.append(item)
        _wake_first(self._getters)

    async def get(self) -> Any:
        while not self._items:
            if self._getters is None:
                self._getters = []
            await _wait(self._getters)
        item = self._items.pop(0)
        _wake_first(self._putters)
        if self._items:
            _wake_first(self._getters)  # more for a getter woken with this one
        return item


class LazyEvent:
    """Hypercorn's ``EventWrapper`` (async ``set``, ``clear``, ``wait``), creating its
    ``asyncio.Event`` only when someone has to wait."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._set = False

    async def clear(self) -> None:
        self._set = False
        if self._event is not None:
            self._event.clear()

    async def wait(self) -> None:
        if self._set:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    async def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def is_set(self) -> bool:
        return self._set


def patch_lean() -> None:
    """Hypercorn's per-connection queue and events, as the classes above."""
    handle_app = task_group._handle

    async def spawn_app(
        self: task_group.TaskGroup, app: Any, config: Any, scope: Any, send: Any
    ) -> Callable[[Any], Awaitable[None]]:
        # Hypercorn's own, with an AppQueue for its asyncio.Queue.
        app_queue = AppQueue(config.max_app_queue_size)
        handle = _current.get()
        if handle is not None:
            handle.app_queue = app_queue

        def _call_soon(func: Callable[..., Any], *args: Any) -> Any:
            future = asyncio.run_coroutine_threadsafe(func(*args), self._loop)
            return future.result()

        self.spawn(
            handle_app,
            app,
            config,
            scope,
            app_queue.get,
            send,
            partial(self._loop.run_in_executor, None),
            _call_soon,
        )
        return app_queue.put

    task_group.TaskGroup.spawn_app = spawn_app  # type: ignore[method-assign]
    WorkerContext.event_class = LazyEvent
