"""The WebSocket layer under the app: what Hypercorn's ``ws_stream`` builds, replaced.

- ``PerMessageDeflate``: negotiated only with ``CHAT_WS_COMPRESSION``, and
  never inflating past ``CHAT_MAX_MESSAGE_BYTES``. Hypercorn always accepts
  it and inflates without a cap: 20 clients sending 20 KB of compressed zeros
  took a worker from 45 to 902 MiB (``tests/e2e/test_basics.py``:
  ``test_compression_when_enabled_never_inflates_past_the_limit``); each
  compressed connection also costs about 100 KiB.
- ``WebsocketBuffer``: sized by ``CHAT_MAX_MESSAGE_BYTES``, not by Hypercorn's
  own setting, so the app's limit is the one that holds.
- ``Connection`` (wsproto's): a message growing past the limit is closed 1009
  as it arrives (a client streaming on after it was refused is cut after
  under 16 MiB: ``test_a_client_that_ignores_1009_and_streams_on_is_cut...``);
  a binary message reaches the app at its first chunk, the rest dropped
  unbuffered (a 4 MiB message in 64-byte frames was buffered whole for
  1.9 s before: ``test_a_binary_message_is_refused_at_its_first_frame``); the
  peer's close code is recorded (the app would see 1000 or 1006); a frame that
  fails to parse is answered with a close frame instead of a dropped socket.
- ``WSStream._send_pings``: the first protocol ping one interval after the
  connection opened (Hypercorn's ping at once failed nearly every Autobahn
  case: ``tests/e2e/test_autobahn.py``), and the ping task cancelled with its
  session (a closed connection lingered until the next tick: 5.1 s instead of
  0.2 s to shut down with pings every 5 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import hypercorn.protocol.ws_stream as ws_stream
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Message
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from chat.hypercorn_hooks.handle import _current


class Limits:
    """What the hooks enforce, from the node's settings (set by ``install``)."""

    compression = False
    max_message_bytes = 65536


class CappedDeflate(PerMessageDeflate):
    """permessage-deflate only when configured, inflating at most the message limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inflated = 0

    def accept(self, offer: str) -> bool | str | None:
        if not Limits.compression:
            return None
        result: bool | str | None = super().accept(offer)
        handle = _current.get()
        if result is not None and handle is not None:
            handle.deflate = True
        return result

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return super().frame_inbound_payload_data(proto, data)
        limit = Limits.max_message_bytes
        decompressor = self._decompressor
        assert decompressor is not None
        try:
            inflated = decompressor.decompress(bytes(data), limit - self._inflated + 1)
        except Exception:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(inflated)
        if self._inflated > limit:
            return CloseReason.MESSAGE_TOO_BIG
        return bytes(inflated)

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        result = super().frame_inbound_complete(proto, fin)
        if fin:
            self._inflated = 0
        return result


class AppSizedBuffer(ws_stream.WebsocketBuffer):
    """Hypercorn's message buffer, sized by ``CHAT_MAX_MESSAGE_BYTES``, not its own setting.

    :class:`RecordingConnection` cuts a message before it outgrows this.
    """

    def __init__(self, max_length: int) -> None:
        super().__init__(Limits.max_message_bytes)


class RecordingConnection(Connection):
    """wsproto's connection, cutting oversized and binary messages and recording closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._message_size = 0
        self._refusing_binary = False
        handle = _current.get()
        if handle is not None:
            handle.wsproto = self

    def events(self) -> Generator[Event, None, None]:
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
                if self._message_size > Limits.max_message_bytes:
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

    def _fail(self, code: int, reason: str) -> CloseConnection:
        """A close Hypercorn answers with a close frame of ``code`` and then ends the stream."""
        self._state = ConnectionState.REMOTE_CLOSING
        handle = _current.get()
        if handle is not None:
            cause = "message_too_big" if code == 1009 else "protocol_error"
            handle.record(int(code), cause, "server")
        return CloseConnection(code=code, reason=reason)


def patch_websocket(compression: bool, max_message_bytes: int) -> None:
    """Swap the classes ``ws_stream`` builds for chat's, and delay its first ping."""
    Limits.compression = compression
    Limits.max_message_bytes = max_message_bytes
    original_send_pings = ws_stream.WSStream._send_pings

    async def send_pings(self: ws_stream.WSStream) -> None:
        handle = _current.get()
        if handle is not None:
            handle.pinger = asyncio.current_task()
        # Hypercorn pings the moment the connection opens; the first ping
        # belongs one interval later (a peer that just connected is alive).
        await self.context.sleep(self.config.websocket_ping_interval or 0)
        await original_send_pings(self)

    ws_stream.PerMessageDeflate = CappedDeflate  # type: ignore[attr-defined]
    ws_stream.WebsocketBuffer = AppSizedBuffer  # type: ignore[misc]
    ws_stream.Connection = RecordingConnection  # type: ignore[attr-defined]
    ws_stream.WSStream._send_pings = send_pings  # type: ignore[method-assign]
