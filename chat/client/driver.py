"""The client's thin anyio driver: :class:`Client` carries out the decisions of
:class:`~chat.client.core.ClientCore`.

It owns every task it starts (one task group, entered by ``async with``) and
does only I/O: the WebSocket (the ``websockets`` library, asyncio backend),
the clock, the token provider and handing events to the application. Every
decision is the core's.

One lock serialises the calls into the core and the frames they write; it is
never held while waiting for the application. Events go from the core to a
queue, and one task (the dispatcher) hands them to the callbacks and the
``async for`` stream, outside the lock: a callback may call ``send``,
``join``, ``leave`` or ``aclose``, and an application that stops reading
holds up only the socket's reader (backpressure), never ``aclose``.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random as _random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

import anyio
import orjson
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

try:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.typing import Subprotocol
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "chat.client needs the websockets library: pip install 'chat[client]'"
    ) from error

from chat.client.core import SUBPROTOCOL, ClientConfig, ClientCore, urls_of
from chat.client.events import (
    Ack,
    ClientClosed,
    ClientError,
    ConnectionState,
    Event,
    StateChanged,
)
from chat.clock import Clock, MonotonicClock

E = TypeVar("E", bound=Event)
TokenProvider = Callable[[], Awaitable[str] | str]
Callback = Callable[[Any], Awaitable[None] | None]

#: Events buffered for ``async for`` before the client stops reading the socket.
DEFAULT_BUFFER = 10_000
#: Seconds for a handshake to complete.
OPEN_TIMEOUT = 10.0
#: Seconds :meth:`Client.aclose` waits for the connection's close handshake.
CLOSE_WAIT = 5.0


@dataclass
class _Waiter:
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Ack | ClientError | None = None


class Client:
    """A ``chat.v1`` client that keeps its session alive: use as ``async with Client(...)``.

    ``urls`` is one ``ws://host:port/ws/{room}`` URL or several (one per
    server, same room), tried in turn. Give ``user`` (open mode), or
    ``token`` (a JWT), or ``token_provider`` (called before each connection
    and again before the token's ``exp``, to send ``refresh``; sync or async).
    ``rooms`` are joined after the URL's room, on every connection.

    Events come in order from ``async for event in client`` (buffered up to
    ``buffer``; when the application stops reading, the client stops reading
    the socket, and a server that gives up on it (1013) is reconnected to and
    recovered from) and from the callbacks :meth:`on` registers. An
    application that only uses callbacks passes ``iterate=False``. Without
    ``user`` and token, the client is ``anon-<random>``, the same user on
    every connection (``ClientCore``).

    ``config`` tunes reconnects (:class:`~chat.client.core.ClientConfig`;
    its ``urls``, ``user`` and ``rooms`` are taken from the arguments).
    ``clock`` and ``random`` are for tests.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        user: str | None = None,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        rooms: Sequence[str] = (),
        config: ClientConfig | None = None,
        iterate: bool = True,
        buffer: int = DEFAULT_BUFFER,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        if token is not None and token_provider is not None:
            raise ValueError("give token or token_provider, not both")
        base = config or ClientConfig(urls=urls_of(urls))
        self.config = replace(base, urls=urls_of(urls), user=user, rooms=tuple(rooms))
        self._token = token
        self._provider = token_provider
        self._clock: Clock = clock or MonotonicClock()
        self._core = ClientCore(
            self.config,
            random=random or _random.random,
            id_prefix=uuid.uuid4().hex[:12],
            renewable_token=token_provider is not None,
            authenticated=token is not None,
        )
        self._iterate = iterate
        self._buffer = max(1, buffer)
        #: Events from the core, for the dispatcher (filled under the lock, never blocking).
        self._queue: deque[Event] = deque()
        self._queued = anyio.Event()
        self._drained = anyio.Event()
        #: The reader waits for the application (the queue is full).
        self._stalled = False
        #: The connection loop ended: the dispatcher ends once the queue is empty.
        self._run_done = False
        #: The application left ``async with``: events not handed out yet are dropped.
        self._leaving = False
        self._events_in: MemoryObjectSendStream[Event]
        self._events_out: MemoryObjectReceiveStream[Event]
        self._events_in, self._events_out = anyio.create_memory_object_stream[Event](buffer)
        self._callbacks: list[tuple[type[Any], Callback]] = []
        self._waiters: dict[str, _Waiter] = {}
        self._lock = anyio.Lock()
        self._wake = anyio.Event()
        self._changed = anyio.Event()
        self._ws: ClientConnection | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._finished = anyio.Event()

    # -- the application's side ------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's state now."""
        return self._core.state

    @property
    def user(self) -> str | None:
        """The user the server knows this client as (from its last ``welcome``)."""
        return self._core.user

    @property
    def session(self) -> str | None:
        """The server's id of the current (or last) session."""
        return self._core.session

    @property
    def rooms(self) -> list[str]:
        """The rooms this client is in (joined again after every reconnect)."""
        return [state.name for state in self._core.rooms.wanted()]

    def members(self, room: str) -> list[str]:
        """The users in ``room`` as the client last heard (``joined`` and ``presence``)."""
        state = self._core.rooms.get(room)
        return list(state.members) if state is not None and state.wanted else []

    def statistics(self) -> dict[str, int]:
        """Counters: ``reconnects``, ``pending`` sends, send ``retries``, ``duplicates``
        dropped, ``unrecoverable`` rooms, ``gaps`` seen, events ``waiting`` for the
        application (queued and buffered)."""
        rooms = self._core.rooms.statistics
        return {
            "waiting": len(self._queue) + self._events_out.statistics().current_buffer_used,
            "reconnects": self._core.reconnects,
            "pending": len(self._core.outbox),
            "retries": self._core.outbox.retries,
            "duplicates": rooms.duplicates,
            "unrecoverable": rooms.unrecoverable,
            "gaps": rooms.gaps,
        }

    def on(self, kind: type[E], callback: Callable[[E], Awaitable[None] | None]) -> None:
        """Call ``callback(event)`` for every event of type ``kind`` (``Event`` for all).

        Callbacks run in order in one task of the client, before the event
        reaches ``async for``; a slow one holds up the events after it (and,
        once ``buffer`` wait, the socket's reader). A callback may call
        :meth:`send` (awaiting its ack), :meth:`join`, :meth:`leave` and
        :meth:`aclose`. An exception in one ends the client and is raised,
        as it is (not in an exception group), by ``async with``.
        """
        self._callbacks.append((kind, callback))

    async def __aenter__(self) -> Client:
        stack = contextlib.AsyncExitStack()
        group: TaskGroup = await stack.enter_async_context(anyio.create_task_group())
        self._stack = stack
        self._group = group
        self._core.start(self._clock.now())
        group.start_soon(self._run)
        group.start_soon(self._dispatch)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        # The application reads no more: a dispatcher blocked on a full stream is
        # released (BrokenResourceError) and what is still queued is dropped.
        self._leaving = True
        self._events_out.close()
        self._drained.set()
        with anyio.CancelScope(shield=True):
            await self.aclose()
        # Whatever did not end within aclose's bound (a handshake under way) is cut.
        self._group.cancel_scope.cancel()
        try:
            # The body's own exception is re-raised as it is, not wrapped in a group.
            await self._stack.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            # A callback's exception (the one way a task of the client fails) is
            # raised as it is, as documented, not wrapped in anyio's groups.
            errors = _leaves(group)
            if len(errors) == 1:
                raise errors[0] from None
            raise

    async def aclose(self) -> None:
        """Close the connection (1000) and stop reconnecting; idempotent.

        Sends still pending fail with :class:`~chat.client.events.ClientClosed`;
        the event iterator ends after the last event.
        """
        async with self._lock:
            self._core.close(self._clock.now())
            await self._output()
        self._wake.set()
        # Bounded: the connection loop never waits for the application.
        with anyio.move_on_after(CLOSE_WAIT):
            await self._finished.wait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if not self._iterate:
            raise TypeError("this client was made with iterate=False")
        try:
            return await self._events_out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def send(self, room: str, text: str, *, id: str | None = None) -> Ack:
        """Send ``text`` to ``room`` and wait for its ``ack``, retrying with the same ``id``.

        Retried after ``error`` ``unavailable`` or ``rate_limited`` and after a
        lost connection, never duplicated (the server dedupes ids within
        ``CHAT_SEND_ID_WINDOW``; a send settled by its own message in a replay
        is not sent again; one first written longer ago than
        ``ClientConfig.send_id_window`` fails with ``SendFailed("uncertain")``
        rather than being written again). Raises :class:`~chat.client.events.OutboxFull`
        at once when too many sends are pending,
        :class:`~chat.client.events.SendFailed` when the server refuses it
        for good, :class:`~chat.client.events.ClientClosed` when the client
        closes first, ``ValueError`` for a room the client is not in. Wrap
        it in ``anyio.fail_after`` to bound the wait.
        """
        waiter = _Waiter()
        async with self._lock:
            send_id = self._core.send(room, text, self._clock.now(), id)
            self._waiters[send_id] = waiter
            await self._output()
        self._wake.set()
        await waiter.done.wait()
        if isinstance(waiter.result, Ack):
            return waiter.result
        assert waiter.result is not None
        raise waiter.result

    async def join(self, room: str) -> None:
        """Be in ``room`` from now on (a ``Joined`` event follows; after every reconnect too)."""
        async with self._lock:
            self._core.join(room, self._clock.now())
            await self._output()
        self._wake.set()

    async def leave(self, room: str) -> None:
        """Leave ``room`` (a ``Left`` event follows); its pending sends fail."""
        async with self._lock:
            self._core.leave(room, self._clock.now())
            await self._output()
        self._wake.set()

    async def wait_connected(self) -> None:
        """Return once connected; raises :class:`ClientClosed` if the client closes first."""
        while self._core.state is not ConnectionState.CONNECTED:
            if self._core.finished:
                raise ClientClosed(self._closed_reason())
            await self._changed.wait()

    def _closed_reason(self) -> str:
        return self._last_reason

    _last_reason = "closed"

    # -- the connection loop ---------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._core.finished:
                attempt = self._core.attempt(self._clock.now())
                if attempt is None:
                    await self._nap(self._core.deadline())
                    continue
                # The CONNECTING change is told now, not once the handshake is over.
                async with self._lock:
                    await self._output()
                await self._connect(attempt.url)
        finally:
            with anyio.CancelScope(shield=True):
                async with self._lock:
                    await self._output()
                for waiter in self._waiters.values():
                    waiter.result = ClientClosed(self._last_reason)
                    waiter.done.set()
                self._waiters.clear()
                self._run_done = True
                self._queued.set()
                self._finished.set()
                self._changed.set()

    async def _connect(self, url: str) -> None:
        headers: dict[str, str] = {}
        token = self._token
        if self._provider is not None:
            token = await self._fetch_token()
            if token is None:
                return  # a failed attempt: the core backs off
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await connect(
                url,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                additional_headers=headers,
                open_timeout=OPEN_TIMEOUT,
                ping_interval=None,  # the server's JSON heartbeats are what the core watches
                close_timeout=2,
                compression=None,
                max_queue=64,
            )
        except InvalidStatus as refusal:
            async with self._lock:
                self._core.refused(
                    self._clock.now(), refusal.response.status_code, _detail(refusal)
                )
                await self._output()
            return
        except (OSError, TimeoutError, InvalidHandshake) as failure:
            async with self._lock:
                self._core.refused(self._clock.now(), None, str(failure) or type(failure).__name__)
                await self._output()
            return
        try:
            async with ws:
                self._ws = ws
                try:
                    async with self._lock:
                        self._core.opened(self._clock.now())
                    if not self._core.finished:
                        await self._serve(ws)
                finally:
                    self._ws = None
        finally:
            # Cancelled (the client's tasks were cut), the close handshake above did
            # not finish: the socket is closed all the same, not left to the GC.
            if not ws.transport.is_closing():
                ws.transport.abort()
        async with self._lock:
            self._core.ended(self._clock.now(), _close_code(ws))
            await self._output()

    async def _fetch_token(self) -> str | None:
        """A token from the provider, given to the core; None when the provider failed
        (the core then backs off, or asks again later while connected)."""
        assert self._provider is not None
        try:
            token = self._provider()
            if inspect.isawaitable(token):
                token = await token
            if not isinstance(token, str):
                raise TypeError(f"the token provider returned {type(token).__name__}, not str")
        except Exception as error:  # the application's code: any failure is one attempt's
            async with self._lock:
                self._core.token_failed(self._clock.now(), f"{type(error).__name__}: {error}")
                await self._output()
            return None
        async with self._lock:
            self._core.token(token, self._clock.now(), self._clock.time())
            await self._output()
        return token

    async def _serve(self, ws: ClientConnection) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._read, ws, group)
            while self._core.close_request is None:
                await self._nap(self._core.deadline())
                async with self._lock:
                    if self._stalled:
                        # Frames wait unread because the application does: not the
                        # server's silence.
                        self._core.alive(self._clock.now())
                    self._core.tick(self._clock.now())
                    await self._output()
                if self._core.token_wanted and self._provider is not None:
                    await self._fetch_token()
            await self._close(ws)
            group.cancel_scope.cancel()

    async def _close(self, ws: ClientConnection) -> None:
        if self._core.close_request == "closed by the client":
            with anyio.move_on_after(2):
                await ws.close()
        else:
            # A silent server is presumed dead: no close handshake to wait for.
            ws.transport.abort()

    async def _read(self, ws: ClientConnection, group: TaskGroup) -> None:
        try:
            while True:
                raw = await ws.recv()
                if not isinstance(raw, str):
                    continue
                # The lock without a checkpoint when it is free (most frames): anyio's
                # acquire turns the event loop even then.
                try:
                    self._lock.acquire_nowait()
                except anyio.WouldBlock:
                    await self._lock.acquire()
                try:
                    self._core.received(raw, self._clock.now())
                    await self._output()
                finally:
                    self._lock.release()
                if self._due_sooner():
                    self._wake.set()
                if len(self._queue) >= self._buffer:
                    await self._wait_for_the_application()
        except ConnectionClosed:
            pass
        group.cancel_scope.cancel()

    async def _wait_for_the_application(self) -> None:
        """Backpressure: read no more frames until the dispatcher has room (lock not held)."""
        self._stalled = True
        try:
            while len(self._queue) >= self._buffer and not self._leaving:
                self._drained = anyio.Event()
                await self._drained.wait()
        finally:
            self._stalled = False
        async with self._lock:
            self._core.alive(self._clock.now())

    async def _dispatch(self) -> None:
        """Hand the queued events to the callbacks, then to ``async for``, in order."""
        try:
            while True:
                if not self._queue:
                    if self._run_done:
                        return
                    self._queued = anyio.Event()
                    await self._queued.wait()
                    continue
                event = self._queue.popleft()
                if len(self._queue) < self._buffer:
                    self._drained.set()
                if self._leaving:
                    continue
                for kind, callback in self._callbacks:
                    if isinstance(event, kind):
                        outcome = callback(event)
                        if inspect.isawaitable(outcome):
                            await outcome
                if self._iterate:
                    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                        await self._events_in.send(event)
        finally:
            self._events_in.close()
            self._drained.set()

    def _due_sooner(self) -> bool:
        """Whether the core now wants the connection loop before the time it naps until.

        Most frames (messages, presence, pings) only push the core's deadline
        later; waking the loop for each would cost a nap (a task group and a
        task) per frame, which a thousand clients in one process cannot afford
        while a restart storm brings their joins, presence and replays at once.
        """
        if self._core.close_request is not None or self._core.token_wanted:
            return True
        deadline = self._core.deadline()
        return deadline is not None and deadline < self._napping_until

    #: The deadline the current (or last) :meth:`_nap` sleeps until (inf: until woken).
    _napping_until = math.inf

    async def _nap(self, deadline: float | None) -> None:
        """Sleep until ``deadline`` (None: until woken), or until an application call wakes it."""
        self._napping_until = math.inf if deadline is None else deadline
        if self._wake.is_set():
            self._wake = anyio.Event()
            return
        wake = self._wake
        # The clock is read once: read again after the check, it may have passed the
        # deadline (a busy process), and a negative sleep raises.
        delay = None if deadline is None else deadline - self._clock.now()
        if delay is not None and delay <= 0:
            await anyio.lowlevel.checkpoint()
            return
        async with anyio.create_task_group() as group:

            async def timer(delay: float) -> None:
                await self._clock.sleep(delay)
                group.cancel_scope.cancel()

            if delay is not None:
                group.start_soon(timer, delay)
            # Waited for here, not in a task of its own: one task per nap, not two.
            await wake.wait()
            group.cancel_scope.cancel()
        if wake.is_set():
            self._wake = anyio.Event()

    async def _output(self) -> None:
        """Carry out the core's outputs, in order (called with the lock held).

        Frames are written here; events are only queued for the dispatcher:
        nothing here waits for the application.
        """
        frames = self._core.data_to_send()
        ws = self._ws
        if frames and ws is not None:
            try:
                for frame in frames:
                    await ws.send(frame)
            except ConnectionClosed:
                pass  # the reader sees the end and tells the core
        for send_id, result in self._core.settled():
            waiter = self._waiters.pop(send_id, None)
            if waiter is not None:
                waiter.result = result
                waiter.done.set()
        events = self._core.events()
        for event in events:
            if isinstance(event, StateChanged):
                self._last_reason = event.reason
                self._changed.set()
                self._changed = anyio.Event()
        if events:
            self._queue.extend(events)
            self._queued.set()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions of ``group`` and its nested groups, cancellations left out."""
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        elif not isinstance(error, anyio.get_cancelled_exc_class()):
            found.append(error)
    return found


def _close_code(ws: ClientConnection) -> int | None:
    received = ws.protocol.close_rcvd
    return received.code if received is not None else None


def _detail(refusal: InvalidStatus) -> str:
    try:
        body = orjson.loads(refusal.response.body or b"")
    except orjson.JSONDecodeError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else ""
