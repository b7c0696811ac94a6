"""The app factory's dispatch: chat's WebSocket routes skip the middleware stack unless
the app has middleware of its own."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat.app import create_app
from tests.domain import make_settings

pytestmark = pytest.mark.anyio


class Recorder:
    """A user's pure ASGI middleware: records the scope types it sees."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope["type"])
        await self.app(scope, receive, send)


async def websocket(
    app: FastAPI,
    path: str,
    texts: list[str],
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 5000),
) -> list[Message]:
    """One WebSocket session over raw ASGI: connect, send ``texts``, hang up."""
    inbox: list[Message] = [{"type": "websocket.connect"}]
    inbox += [{"type": "websocket.receive", "text": text} for text in texts]
    sent: list[Message] = []
    arrived = anyio.Event()

    async def receive() -> Message:
        if inbox:
            return inbox.pop(0)
        with anyio.fail_after(5):
            while len([m for m in sent if m["type"] == "websocket.send"]) < len(texts):
                await arrived.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        nonlocal arrived
        sent.append(message)
        arrived.set()
        arrived = anyio.Event()

    path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers or [],
        "client": client,
        "server": ("127.0.0.1", 8000),
        "subprotocols": [],
        "scheme": "ws",
    }
    async with app.state.node:
        with anyio.fail_after(5):
            await app(scope, receive, send)
    return sent


def texts_sent(messages: list[Message]) -> list[str]:
    return [m["text"] for m in messages if m["type"] == "websocket.send"]


async def test_chat_websockets_go_straight_to_their_endpoint_without_middleware() -> None:
    app = create_app(make_settings())
    sent = await websocket(app, "/ws", ["hi"])
    assert sent[0]["type"] == "websocket.accept"
    assert texts_sent(sent) == ["Message text was: hi"]
    # The stack is built on the first call that goes through it: none did.
    assert app.middleware_stack is None


async def test_a_room_through_the_direct_path_gets_its_path_parameter() -> None:
    app = create_app(make_settings())
    assert texts_sent(await websocket(app, "/ws/lobby?user=ann", ["hello room"])) == ["hello room"]
    assert app.state.node.registry.totals.messages_in == 1
    assert app.middleware_stack is None


async def test_an_app_with_middleware_sends_websockets_through_it() -> None:
    seen: list[str] = []
    app = create_app(make_settings())
    app.add_middleware(Recorder, seen=seen)
    assert texts_sent(await websocket(app, "/ws/lobby", ["through the stack"])) == [
        "through the stack"
    ]
    assert seen == ["websocket"]


async def test_a_websocket_path_chat_does_not_serve_goes_to_the_router() -> None:
    app = create_app(make_settings())
    sent = await websocket(app, "/nowhere", [])
    assert sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]
    assert app.middleware_stack is not None


async def test_with_fastapis_own_telemetry_on_websockets_take_the_usual_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traced: list[str] = []

    class Tracing:
        """FastAPI's NativeTelemetry as configured with a tracer provider."""

        def enabled(self) -> bool:
            return True

        async def __call__(self, *, app: ASGIApp, scope: Scope, **kwargs: Any) -> None:
            traced.append(scope["path"])
            await app(scope, kwargs["receive"], kwargs["send"])

    app = create_app(make_settings())
    # Not skipped when missing: ChatApp._traced reads this private name of FastAPI.
    assert hasattr(app, "_native_telemetry"), (
        "FastAPI no longer has _native_telemetry: ChatApp._traced must follow FastAPI's rename"
    )
    assert app._traced() is False  # no tracer provider configured: telemetry off
    monkeypatch.setattr(app, "_native_telemetry", Tracing())
    assert app._traced() is True
    assert texts_sent(await websocket(app, "/ws", ["traced"])) == ["Message text was: traced"]
    assert traced == ["/ws"]


def remotes(app: FastAPI) -> list[tuple[str, str]]:
    """``(remote, host)`` of every session the node has seen."""
    return [(session.remote, session.host) for session, _ in app.state.node.registry.sessions()]


FORGED = [(b"x-forwarded-for", b"203.0.113.7")]


@pytest.mark.parametrize(
    ("trusted", "peer", "headers", "seen"),
    [
        # Nobody trusted (the default): the header is not believed.
        (None, ("127.0.0.1", 5000), FORGED, ("127.0.0.1:5000", "127.0.0.1")),
        # A trusted peer: the forwarded address, without a port.
        ("127.0.0.1", ("127.0.0.1", 5000), FORGED, ("203.0.113.7", "203.0.113.7")),
        ("10.0.0.0/8", ("10.1.2.3", 5000), FORGED, ("203.0.113.7", "203.0.113.7")),
        # An untrusted peer with a forged header: the peer.
        ("10.0.0.0/8", ("192.0.2.1", 5000), FORGED, ("192.0.2.1:5000", "192.0.2.1")),
        # A trusted peer forwarding garbage: the peer.
        (
            "127.0.0.1",
            ("127.0.0.1", 5000),
            [(b"x-forwarded-for", b"junk")],
            ("127.0.0.1:5000", "127.0.0.1"),
        ),
        (
            "127.0.0.1",
            ("127.0.0.1", 5000),
            [(b"forwarded", b'for="[2001:db8::1]:4711"')],
            ("[2001:db8::1]:4711", "2001:db8::1"),
        ),
    ],
)
async def test_the_session_address_is_the_forwarded_one_only_from_a_trusted_peer(
    trusted: str | None,
    peer: tuple[str, int],
    headers: list[tuple[bytes, bytes]],
    seen: tuple[str, str],
) -> None:
    app = create_app(make_settings(trusted_proxies=trusted))
    await websocket(app, "/ws/lobby", ["hi"], headers=headers, client=peer)
    assert remotes(app) == [seen]
    assert app.middleware_stack is None
