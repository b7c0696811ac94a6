"""Hypercorn 0.18.0 hooks: clean shutdown under the plain CLI, and control of each connection.

Hypercorn gives an app no public hook that runs before it drops connections:
its lifespan shutdown comes after every WebSocket is gone, and on Python 3.12+
it never exits while one is open (``docs/development.md``, The Hypercorn hooks). It also
always negotiates permessage-deflate, inflates without a cap, and never tells
the app the peer's close code or lets it drop a peer that stopped reading.
:func:`install` fixes these by replacing private names of Hypercorn 0.18.0
(pinned in ``pyproject.toml``; the end-to-end shutdown tests guard them):

1. ``hypercorn.asyncio.run.raise_shutdown``: the worker's shutdown trigger
   (parent's event, signal, reload, ``max_requests``) or a SIGTERM sent to the
   worker itself first drains the node (``bye``, 1001, bounded wait), then lets
   Hypercorn close its listeners with nothing left open.
2. ``TCPServer.run``: each connection gets a :class:`ConnectionHandle` in a
   context variable that the app's task inherits: the transport to abort, the
   peer's close code, Hypercorn's ping task, and the stream writer to which
   server text frames are written directly, many in one write, while no
   permessage-deflate and no close is in the way (Hypercorn's per-frame send
   path cost most of the server's CPU per delivery).
3. ``PerMessageDeflate`` in ``ws_stream``: negotiated only when
   ``CHAT_WS_COMPRESSION`` is true, and never inflating past
   ``CHAT_MAX_MESSAGE_BYTES`` (close 1009).
4. ``WebsocketBuffer``: sized by ``CHAT_MAX_MESSAGE_BYTES`` instead of
   Hypercorn's ``websocket_max_message_size``.
5. ``Connection`` in ``ws_stream``: closes 1009 as soon as a message grows past
   ``CHAT_MAX_MESSAGE_BYTES`` (Hypercorn would keep buffering what the client
   goes on sending), hands the app a binary message at its first chunk (the
   app closes 1003) and drops the rest unbuffered, records the peer's close
   frame, and answers a frame that fails to parse with a close frame instead
   of dropping the TCP connection.
6. ``WSStream._send_pings``: the first protocol ping goes one interval after
   the connection opened (not at once), and the ping task is cancelled with
   its session, so a closed connection does not linger until the next tick.
7. ``H2Protocol``: does not advertise WebSockets over HTTP/2 (RFC 8441), so
   browsers open them over HTTP/1.1; a client that tries anyway is refused
   with 505 by the node (one HTTP/2 connection carries many streams and never
   pushes back on one, so a stuck session could be neither cut nor bounded).
8. ``TaskGroup.spawn_app`` and ``WorkerContext.event_class``: each stream's
   app queue is a :class:`chat.lean.AppQueue` and each protocol's events are
   :class:`chat.lean.LazyEvent`, which allocate nothing until someone waits
   (about 3.5 KiB less per open connection).

Only the asyncio and uvloop workers are covered (not trio).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from contextvars import ContextVar
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from wsproto.connection import ConnectionState

from chat.lean import AppQueue, LazyEvent

if TYPE_CHECKING:
    from chat.node import Node

log = logging.getLogger("chat.hypercorn")

#: Set on the patched functions so that a second :func:`install` changes nothing.
_MARK = "_chat_hook"
#: The only Hypercorn release whose private names the hooks were checked against.
SUPPORTED_HYPERCORN = "0.18.0"


class ConnectionHandle:
    """What the app may know and do about its own TCP connection under Hypercorn."""

    __slots__ = ("app_queue", "closed_with", "deflate", "pinger", "writer", "wsproto")

    def __init__(self, writer: asyncio.StreamWriter | None) -> None:
        self.writer = writer
        #: Hypercorn's protocol-ping task for this connection, if pings are on.
        self.pinger: asyncio.Task[Any] | None = None
        #: ``(code, reason, by)`` of the first close seen below the app.
        self.closed_with: tuple[int, str, str] | None = None
        #: permessage-deflate was negotiated: frames must go through wsproto.
        self.deflate = False
        #: wsproto's state machine for this connection, once the handshake began.
        self.wsproto: Any = None
        #: What Hypercorn has read for the app and the app has not taken yet.
        self.app_queue: AppQueue | None = None

    def writable_now(self) -> bool:
        """True when :meth:`write_now` may write: the socket is open and not backed up.

        Server frames are unmasked and, without permessage-deflate, need no
        state: what :meth:`write_now` writes is what Hypercorn would write,
        without its per-frame cost (several coroutine hops, and a socket send
        per frame).
        """
        writer = self.writer
        return (
            writer is not None
            and self._raw_frames_allowed()
            and not writer.transport.is_closing()
            and writer.transport.get_write_buffer_size() < WRITE_NOW_LIMIT
        )

    def input_pending(self) -> bool:
        """True when Hypercorn holds more client messages for the app (or cannot say)."""
        return self.app_queue is None or self.app_queue.qsize() > 0

    def _raw_frames_allowed(self) -> bool:
        # No deflate state to keep, and no close frame sent or received yet
        # (from then on, Hypercorn knows what may still be sent).
        return (
            not self.deflate
            and self.wsproto is not None
            and self.wsproto.state is ConnectionState.OPEN
        )

    def write_now(self, texts: list[str]) -> None:
        """Write ``texts`` as text frames in one write; only after :meth:`writable_now`."""
        assert self.writer is not None
        self.writer.write(b"".join(map(text_frame, texts)))

    async def send_texts(self, texts: list[str]) -> bool:
        """Write ``texts`` in one write, then wait until the socket took them.

        Returns False, having sent nothing, when the caller must send through
        ASGI instead (permessage-deflate, a close under way, not Hypercorn).
        """
        writer = self.writer
        if writer is None or not self._raw_frames_allowed():
            return False
        if writer.transport.is_closing():
            return True  # gone: the reader sees the disconnect
        self.write_now(texts)
        with suppress(OSError):  # a lost connection: the reader sees it
            await writer.drain()
        return True

    def record(self, code: int, reason: str, by: str) -> None:
        """Remember how the connection ended (the first record wins)."""
        if self.closed_with is None:
            self.closed_with = (code, reason, by)

    def release(self) -> None:
        """The session is over: stop Hypercorn's ping task."""
        if self.pinger is not None and not self.pinger.done():
            self.pinger.cancel()
        self.pinger = None

    def abort(self) -> None:
        """Drop the TCP connection now, discarding what the peer never read."""
        self.release()
        if self.writer is not None:
            self.writer.transport.abort()


#: :meth:`ConnectionHandle.write_now` is not used while more than this waits
#: unsent in the socket's buffer: the session's writer then waits for it to drain.
WRITE_NOW_LIMIT = 64 * 1024


def text_frame(text: str) -> bytes:
    """One unmasked, final text frame (RFC 6455 section 5.2)."""
    data = text.encode()
    length = len(data)
    if length < 126:
        return b"\x81" + bytes((length,)) + data
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + data
    return b"\x81\x7f" + length.to_bytes(8, "big") + data


_current: ContextVar[ConnectionHandle | None] = ContextVar("chat_connection", default=None)


def current_connection() -> ConnectionHandle | None:
    """The handle of the connection this task serves; None outside a hooked Hypercorn."""
    return _current.get()


class _State:
    node: Node | None = None
    compression = False
    max_message_bytes = 65536
    drain: asyncio.Task[None] | None = None
    signalled: asyncio.Event | None = None


def install(node: Node) -> bool:
    """Hook this process's Hypercorn to ``node`` (idempotent); True when Hypercorn is hooked.

    Call it at import of the module Hypercorn loads (``main.py``): Hypercorn
    imports the app in each worker before it starts serving.
    """
    _State.node = node
    _State.compression = node.settings.ws_compression
    _State.max_message_bytes = node.settings.max_message_bytes
    try:
        found = version("hypercorn")
    except PackageNotFoundError:  # pragma: no cover - hypercorn is a dependency
        return False
    if found != SUPPORTED_HYPERCORN:
        log.warning(
            "Hypercorn %s is not %s: clean shutdown and connection hooks are off",
            found,
            SUPPORTED_HYPERCORN,
        )
        return False
    import hypercorn.asyncio.run as hc_run
    import hypercorn.asyncio.task_group as hc_task_group
    import hypercorn.asyncio.tcp_server as hc_tcp
    import hypercorn.asyncio.worker_context as hc_context
    import hypercorn.protocol.h2 as hc_h2
    import hypercorn.protocol.ws_stream as hc_ws

    if getattr(hc_run.__dict__["raise_shutdown"], _MARK, False):
        return True
    _patch_shutdown(hc_run)
    _patch_connections(hc_tcp, hc_ws)
    _patch_http2(hc_h2)
    _patch_lean(hc_task_group, hc_context)
    return True


# -- 1. shutdown ------------------------------------------------------------------


def _patch_shutdown(hc_run: Any) -> None:
    original = hc_run.raise_shutdown

    async def raise_shutdown(shutdown_event: Callable[[], Awaitable[Any]]) -> None:
        async def trigger() -> None:
            await _first_of(shutdown_event, _worker_signal().wait)
            await _drain()

        await original(trigger)

    setattr(raise_shutdown, _MARK, True)
    hc_run.raise_shutdown = raise_shutdown


def _worker_signal() -> asyncio.Event:
    """An event set by SIGTERM to this worker (installed once per process).

    With ``-w N`` the parent ``terminate()``s workers still busy as soon as one
    exits, and systemd signals every process: without this handler a worker
    would die in the middle of closing its sessions. With ``-w 0`` it replaces
    Hypercorn's own SIGTERM handler, which is why the trigger waits for it too.
    """
    if _State.signalled is None:
        _State.signalled = asyncio.Event()
        with suppress(NotImplementedError, RuntimeError):  # not on Unix: nothing to do
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _State.signalled.set)
    return _State.signalled


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
    if _State.drain is None:
        _State.drain = asyncio.ensure_future(_drain_node())
    await asyncio.shield(_State.drain)


async def _drain_node() -> None:
    node = _State.node
    if node is None:
        return
    try:
        await node.shutdown()
    except Exception:
        log.exception("draining sessions at shutdown failed")


# -- 2 to 6. connections --------------------------------------------------------


def _patch_connections(hc_tcp: Any, hc_ws: Any) -> None:
    from wsproto.events import BytesMessage, CloseConnection, Message
    from wsproto.frame_protocol import CloseReason

    original_run = hc_tcp.TCPServer.run

    async def run(self: Any) -> None:
        _current.set(ConnectionHandle(getattr(self, "writer", None)))
        await original_run(self)

    hc_tcp.TCPServer.run = run

    class CappedDeflate(hc_ws.PerMessageDeflate):  # type: ignore[misc]
        """permessage-deflate only when configured, inflating at most the message limit."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._inflated = 0

        def accept(self, offer: str) -> bool | str | None:
            if not _State.compression:
                return None
            result: bool | str | None = super().accept(offer)
            handle = _current.get()
            if result is not None and handle is not None:
                handle.deflate = True
            return result

        def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
            if not self._inbound_compressed or not self._inbound_is_compressible:
                result: bytes | CloseReason = super().frame_inbound_payload_data(proto, data)
                return result
            limit = _State.max_message_bytes
            try:
                inflated = self._decompressor.decompress(bytes(data), limit - self._inflated + 1)
            except Exception:
                return CloseReason.INVALID_FRAME_PAYLOAD_DATA
            self._inflated += len(inflated)
            if self._inflated > limit:
                return CloseReason.MESSAGE_TOO_BIG
            return bytes(inflated)

        def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
            result: bytes | CloseReason | None = super().frame_inbound_complete(proto, fin)
            if fin:
                self._inflated = 0
            return result

    class AppSizedBuffer(hc_ws.WebsocketBuffer):  # type: ignore[misc]
        """Hypercorn's message buffer, sized by ``CHAT_MAX_MESSAGE_BYTES``, not its own setting.

        :class:`RecordingConnection` cuts a message before it outgrows this,
        so the app's limit is the one that holds, whatever the config file says.
        """

        def __init__(self, max_length: int) -> None:
            super().__init__(_State.max_message_bytes)

    class RecordingConnection(hc_ws.Connection):  # type: ignore[misc]
        """wsproto's connection, cutting oversized messages and telling the app how it ended."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._message_size = 0
            self._refusing_binary = False
            handle = _current.get()
            if handle is not None:
                handle.wsproto = self

        def events(self) -> Iterator[Any]:
            for event in super().events():
                if isinstance(event, BytesMessage):
                    # Binary is refused whatever its size: the app gets an empty
                    # binary message at the first chunk (and closes 1003); the
                    # rest of the message is dropped as it arrives, never buffered.
                    if not self._refusing_binary:
                        self._refusing_binary = True
                        yield BytesMessage(data=b"", frame_finished=True, message_finished=True)
                    if event.message_finished:
                        self._refusing_binary = False
                    continue
                if isinstance(event, Message):
                    # Characters for text: never more than its UTF-8 bytes, so
                    # nothing within the byte limit is cut here; the app checks bytes.
                    self._message_size += len(event.data)
                    if self._message_size > _State.max_message_bytes:
                        # Close 1009 at once instead of letting Hypercorn buffer
                        # (and keep) what a client goes on sending.
                        yield self._fail(CloseReason.MESSAGE_TOO_BIG, "message too big")
                        return
                    if event.message_finished:
                        self._message_size = 0
                elif isinstance(event, CloseConnection):
                    if self.state is ConnectionState.OPEN:
                        # A frame failed to parse (bad UTF-8, a too-big inflated
                        # message): let Hypercorn answer it with a close frame.
                        yield self._fail(event.code, event.reason or "")
                        return
                    handle = _current.get()
                    if handle is not None:
                        handle.record(int(event.code), "client_closed", "client")
                yield event

        def _fail(self, code: int, reason: str) -> Any:
            """A close Hypercorn answers with a close frame of ``code`` and then ends the stream."""
            self._state = ConnectionState.REMOTE_CLOSING
            handle = _current.get()
            if handle is not None:
                cause = "message_too_big" if code == 1009 else "protocol_error"
                handle.record(int(code), cause, "server")
            return CloseConnection(code=code, reason=reason)

    original_send_pings = hc_ws.WSStream._send_pings

    async def send_pings(self: Any) -> None:
        handle = _current.get()
        if handle is not None:
            handle.pinger = asyncio.current_task()
        # Hypercorn pings the moment the connection opens; the first ping
        # belongs one interval later (a peer that just connected is alive).
        await self.context.sleep(self.config.websocket_ping_interval)
        await original_send_pings(self)

    hc_ws.PerMessageDeflate = CappedDeflate
    hc_ws.WebsocketBuffer = AppSizedBuffer
    hc_ws.Connection = RecordingConnection
    hc_ws.WSStream._send_pings = send_pings


# -- 7. no WebSockets over HTTP/2 ----------------------------------------------------


def _patch_http2(hc_h2: Any) -> None:
    from h2.settings import SettingCodes, Settings

    original_init = hc_h2.H2Protocol.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        # Hypercorn advertises RFC 8441 (SETTINGS_ENABLE_CONNECT_PROTOCOL = 1);
        # without it, a browser on an HTTP/2 connection opens its WebSockets
        # over HTTP/1.1 instead. A client that tries anyway gets 505 from the node.
        current = self.connection.local_settings
        self.connection.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: current.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: current.max_header_list_size,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )

    hc_h2.H2Protocol.__init__ = init


# -- 8. lighter per-connection primitives ---------------------------------------------


def _patch_lean(hc_task_group: Any, hc_context: Any) -> None:
    handle_app = hc_task_group._handle

    async def spawn_app(
        self: Any, app: Any, config: Any, scope: Any, send: Any
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

    hc_task_group.TaskGroup.spawn_app = spawn_app
    hc_context.WorkerContext.event_class = LazyEvent
