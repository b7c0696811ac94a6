"""chat/asyncapi.json: a well-formed AsyncAPI 3 document that says what the code does.

The end-to-end suite checks every frame the server really sends against it
(``tests/e2e/conftest.py``); these tests check the document itself, and that it
names every frame, field, code and reason of ``chat.protocol`` and ``chat.errors``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft7Validator

from chat import errors
from chat.app import create_app
from chat.errors import CloseCode, ErrorCode, FrameError, SessionClosed
from chat.protocol import (
    PING,
    PONG,
    Ack,
    Bye,
    ClientFrame,
    ErrorFrame,
    HeartbeatInfo,
    Joined,
    Left,
    LimitsInfo,
    MemberInfo,
    Message,
    Presence,
    ServerFrame,
    Subprotocol,
    Welcome,
    decode_client_frame,
    encode,
)
from chat.spec import asyncapi_document
from tests.asyncapi import (
    JSON_SUBPROTOCOLS,
    FrameInvalid,
    ServerFrames,
    inlined,
    load_document,
    message_key,
    operation_messages,
    pointer,
    server_frames,
)
from tests.domain import make_settings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = load_document()
MESSAGES: dict[str, Any] = DOCUMENT["components"]["messages"]
SERVER = sorted(set(operation_messages(DOCUMENT, "send")))
CLIENT = sorted(set(operation_messages(DOCUMENT, "receive")))


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` in ``node``, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def payload(key: str) -> dict[str, Any]:
    schema = MESSAGES[key]["payload"]
    assert isinstance(schema, dict)
    return schema


def type_of(key: str) -> str:
    kind = payload(key)["properties"]["type"]["const"]
    assert isinstance(kind, str)
    return kind


# -- the document -------------------------------------------------------------


def test_the_document_is_asyncapi_3_json() -> None:
    raw = (ROOT / "chat" / "asyncapi.json").read_bytes()
    assert orjson.loads(raw)["asyncapi"] == "3.0.0"
    assert DOCUMENT["info"]["title"] and DOCUMENT["info"]["version"]


def test_every_ref_names_something_in_the_document() -> None:
    found = list(refs(DOCUMENT))
    assert len(found) > 50
    for ref in found:
        assert ref.startswith("#/"), f"not a local ref: {ref}"
        pointer(DOCUMENT, ref)  # KeyError names the missing part


def test_operations_use_their_channels_messages() -> None:
    for name, operation in DOCUMENT["operations"].items():
        assert operation["action"] in {"send", "receive"}, name
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), name
        reply = operation.get("reply")
        if reply is not None:
            for message in reply["messages"]:
                assert message["$ref"].startswith(reply["channel"]["$ref"] + "/messages/"), name


def test_channel_messages_are_the_components_and_each_is_used() -> None:
    used: set[str] = set()
    for channel in DOCUMENT["channels"].values():
        for key, message in channel["messages"].items():
            assert message == {"$ref": f"#/components/messages/{key}"}
            used.add(key)
    sent_or_received = {
        message_key(message["$ref"])
        for operation in DOCUMENT["operations"].values()
        for message in operation["messages"] + operation.get("reply", {}).get("messages", [])
    }
    assert used == set(MESSAGES) == sent_or_received


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_payload_is_a_valid_json_schema(key: str) -> None:
    Draft7Validator.check_schema(payload(key))
    # Self-contained as the suite validates it: no $ref with siblings, which draft-07 ignores.
    Draft7Validator.check_schema(inlined(DOCUMENT, payload(key)))


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_example_matches_its_payload(key: str) -> None:
    examples = MESSAGES[key]["examples"]
    assert examples
    validator = Draft7Validator(inlined(DOCUMENT, payload(key)))
    for example in examples:
        assert validator.is_valid(example["payload"]), example


def test_server_frames_may_hold_no_unknown_field_and_client_frames_may() -> None:
    for key in SERVER:
        assert payload(key)["additionalProperties"] is False, key
    for key in CLIENT:
        assert payload(key)["additionalProperties"] is True, key


def test_the_json_subprotocols_are_the_servers() -> None:
    assert {Subprotocol.JSON.value, Subprotocol.BATCH.value} == JSON_SUBPROTOCOLS


def test_docs_asyncapi_json_links_to_the_packaged_document() -> None:
    docs = ROOT / "docs" / "asyncapi.json"
    assert docs.is_symlink()
    assert os.readlink(docs) == "../chat/asyncapi.json"
    assert docs.read_bytes() == (ROOT / "chat" / "asyncapi.json").read_bytes()


def test_the_wheel_ships_the_document() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "asyncapi.json" in config["tool"]["setuptools"]["package-data"]["chat"]


# -- the document against the code --------------------------------------------


def frame_fields(cls: type) -> tuple[set[str], set[str]]:
    """``(every field, the fields always sent)``: ``encode`` omits a field whose
    default is None when it is None (``error.id``)."""
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    optional = {f.name for f in fields if f.default is None}
    return names, names - optional


@pytest.mark.parametrize("cls", typing.get_args(ServerFrame), ids=lambda cls: cls.__name__)
def test_every_server_frame_has_a_message_with_its_fields(cls: type) -> None:
    kind = next(f.default for f in dataclasses.fields(cls) if f.name == "type")
    (key,) = [key for key in SERVER if type_of(key) == kind]
    schema = payload(key)
    names, required = frame_fields(cls)
    assert set(schema["required"]) == required
    # The document may already name a field the code adds later (bye.detail), never fewer.
    assert names <= set(schema["properties"])
    assert set(schema["properties"]) - names <= {"detail"}


def test_the_heartbeat_frames_are_server_messages() -> None:
    assert {type_of(key) for key in SERVER} >= {"ping", "pong"}
    server_frames().check_text(PING)
    server_frames().check_text(PONG)


@pytest.mark.parametrize("cls", typing.get_args(ClientFrame), ids=lambda cls: cls.__name__)
def test_every_client_frame_has_a_message_with_its_required_fields(cls: type) -> None:
    (key,) = [key for key in CLIENT if type_of(key) == cls.__name__.lower()]
    fields = dataclasses.fields(cls)
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    assert set(payload(key)["required"]) == required | {"type"}
    assert {f.name for f in fields} | {"type"} == set(payload(key)["properties"])
    for example in MESSAGES[key]["examples"]:
        assert isinstance(decode_client_frame(orjson.dumps(example["payload"])), cls)


def test_the_client_messages_are_the_client_frames() -> None:
    kinds = {cls.__name__.lower() for cls in typing.get_args(ClientFrame)}
    assert {type_of(key) for key in CLIENT} == kinds


def test_error_codes_are_the_servers() -> None:
    assert set(payload("error")["properties"]["code"]["enum"]) == {code.value for code in ErrorCode}


def closes() -> list[type[SessionClosed]]:
    found = [
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, SessionClosed)
        and value is not SessionClosed
    ]
    assert len(found) >= 10
    return found


def test_bye_reasons_are_the_servers() -> None:
    reasons = set(payload("bye")["properties"]["reason"]["enum"])
    sent = {cls.bye_reason for cls in closes() if cls.bye_reason is not None}
    assert sent <= reasons
    # "disconnected": an operator's disconnect through the server API (issue 12).
    assert reasons - sent <= {"disconnected"}


def test_every_close_code_says_whether_to_reconnect_as_the_server_does() -> None:
    table = {entry["code"]: entry for entry in DOCUMENT["channels"]["room"]["x-close-codes"]}
    assert set(table) == {code.value for code in CloseCode}
    # Without __init__: a cause may take arguments; reconnect depends on the code alone.
    # An operator's disconnect picks its code when made: both of them.
    causes = [cls.__new__(cls) for cls in closes() if cls is not errors.Disconnected]
    causes += [errors.Disconnected("bye"), errors.Disconnected("later", reconnect=True)]
    for cause in causes:
        name = f"{type(cause).__name__} {cause.code}"
        entry = table[cause.code.value]
        assert entry["reconnect"] is cause.reconnect, name
        if cause.bye_reason is None:
            assert entry["bye"] == [], name
        else:
            assert cause.bye_reason in entry["bye"], name
    for code, entry in table.items():
        if 4000 <= code <= 4499:
            assert entry["reconnect"] is True
        elif 4500 <= code <= 4999:
            assert entry["reconnect"] is False


# -- the validator the end-to-end suite uses -----------------------------------


def real_frames() -> list[str]:
    """One encoded frame of each server type, as the server encodes them."""
    return [
        encode(
            Welcome(
                session="1d2c9feb74cc",
                user="anon-1d2c9feb",
                node="host-1234",
                heartbeat=HeartbeatInfo(interval=25.0, timeout=10.0),
                limits=LimitsInfo(max_message_bytes=65536, rate=20.0, burst=40),
            )
        ),
        encode(
            Joined(
                room="lobby", seq=0, epoch="9f2c41d0", recovered=False, members=(MemberInfo("a"),)
            )
        ),
        encode(Message(room="lobby", seq=1, id=None, user="auth0|42", text="hi", ts=1.5)),
        encode(Ack(id=2**53 - 1, room="lobby", seq=1)),
        encode(Presence(room="lobby", event="leave", user="bob")),
        encode(Left(room="lobby")),
        encode(ErrorFrame(code=ErrorCode.NOT_JOINED, detail="not joined to x", id="m-1")),
        encode(ErrorFrame(code=ErrorCode.BAD_REQUEST, detail="invalid JSON")),
        encode(Bye(reason="shutdown", reconnect=True, retry_after_ms=2731)),
        PING,
        PONG,
    ]


def test_what_the_server_encodes_is_valid() -> None:
    checker = server_frames()
    kinds = [kind for raw in real_frames() for kind in checker.check_text(raw)]
    assert len(kinds) == len(real_frames())
    assert checker.check_text("\n".join(real_frames())) == kinds


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ('{"type":"teleport"}', "no known type"),
        ('{"room":"lobby"}', "no known type"),
        ("[1,2]", "no known type"),
        ("not json", "not JSON"),
        ("", "holds no object"),
        ('{"type":"left"}', "'room' is a required property"),
        ('{"type":"left","room":"lobby","extra":1}', "Additional properties"),
        ('{"type":"left","room":"no spaces"}', "does not match"),
        ('{"type":"ack","id":null,"room":"a","seq":0}', "less than the minimum"),
        ('{"type":"ack","id":1.5,"room":"a","seq":1}', "at id"),
        ('{"type":"error","code":"bad_request","detail":"x","id":null}', "at id"),
        ('{"type":"error","code":"oops","detail":"x"}', "at code"),
        ('{"type":"presence","room":"a","event":"wave","user":"u"}', "at event"),
        ('{"type":"bye","reason":"shutdown","reconnect":false,"retry_after_ms":0}', "reconnect"),
        ('{"type":"bye","reason":"policy","reconnect":false,"retry_after_ms":0,"detail":"x"}', ""),
        ('{"type":"ping","id":1}', "Additional properties"),
        (
            '{"type":"joined","room":"a","seq":1,"epoch":"e","recovered":true,'
            '"members":[{"user":"u"},{"user":"u"}]}',
            "non-unique",
        ),
        ('{"type":"left","room":"a"}\n{"type":"nope"}', "no known type"),
    ],
)
def test_a_frame_the_document_does_not_allow_is_refused_with_a_clear_message(
    raw: str, complaint: str
) -> None:
    with pytest.raises(FrameInvalid) as invalid:
        server_frames().check_text(raw)
    assert complaint in str(invalid.value)
    assert "server frame" in str(invalid.value)


def test_the_validators_cover_every_server_message() -> None:
    assert set(ServerFrames.of(DOCUMENT).validators) == {type_of(key) for key in SERVER}


# -- the client frames agree with the decoder -----------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "send", "room": "lobby", "text": "hi"},
        {"type": "send", "room": "lobby", "text": "", "id": "x" * 128, "extra": [1]},
        {"type": "send", "room": "lobby", "text": "hi", "id": -(2**53 - 1)},
        {"type": "send", "room": "lobby", "text": "hi", "id": "x" * 129},
        {"type": "send", "room": "lobby", "text": "hi", "id": 2**53},
        {"type": "send", "room": "lobby", "text": "hi", "id": True},
        {"type": "send", "room": "lobby"},
        {"type": "send", "room": "a b", "text": "hi"},
        {"type": "send", "room": "lobby", "text": 5},
        {"type": "join", "room": "games", "since": 0, "epoch": "e" * 64},
        {"type": "join", "room": "games", "since": None, "epoch": None},
        {"type": "join", "room": "games", "since": -1},
        {"type": "join", "room": "games", "since": 2**63 + 1},
        {"type": "join", "room": "games", "since": "4"},
        {"type": "join", "room": "games", "epoch": "e" * 65},
        {"type": "join", "room": "x" * 65},
        {"type": "leave", "room": "games", "id": None},
        {"type": "leave"},
        {"type": "ping", "id": 3},
        {"type": "pong", "whatever": {"a": 1}},
        {"type": "refresh", "token": "t"},
        {"type": "refresh", "token": None},
    ],
)
def test_a_client_frame_is_accepted_by_its_schema_exactly_when_the_server_decodes_it(
    frame: dict[str, Any],
) -> None:
    (key,) = [key for key in CLIENT if type_of(key) == frame["type"]]
    allowed = Draft7Validator(inlined(DOCUMENT, payload(key))).is_valid(frame)
    try:
        decode_client_frame(orjson.dumps(frame))
    except FrameError:
        decoded = False
    else:
        decoded = True
    assert allowed == decoded


# -- GET /asyncapi.json ---------------------------------------------------------


@pytest.mark.anyio
async def test_the_document_is_served_open_even_when_status_needs_a_token() -> None:
    app = create_app(make_settings(status_token="s3cret-status-token", jwt_secret="k" * 32))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        served = await client.get("/asyncapi.json")
        guarded = await client.get("/status")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.content == (ROOT / "chat" / "asyncapi.json").read_bytes()
    assert guarded.status_code == 401


def test_the_document_is_read_once() -> None:
    assert asyncapi_document() is asyncapi_document()


def test_the_document_is_not_in_the_openapi_schema() -> None:
    paths = create_app(make_settings()).openapi()["paths"]
    assert "/api/rooms/{room}/messages" in paths
    assert "/asyncapi.json" not in paths
