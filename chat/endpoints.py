"""The tutorial's routes, grown up: ``GET /``, ``/ws`` echo and ``/ws/{room_id}`` rooms.

Each WebSocket handshake becomes a :class:`~chat.connection.Handshake` and an
:class:`AsgiTransport`, handed to the node; everything else is in the domain.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, cast

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from chat.auth import bearer_token
from chat.errors import CloseCode
from chat.hypercorn_hooks import ConnectionHandle, current_connection
from chat.node import WEBSOCKET_HTTP_VERSIONS, Node
from chat.transport import CLIENT_CLOSED, CONNECTION_LOST, Disconnect, Endpoint, Handshake

router = APIRouter()


class AsgiTransport:
    """A Starlette ``WebSocket`` as a :class:`~chat.transport.Socket`: Hypercorn's fast
    path when the connection has a handle (:mod:`chat.hypercorn_hooks`), else plain ASGI."""

    __slots__ = ("_handle", "_websocket")

    def __init__(self, websocket: WebSocket, handle: ConnectionHandle | None) -> None:
        self._websocket = websocket
        self._handle = handle

    async def accept(self, subprotocol: str | None) -> None:
        await self._websocket.accept(subprotocol)

    async def reject(self, status: int, detail: str) -> None:
        response = JSONResponse({"detail": detail}, status_code=status)
        try:
            await self._websocket.send_denial_response(response)
        except RuntimeError:
            # A server without the denial-response extension: its 403 is all we can say.
            await self._websocket.close()

    async def receive(self) -> str | bytes | Disconnect:
        message = await self._websocket.receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return cast(str, text)
            return cast(bytes, message.get("bytes") or b"")
        return self._disconnect(int(message.get("code", CloseCode.ABNORMAL)))

    def _disconnect(self, code: int) -> Disconnect:
        handle = self._handle
        if handle is not None:
            if handle.closed_with is not None:
                return Disconnect(*handle.closed_with)
            # Hypercorn reports 1006 for every close it did not start (issue #127).
            return Disconnect(CloseCode.ABNORMAL, CONNECTION_LOST)
        if code == CloseCode.ABNORMAL:
            return Disconnect(code, CONNECTION_LOST)
        return Disconnect(code, CLIENT_CLOSED)

    def pending(self) -> bool:
        return self._handle is None or self._handle.input_pending()

    def ready(self) -> bool:
        return self._handle is not None and self._handle.input_waiting()

    def write(self, texts: list[str]) -> bool:
        handle = self._handle
        if handle is None or not handle.writable_now():
            return False
        handle.write_now(texts)
        return True

    async def send(self, texts: list[str]) -> None:
        """Several text frames: in one write under Hypercorn, else one by one through ASGI."""
        handle = self._handle
        if handle is not None and await handle.send_texts(texts):
            return
        for text in texts:
            # A connection that is gone is the reader's to notice, not an error here.
            with suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self._websocket.send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        with suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._websocket.close(code, reason)

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.abort()


def _node(websocket: WebSocket) -> Node:
    return cast(Node, websocket.app.state.node)


def _remote(websocket: WebSocket) -> str:
    """``host:port`` of the client; ``host`` alone when a proxy forwarded no port."""
    client = websocket.client
    if client is None:
        return "unknown"
    if not client.port:
        return client.host
    # An IPv6 address in brackets: "2001:db8::1:4711" would be another address.
    host = f"[{client.host}]" if ":" in client.host else client.host
    return f"{host}:{client.port}"


#: A token may be offered as an extra subprotocol ``bearer.<jwt>`` (browsers
#: cannot set headers); it is never selected, so never echoed back.
BEARER_PROTOCOL = "bearer."


def _handshake(websocket: WebSocket, endpoint: Endpoint, **fields: Any) -> Handshake:
    """What the domain needs of a handshake: protocols, user, origin, and the token
    from ``Authorization: Bearer``, ``?token=`` or a ``bearer.<jwt>`` subprotocol."""
    offered = tuple(websocket.scope.get("subprotocols", ()))
    token = bearer_token(websocket.headers.get("authorization", ""))
    for name in offered:
        if token is None and name.startswith(BEARER_PROTOCOL):
            token = name[len(BEARER_PROTOCOL) :]
    if token is None:
        token = websocket.query_params.get("token")
    client = websocket.client
    return Handshake(
        endpoint=endpoint,
        remote=_remote(websocket),
        host=client.host if client else "unknown",
        subprotocols=tuple(name for name in offered if not name.startswith(BEARER_PROTOCOL)),
        user=websocket.query_params.get("user"),
        origin=websocket.headers.get("origin"),
        token=token,
        http_version=str(websocket.scope.get("http_version", "1.1")),
        **fields,
    )


async def _serve(websocket: WebSocket, handshake: Handshake) -> None:
    # Over HTTP/2 one TCP connection carries several streams: its handle is not
    # this session's (the node refuses such handshakes anyway).
    handle = current_connection() if handshake.http_version in WEBSOCKET_HTTP_VERSIONS else None
    try:
        await _node(websocket).handle(handshake, AsgiTransport(websocket, handle))
    finally:
        if handle is not None:
            handle.release()


@router.get("/")
async def hello() -> dict[str, str]:
    """The tutorial's greeting."""
    return {"message": "Hello World"}


# WebSocket routes are plain Starlette routes on the APIRouter: FastAPI's
# dependency machinery would keep several exit stacks and wrappers alive for
# the whole life of every connection, for nothing these endpoints use. They
# handle their own errors and need only the scope's path parameters, so
# chat.app.ChatApp calls them without the middleware stack.


async def echo(websocket: WebSocket) -> None:
    """Answer each text frame ``X`` with ``Message text was: X``."""
    await _serve(websocket, _handshake(websocket, Endpoint.ECHO))


async def room(websocket: WebSocket) -> None:
    """A room: plain text without a subprotocol, ``chat.v1`` JSON with one."""
    room_id = str(websocket.path_params["room_id"])
    since_text = websocket.query_params.get("since")
    since: int | None = None
    if since_text is not None:
        valid = len(since_text) <= 19 and since_text.isascii() and since_text.isdigit()
        since = int(since_text) if valid else -1
    handshake = _handshake(
        websocket,
        Endpoint.ROOM,
        room=room_id,
        since=since,
        epoch=websocket.query_params.get("epoch"),
    )
    await _serve(websocket, handshake)


router.add_websocket_route("/ws", echo)
router.add_websocket_route("/ws/{room_id:path}", room)

#: The one-line hint of a plain HTTP request to a WebSocket route.
UPGRADE_HINT = "this is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)"


@router.get("/ws", include_in_schema=False)
@router.get("/ws/{room_id:path}", include_in_schema=False)
async def upgrade_required() -> JSONResponse:
    """426 Upgrade Required for a plain ``GET`` of a WebSocket route (a browser tab, curl)."""
    return JSONResponse(
        {"detail": UPGRADE_HINT},
        status_code=426,
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )
