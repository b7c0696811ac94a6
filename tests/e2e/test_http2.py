"""WebSockets over HTTP/2 are refused before accept, over cleartext HTTP/2 of both kinds.

Hypercorn speaks cleartext HTTP/2 (a prior-knowledge preface, or ``Upgrade: h2c``)
whatever ``alpn_protocols`` says, and would carry RFC 8441 WebSockets on it,
where a member that stops reading can be neither pushed back on nor cut alone.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import orjson
import pytest

from tests.e2e.conftest import StartServer
from tests.e2e.harness import Server


@pytest.fixture(scope="module", params=[[], ["-c", "config/hypercorn.toml"]], ids=["bare", "toml"])
def server(request: pytest.FixtureRequest, start_shared: StartServer) -> Server:
    return start_shared(args=request.param)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    reset: bool = False


@dataclass
class H2Client:
    """A minimal cleartext HTTP/2 client over a blocking socket."""

    sock: socket.socket
    conn: h2.connection.H2Connection
    answers: dict[int, Answer] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)

    def request(self, headers: list[tuple[str, str]], stream_id: int | None = None) -> Answer:
        """Send ``headers`` on a new stream (or ``stream_id``); the whole answer."""
        if stream_id is None:
            stream_id = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream_id, headers, end_stream=headers[0][1] != "CONNECT")
            self.sock.sendall(self.conn.data_to_send())
        while stream_id not in self.ended:
            self.pump()
        return self.answers[stream_id]

    def pump(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                # header_encoding="utf-8": names and values arrive as str.
                headers = {str(name): str(value) for name, value in event.headers or []}
                self.answers[event.stream_id] = Answer(int(headers[":status"]), headers)
            elif isinstance(event, h2.events.DataReceived):
                self.answers[event.stream_id].body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.answers.setdefault(event.stream_id, Answer(0, {})).reset = True
                self.ended.add(event.stream_id)
        self.sock.sendall(self.conn.data_to_send())


@contextmanager
def h2_client(server: Server, *, upgrade: bool) -> Iterator[tuple[H2Client, Answer | None]]:
    """An HTTP/2 connection by prior knowledge, or upgraded from ``GET /`` (its answer too)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    client = H2Client(sock, conn)
    first: Answer | None = None
    try:
        if upgrade:
            settings = (conn.initiate_upgrade_connection() or b"").decode()
            sock.sendall(
                (
                    "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                    f"HTTP2-Settings: {settings}\r\n\r\n"
                ).encode()
            )
            response = b""
            while b"\r\n\r\n" not in response:
                response += sock.recv(1)
            assert response.startswith(b"HTTP/1.1 101"), response
            sock.sendall(conn.data_to_send())
            first = client.request([], stream_id=1)
        else:
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
        yield client, first
    finally:
        sock.close()


def websocket_request(path: str) -> list[tuple[str, str]]:
    return [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "chat.v1"),
    ]


def refusals(server: Server) -> tuple[int, int]:
    """HTTP/2 refusals counted in totals, and closed sessions recorded with that reason."""
    totals = server.json("/status")["totals"]["rejected"].get("http_version", 0)
    closed = server.json("/status/sessions?state=closed&limit=10000")["sessions"]
    return int(totals), sum(1 for s in closed if s["close_reason"] == "http_version")


@pytest.mark.parametrize("upgrade", [False, True], ids=["prior-knowledge", "h2c-upgrade"])
def test_a_websocket_over_http2_is_refused_with_505_and_recorded(
    server: Server, upgrade: bool
) -> None:
    counted, recorded = refusals(server)
    with h2_client(server, upgrade=upgrade) as (client, first):
        if first is not None:
            assert (first.status, orjson.loads(first.body)) == (200, {"status": "ok"})
        # The server does not invite RFC 8441 WebSockets (browsers then use HTTP/1.1).
        assert client.conn.remote_settings.enable_connect_protocol == 0
        answer = client.request(websocket_request("/ws/h2room"))
        assert answer.status == 505
        assert "HTTP/1.1" in orjson.loads(answer.body)["detail"]
        # The connection goes on serving plain HTTP/2 requests.
        health = client.request(
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/healthz"),
                (":authority", "127.0.0.1"),
            ]
        )
        assert health.status == 200
    assert refusals(server) == (counted + 1, recorded + 1)
    assert server.json("/status")["rooms"] == {}
