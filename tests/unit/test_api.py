"""The server API through the real app, in process: auth, bad input, broker outages, OpenAPI.

What members observe of it (a publish received, a bye and its close code) is
tested against the real server in tests/e2e/test_api.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest

from chat.app import create_app
from chat.brokers import BrokerUnavailable, Draft, Publication
from chat.brokers.memory import InMemoryBroker
from chat.clock import MonotonicClock
from chat.envelope import DisconnectCommand, HistoryPage, Tally
from chat.status import ADMIN_ONLY
from tests.domain import make_settings

pytestmark = pytest.mark.anyio

SECRET = "an-hs256-secret-of-at-least-32-bytes!"
STATUS_TOKEN = "status-token-0123456789"

#: Every endpoint with a valid request: (method, path, JSON body).
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/rooms/lobby/messages", {"user": "system", "text": "hi"}),
    ("GET", "/api/rooms/lobby/history?since=0&limit=10", None),
    ("GET", "/api/rooms/lobby/presence", None),
    ("POST", "/api/sessions/0123abcd4567/disconnect", {"reason": "x", "reconnect": False}),
    ("POST", "/api/users/alice/disconnect", {"reason": "x", "reconnect": True}),
]
ENDPOINT_IDS = [f"{method} {path.split('?')[0]}" for method, path, _ in ENDPOINTS]


def mint(*, admin: bool) -> str:
    claims = {"sub": "ops", "exp": int(time.time()) + 600, "admin": admin}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@asynccontextmanager
async def api(
    broker: InMemoryBroker | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a running app (its node started, as under Hypercorn)."""
    app = create_app(make_settings(**settings), broker=broker)
    async with app.state.node:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://chat") as client:
            yield client


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    *,
    raw: bytes | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return await client.request(method, path, content=raw, headers=headers)
    return await client.request(method, path, json=body, headers=headers)


# -- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_every_endpoint_refuses_a_caller_without_an_admin_token(
    method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with api(jwt_secret=SECRET, status_token=STATUS_TOKEN) as client:
        for token in [None, "not-a-token"]:
            missing = await call(client, method, path, body, token)
            assert missing.status_code == 401
            assert missing.json() == {"detail": ADMIN_ONLY}
            assert missing.headers["www-authenticate"] == "Bearer"
        as_user = await call(client, method, path, body, mint(admin=False))
        assert (as_user.status_code, as_user.json()) == (403, {"detail": ADMIN_ONLY})
        for token in [mint(admin=True), STATUS_TOKEN]:
            assert (await call(client, method, path, body, token)).status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_bad_input_from_a_caller_without_access_gets_401_not_its_errors(
    method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with api(status_token=STATUS_TOKEN) as client:
        response = await call(client, method, path.replace("?since=0", "?since=-1"), raw=b"{")
        assert response.status_code == 401


async def test_the_api_is_open_like_status_when_no_credentials_are_configured() -> None:
    async with api() as client:
        for method, path, body in ENDPOINTS:
            assert (await call(client, method, path, body)).status_code == 200


# -- bad input -------------------------------------------------------------------------------

MESSAGES = "/api/rooms/lobby/messages"
BAD_INPUT: list[tuple[str, str, Any, str]] = [
    # (method, path, body, detail)
    ("POST", "/api/rooms/a%20b/messages", {"user": "s", "text": "x"}, "room must match"),
    ("POST", MESSAGES, {"user": "not ok", "text": "x"}, "user must match [A-Za-z0-9_.-]{1,64}"),
    ("POST", MESSAGES, {"user": "s"}, "text: Field required"),
    ("POST", MESSAGES, {"user": 7, "text": "x"}, "user: Input should be a valid string"),
    ("POST", MESSAGES, {"user": "s", "text": "x", "to": "b"}, "to: Extra inputs are not permitted"),
    ("POST", MESSAGES, {"user": "s", "text": "x" * 101}, "text is 101 bytes of UTF-8: at most 100"),
    ("POST", MESSAGES, {"user": "s", "text": "x", "id": "i" * 129}, "id: must be a string of at"),
    (
        "POST",
        MESSAGES,
        {"user": "s", "text": "x", "id": 2**53},
        "id: must be a string of at most 128 characters or an integer between",
    ),
    ("POST", MESSAGES, {"user": "s", "text": "x", "id": 1.5}, "id: must be a string"),
    ("POST", MESSAGES, {"user": "s", "text": "x", "id": True}, "id: must be a string"),
    ("POST", MESSAGES, [1, 2], "body: a JSON object is required"),
    ("POST", MESSAGES, None, "body: a JSON object is required"),
    ("GET", "/api/rooms/lobby/history?since=-1", None, "since: Input should be greater than"),
    ("GET", "/api/rooms/lobby/history?limit=0", None, "limit: Input should be greater than"),
    ("GET", "/api/rooms/lobby/history?limit=1001", None, "limit: Input should be less than"),
    ("GET", "/api/rooms/lobby/history?since=x", None, "since: Input should be a valid integer"),
    ("GET", f"/api/rooms/lobby/history?epoch={'e' * 65}", None, "epoch: String should have at"),
    ("GET", f"/api/rooms/{'r' * 65}/history", None, "room must match"),
    ("GET", "/api/rooms/a%2Ab/presence", None, "room must match"),
    ("POST", "/api/sessions/a%20b/disconnect", {}, "session id must match"),
    ("POST", "/api/users/a%20b/disconnect", {}, "user must match"),
    ("POST", "/api/users/alice/disconnect", {"reconnect": "yes"}, "reconnect: Input should be"),
    ("POST", "/api/users/alice/disconnect", {"reason": "r" * 257}, "reason: String should have"),
]


@pytest.mark.parametrize(("method", "path", "body", "detail"), BAD_INPUT)
async def test_bad_input_gets_400_with_a_detail_that_says_what(
    method: str, path: str, body: Any, detail: str
) -> None:
    async with api(max_message_bytes=100) as client:
        response = await call(client, method, path, body)
        assert response.status_code == 400, response.text
        assert detail in response.json()["detail"]


async def test_invalid_json_gets_400() -> None:
    async with api() as client:
        response = await call(client, "POST", MESSAGES, raw=b'{"user": ')
        assert (response.status_code, response.json()) == (400, {"detail": "body: not valid JSON"})


async def test_text_with_a_lone_surrogate_gets_400() -> None:
    async with api() as client:
        raw = b'{"user": "s", "text": "\\ud800"}'
        response = await call(client, "POST", MESSAGES, raw=raw)
        assert response.status_code == 400
        assert response.json()["detail"] == "text must be valid Unicode (no lone surrogates)"


# -- the broker -------------------------------------------------------------------------------


class DownBroker(InMemoryBroker):
    """A broker that refuses everything the API asks (``uncertain`` as configured)."""

    def __init__(self, *, uncertain: bool) -> None:
        super().__init__(MonotonicClock(), history_size=10, history_ttl=60, history_max_bytes=10**6)
        self.uncertain = uncertain

    def _refuse(self) -> BrokerUnavailable:
        return BrokerUnavailable("down", uncertain=self.uncertain)

    async def publish(self, draft: Draft) -> Publication:
        raise self._refuse()

    async def read(
        self, room: str, since: int, limit: int, epoch: str | None = None
    ) -> HistoryPage:
        raise self._refuse()

    async def presence_counts(self, room: str) -> dict[str, int]:
        raise self._refuse()

    async def disconnect(self, command: DisconnectCommand) -> Tally:
        raise self._refuse()


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_a_broker_that_cannot_answer_gets_503_with_retry_after(
    method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with api(DownBroker(uncertain=False)) as client:
        response = await call(client, method, path, body)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json() == {
            "detail": "the broker is unavailable, nothing was done: try again"
        }


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"user": "s", "text": "x", "id": "m-1"},
            "the broker did not answer in time: the message may still be published, once;"
            " retry with the same id to get its seq",
        ),
        (
            {"user": "s", "text": "x"},
            "the broker did not answer in time: the message may still be published;"
            " a retry without an id may publish it twice",
        ),
    ],
)
async def test_an_uncertain_publish_says_to_retry_with_the_same_id(
    body: dict[str, Any], detail: str
) -> None:
    async with api(DownBroker(uncertain=True)) as client:
        response = await call(client, "POST", MESSAGES, body)
        assert (response.status_code, response.json()) == (503, {"detail": detail})


async def test_an_uncertain_disconnect_says_sending_it_again_is_safe() -> None:
    async with api(DownBroker(uncertain=True)) as client:
        response = await call(client, "POST", "/api/users/alice/disconnect", {})
        assert response.status_code == 503
        assert "sending it again is safe" in response.json()["detail"]


# -- OpenAPI --------------------------------------------------------------------------------


async def test_the_openapi_schema_documents_the_api_alone_with_400_not_422() -> None:
    async with api() as client:
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200
    assert sorted(schema["paths"]) == sorted(
        {path.split("?")[0].replace("lobby", "{room}") for _, path, _ in ENDPOINTS}
        - {"/api/sessions/0123abcd4567/disconnect", "/api/users/alice/disconnect"}
        | {"/api/sessions/{session_id}/disconnect", "/api/users/{user}/disconnect"}
    )
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert {"200", "400", "401", "403", "503"} <= set(operation["responses"])
            assert "422" not in operation["responses"]
            assert operation["security"] == [{"HTTPBearer": []}]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_history_and_presence_read_what_the_api_published() -> None:
    async with api() as client:
        published = await call(client, "POST", MESSAGES, {"user": "s", "text": "one", "id": 1})
        again = await call(client, "POST", MESSAGES, {"user": "s", "text": "one", "id": 1})
        assert published.json()["duplicate"] is False
        assert again.json() == {**published.json(), "duplicate": True}
        history = (await call(client, "GET", "/api/rooms/lobby/history")).json()
        assert history["seq"] == 1
        assert history["complete"] is True
        assert [(m["seq"], m["user"], m["text"], m["id"]) for m in history["messages"]] == [
            (1, "s", "one", 1)
        ]
        empty = (await call(client, "GET", "/api/rooms/empty/history?since=0")).json()
        assert (empty["epoch"], empty["seq"], empty["messages"]) == (None, 0, [])


# -- bounded bodies ------------------------------------------------------------------------


async def test_a_caller_without_access_is_refused_before_its_body_is_read() -> None:
    read: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for n in range(1000):
            read.append(n)
            yield b"x" * 65536

    async with api(status_token=STATUS_TOKEN) as client:
        response = await client.post("/api/rooms/lobby/messages", content=endless())
    assert response.status_code == 401
    assert len(read) <= 1  # not 64 MB held for a caller that may not ask


async def test_a_body_larger_than_any_message_gets_413_as_it_arrives() -> None:
    read: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for n in range(1000):
            read.append(n)
            yield b"x" * 65536

    async with api(max_message_bytes=1024) as client:
        streamed = await client.post("/api/rooms/lobby/messages", content=endless())
        declared = await call(client, "POST", "/api/rooms/lobby/messages", raw=b"{" * 20000)
        text = "\u0001" * 1024  # the largest message, every character escaped: accepted
        fits = await call(client, "POST", "/api/rooms/lobby/messages", {"user": "u", "text": text})
    assert streamed.status_code == declared.status_code == 413
    assert streamed.json()["detail"] == "the request body must be at most 10240 bytes"
    assert len(read) <= 2
    assert fits.status_code == 200
