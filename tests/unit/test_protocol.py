"""The ``chat.v1`` wire protocol (docs/protocol.md): strict decoding, compact encoding."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chat.errors import ErrorCode, FrameError
from chat.protocol import (
    MAX_DEPTH,
    PING,
    PONG,
    Ack,
    Bye,
    ClientFrame,
    ErrorFrame,
    HeartbeatInfo,
    Join,
    Joined,
    Leave,
    Left,
    LimitsInfo,
    MemberInfo,
    Message,
    Ping,
    Pong,
    Presence,
    Refresh,
    Send,
    ServerFrame,
    Welcome,
    decode_client_frame,
    encode,
    error_frame,
    split_batch,
)

BAD = ErrorCode.BAD_REQUEST
UNKNOWN = ErrorCode.UNKNOWN_TYPE


def nested_lists(levels: int) -> str:
    """A ``ping`` frame whose containers, the frame itself included, nest ``levels`` deep."""
    inner = levels - 1
    return '{"type":"ping","x":' + "[" * inner + "]" * inner + "}"


def nested_objects(levels: int) -> str:
    inner = levels - 1
    return '{"type":"ping","x":' + '{"x":' * (inner - 1) + "{}" + "}" * (inner - 1) + "}"


# -- valid client frames -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type":"send","room":"lobby","text":"hi"}', Send(room="lobby", text="hi")),
        ('{"type":"send","room":"lobby","text":""}', Send(room="lobby", text="")),
        (
            '{"type":"send","room":"lobby","text":"hi","id":"c1"}',
            Send(room="lobby", text="hi", id="c1"),
        ),
        ('{"type":"send","room":"lobby","text":"hi","id":7}', Send(room="lobby", text="hi", id=7)),
        ('{"type":"send","room":"a.B_c-9","text":"é ✓"}', Send(room="a.B_c-9", text="é ✓")),
        ('{"type":"join","room":"lobby"}', Join(room="lobby")),
        ('{"type":"join","room":"lobby","since":null}', Join(room="lobby")),
        ('{"type":"join","room":"lobby","since":0}', Join(room="lobby", since=0)),
        (
            '{"type":"join","room":"lobby","since":42,"id":"j"}',
            Join(room="lobby", since=42, id="j"),
        ),
        ('{"type":"leave","room":"lobby"}', Leave(room="lobby")),
        ('{"type":"leave","room":"lobby","id":3}', Leave(room="lobby", id=3)),
        ('{"type":"ping"}', Ping()),
        ('{"type":"ping","id":"p"}', Ping(id="p")),
        ('{"type":"pong"}', Pong()),
        ('{"type":"refresh","token":"a.b.c"}', Refresh(token="a.b.c")),
        ('{"type":"refresh","token":"a.b.c","id":"r"}', Refresh(token="a.b.c", id="r")),
        (b'{"type":"ping"}', Ping()),
    ],
)
def test_decode_valid_frame(raw: str | bytes, expected: ClientFrame) -> None:
    assert decode_client_frame(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '{"type":"send","room":"lobby","text":"hi","user":"mallory","extra":[1,{"a":2}]}',
            Send(room="lobby", text="hi"),
        ),
        ('{"type":"ping","room":5,"text":null,"since":-1}', Ping()),
        ('{"type":"leave","room":"lobby","since":"x"}', Leave(room="lobby")),
    ],
)
def test_decode_ignores_unknown_fields(raw: str, expected: ClientFrame) -> None:
    assert decode_client_frame(raw) == expected


@pytest.mark.parametrize(
    ("raw", "frame_id"),
    [
        ('{"type":"ping","id":"' + "x" * 128 + '"}', "x" * 128),
        ('{"type":"ping","id":9007199254740991}', 2**53 - 1),
        ('{"type":"ping","id":-9007199254740991}', -(2**53 - 1)),
        ('{"type":"ping","id":0}', 0),
        ('{"type":"ping","id":""}', ""),
    ],
)
def test_decode_accepts_ids_at_their_limits(raw: str, frame_id: str | int) -> None:
    assert decode_client_frame(raw) == Ping(id=frame_id)


def test_decode_accepts_a_room_id_of_64_characters() -> None:
    room = "r" * 64
    assert decode_client_frame(f'{{"type":"leave","room":"{room}"}}') == Leave(room=room)


@pytest.mark.parametrize("raw", [nested_lists(MAX_DEPTH), nested_objects(MAX_DEPTH)])
def test_decode_accepts_nesting_of_exactly_max_depth(raw: str) -> None:
    assert MAX_DEPTH == 32
    assert decode_client_frame(raw) == Ping()


# -- invalid client frames ------------------------------------------------------------

INVALID: list[tuple[str, str | bytes, ErrorCode, str | int | None]] = [
    # (id, raw, code, frame_id)
    ("not-json", "hello", BAD, None),
    ("empty", "", BAD, None),
    ("truncated", '{"type":"ping"', BAD, None),
    ("trailing-garbage", '{"type":"ping"} x', BAD, None),
    ("invalid-utf8", b'{"type":"send","room":"a","text":"\xff"}', BAD, None),
    ("nan-top-level", "NaN", BAD, None),
    ("nan-field", '{"type":"ping","x":NaN,"id":"n"}', BAD, None),
    ("infinity-field", '{"type":"ping","x":Infinity}', BAD, None),
    ("minus-infinity-field", '{"type":"ping","x":-Infinity}', BAD, None),
    ("infinity-top-level", "Infinity", BAD, None),
    ("minus-infinity-top-level", "-Infinity", BAD, None),
    ("overflowing-float-field", '{"type":"ping","x":1e999}', BAD, None),
    ("overflowing-negative-float-field", '{"type":"ping","x":-1e999}', BAD, None),
    ("overflowing-float-top-level", "1e999", BAD, None),
    ("lone-high-surrogate", '{"type":"send","room":"a","text":"\\ud800"}', BAD, None),
    ("lone-low-surrogate", '{"type":"send","room":"a","text":"\\udc00"}', BAD, None),
    ("lone-surrogate-in-key", '{"type":"ping","\\ud800":1}', BAD, None),
    ("lists-too-deep", nested_lists(MAX_DEPTH + 1), BAD, None),
    ("objects-too-deep", nested_objects(MAX_DEPTH + 1), BAD, None),
    # Far deeper than any recursion limit: still a FrameError, never a RecursionError.
    ("unterminated-deep-lists", "[" * 100_000, BAD, None),
    ("balanced-deep-lists", "[" * 100_000 + "]" * 100_000, BAD, None),
    ("unterminated-deep-objects", '{"a":' * 100_000, BAD, None),
    ("array", "[]", BAD, None),
    ("array-of-frame", '[{"type":"ping"}]', BAD, None),
    ("string", '"ping"', BAD, None),
    ("number", "42", BAD, None),
    ("null", "null", BAD, None),
    ("bool", "true", BAD, None),
    ("missing-type", "{}", BAD, None),
    ("missing-type-with-id", '{"id":"a1"}', BAD, "a1"),
    ("null-type", '{"type":null,"id":"a1"}', BAD, "a1"),
    ("number-type", '{"type":1,"id":2}', BAD, 2),
    ("list-type", '{"type":["send"],"id":"a1"}', BAD, "a1"),
    ("unknown-type", '{"type":"shout"}', UNKNOWN, None),
    ("unknown-type-with-id", '{"type":"shout","id":"a1"}', UNKNOWN, "a1"),
    ("server-only-type", '{"type":"message","id":"a1"}', UNKNOWN, "a1"),
    ("type-is-case-sensitive", '{"type":"SEND","id":"a1"}', UNKNOWN, "a1"),
    ("send-without-room", '{"type":"send","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-number", '{"type":"send","room":5,"text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-null", '{"type":"send","room":null,"text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-list", '{"type":"send","room":["a"],"text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-empty", '{"type":"send","room":"","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-space", '{"type":"send","room":"a b","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-slash", '{"type":"send","room":"../etc","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-colon", '{"type":"send","room":"a:b","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-star", '{"type":"send","room":"a*","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-newline", '{"type":"send","room":"a\\n","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-non-ascii", '{"type":"send","room":"é","text":"x","id":"a1"}', BAD, "a1"),
    ("send-room-65", '{"type":"send","room":"' + "r" * 65 + '","text":"x","id":"a1"}', BAD, "a1"),
    ("send-without-text", '{"type":"send","room":"a","id":"a1"}', BAD, "a1"),
    ("send-text-number", '{"type":"send","room":"a","text":5,"id":"a1"}', BAD, "a1"),
    ("send-text-null", '{"type":"send","room":"a","text":null,"id":"a1"}', BAD, "a1"),
    ("send-text-list", '{"type":"send","room":"a","text":["x"],"id":"a1"}', BAD, "a1"),
    ("send-text-object", '{"type":"send","room":"a","text":{},"id":"a1"}', BAD, "a1"),
    ("join-without-room", '{"type":"join","id":"a1"}', BAD, "a1"),
    ("join-room-number", '{"type":"join","room":1,"id":"a1"}', BAD, "a1"),
    ("join-bad-room", '{"type":"join","room":"a/b","id":"a1"}', BAD, "a1"),
    ("join-since-negative", '{"type":"join","room":"a","since":-1,"id":"a1"}', BAD, "a1"),
    ("join-since-true", '{"type":"join","room":"a","since":true,"id":"a1"}', BAD, "a1"),
    ("join-since-false", '{"type":"join","room":"a","since":false,"id":"a1"}', BAD, "a1"),
    ("join-since-string", '{"type":"join","room":"a","since":"5","id":"a1"}', BAD, "a1"),
    ("join-since-float", '{"type":"join","room":"a","since":1.5,"id":"a1"}', BAD, "a1"),
    ("join-since-whole-float", '{"type":"join","room":"a","since":1.0,"id":"a1"}', BAD, "a1"),
    ("join-since-list", '{"type":"join","room":"a","since":[1],"id":"a1"}', BAD, "a1"),
    ("leave-without-room", '{"type":"leave","id":"a1"}', BAD, "a1"),
    ("leave-bad-room", '{"type":"leave","room":"","id":"a1"}', BAD, "a1"),
    ("refresh-without-token", '{"type":"refresh","id":"a1"}', BAD, "a1"),
    ("refresh-token-number", '{"type":"refresh","token":1,"id":"a1"}', BAD, "a1"),
    ("id-true", '{"type":"ping","id":true}', BAD, None),
    ("id-false", '{"type":"ping","id":false}', BAD, None),
    ("id-float", '{"type":"ping","id":1.5}', BAD, None),
    ("id-whole-float", '{"type":"ping","id":1.0}', BAD, None),
    ("id-too-long", '{"type":"ping","id":"' + "x" * 129 + '"}', BAD, None),
    ("id-beyond-safe-integer", '{"type":"ping","id":9007199254740992}', BAD, None),
    ("id-below-safe-integer", '{"type":"ping","id":-9007199254740992}', BAD, None),
    ("id-list", '{"type":"ping","id":["a"]}', BAD, None),
    ("id-object", '{"type":"ping","id":{}}', BAD, None),
    ("bad-id-on-bad-send", '{"type":"send","room":5,"text":"x","id":true}', BAD, None),
    ("bad-id-on-unknown-type", '{"type":"shout","id":1.5}', BAD, None),
]


@pytest.mark.parametrize(
    ("raw", "code", "frame_id"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID],
)
def test_decode_refuses_invalid_frame(
    raw: str | bytes, code: ErrorCode, frame_id: str | int | None
) -> None:
    with pytest.raises(FrameError) as excinfo:
        decode_client_frame(raw)
    assert excinfo.value.code is code
    assert excinfo.value.frame_id == frame_id
    assert excinfo.value.detail


def test_decode_names_an_unknown_type() -> None:
    with pytest.raises(FrameError) as excinfo:
        decode_client_frame('{"type":"shout"}')
    assert "shout" in excinfo.value.detail


def test_decode_truncates_a_long_unknown_type_in_the_detail() -> None:
    kind = "k" * 32 + "z" * 10_000
    with pytest.raises(FrameError) as excinfo:
        decode_client_frame(orjson.dumps({"type": kind}))
    assert excinfo.value.code is UNKNOWN
    assert "k" * 32 in excinfo.value.detail
    assert "z" not in excinfo.value.detail
    assert len(excinfo.value.detail) < 100


# -- server frames ---------------------------------------------------------------------

ENCODED: list[tuple[str, ServerFrame, dict[str, Any]]] = [
    (
        "welcome",
        Welcome(
            session="s1",
            user="alice",
            node="n1",
            heartbeat=HeartbeatInfo(interval=25.0, timeout=10.0),
            limits=LimitsInfo(max_message_bytes=65536, rate=20.0, burst=40),
        ),
        {
            "type": "welcome",
            "session": "s1",
            "user": "alice",
            "node": "n1",
            "heartbeat": {"interval": 25.0, "timeout": 10.0},
            "limits": {"max_message_bytes": 65536, "rate": 20.0, "burst": 40},
        },
    ),
    (
        "joined",
        Joined(
            room="lobby",
            seq=7,
            epoch="e1",
            recovered=True,
            members=(MemberInfo(user="alice"), MemberInfo(user="bob")),
        ),
        {
            "type": "joined",
            "room": "lobby",
            "seq": 7,
            "epoch": "e1",
            "recovered": True,
            "members": [{"user": "alice"}, {"user": "bob"}],
        },
    ),
    (
        "joined-alone",
        Joined(room="lobby", seq=0, epoch="e1", recovered=False),
        {
            "type": "joined",
            "room": "lobby",
            "seq": 0,
            "epoch": "e1",
            "recovered": False,
            "members": [],
        },
    ),
    (
        "message",
        Message(room="lobby", seq=8, id="c1", user="alice", text="hi", ts=1700000000.25),
        {
            "type": "message",
            "room": "lobby",
            "seq": 8,
            "id": "c1",
            "user": "alice",
            "text": "hi",
            "ts": 1700000000.25,
        },
    ),
    (
        "message-int-id",
        Message(room="lobby", seq=9, id=5, user="bob", text="yo", ts=1.5),
        {
            "type": "message",
            "room": "lobby",
            "seq": 9,
            "id": 5,
            "user": "bob",
            "text": "yo",
            "ts": 1.5,
        },
    ),
    (
        "ack",
        Ack(id="c1", room="lobby", seq=8),
        {"type": "ack", "id": "c1", "room": "lobby", "seq": 8},
    ),
    (
        "presence-join",
        Presence(room="lobby", event="join", user="bob"),
        {"type": "presence", "room": "lobby", "event": "join", "user": "bob"},
    ),
    (
        "presence-leave",
        Presence(room="lobby", event="leave", user="bob"),
        {"type": "presence", "room": "lobby", "event": "leave", "user": "bob"},
    ),
    ("left", Left(room="lobby"), {"type": "left", "room": "lobby"}),
    (
        "error-with-id",
        ErrorFrame(code=ErrorCode.NOT_JOINED, detail="join the room first", id="c1"),
        {"type": "error", "code": "not_joined", "detail": "join the room first", "id": "c1"},
    ),
    (
        "error-with-int-id",
        ErrorFrame(code=ErrorCode.RATE_LIMITED, detail="slow down", id=4),
        {"type": "error", "code": "rate_limited", "detail": "slow down", "id": 4},
    ),
    (
        "error-without-id",
        ErrorFrame(code=ErrorCode.BAD_REQUEST, detail="invalid JSON"),
        {"type": "error", "code": "bad_request", "detail": "invalid JSON"},
    ),
    (
        "bye",
        Bye(reason="shutdown", reconnect=True, retry_after_ms=1500),
        {"type": "bye", "reason": "shutdown", "reconnect": True, "retry_after_ms": 1500},
    ),
    (
        "bye-default-retry",
        Bye(reason="idle_timeout", reconnect=False),
        {"type": "bye", "reason": "idle_timeout", "reconnect": False, "retry_after_ms": 0},
    ),
    (
        "bye-with-detail",
        Bye(reason="disconnected", detail="spam", reconnect=False),
        {
            "type": "bye",
            "reason": "disconnected",
            "detail": "spam",
            "reconnect": False,
            "retry_after_ms": 0,
        },
    ),
    (
        "bye-with-empty-detail",
        Bye(reason="disconnected", detail="", reconnect=True, retry_after_ms=1200),
        {"type": "bye", "reason": "disconnected", "reconnect": True, "retry_after_ms": 1200},
    ),
]


@pytest.mark.parametrize(
    ("frame", "expected"), [pytest.param(*case[1:], id=case[0]) for case in ENCODED]
)
def test_encode_gives_the_documented_json(frame: ServerFrame, expected: dict[str, Any]) -> None:
    assert orjson.loads(encode(frame)) == expected


def test_encode_of_an_error_without_id_omits_the_id_key() -> None:
    encoded = orjson.loads(encode(ErrorFrame(code=ErrorCode.UNAVAILABLE, detail="broker down")))
    assert "id" not in encoded


def test_encode_is_compact() -> None:
    assert encode(Left(room="lobby")) == '{"type":"left","room":"lobby"}'


def test_encode_keeps_a_frame_on_one_line() -> None:
    frame = Message(room="lobby", seq=1, id=None, user="alice", text="one\ntwo\r\n", ts=1.0)
    encoded = encode(frame)
    assert "\n" not in encoded
    assert orjson.loads(encoded)["text"] == "one\ntwo\r\n"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            FrameError(ErrorCode.UNKNOWN_TYPE, "unknown type 'x'", "c1"),
            {"type": "error", "code": "unknown_type", "detail": "unknown type 'x'", "id": "c1"},
        ),
        (
            FrameError(ErrorCode.BAD_REQUEST, "invalid JSON"),
            {"type": "error", "code": "bad_request", "detail": "invalid JSON"},
        ),
    ],
)
def test_error_frame_encodes_a_frame_error(error: FrameError, expected: dict[str, Any]) -> None:
    assert orjson.loads(error_frame(error)) == expected


def test_error_frame_of_a_decoded_frame_echoes_its_id() -> None:
    with pytest.raises(FrameError) as excinfo:
        decode_client_frame('{"type":"send","room":"a b","text":"x","id":"c9"}')
    assert orjson.loads(error_frame(excinfo.value))["id"] == "c9"


# -- batches and constants ---------------------------------------------------------------


def test_split_batch_splits_newline_joined_frames() -> None:
    frames: list[ServerFrame] = [
        Left(room="a"),
        Ack(id="c1", room="b", seq=2),
        Bye(reason="shutdown", reconnect=True),
    ]
    raw = "\n".join(encode(frame) for frame in frames)
    assert split_batch(raw) == [orjson.loads(encode(frame)) for frame in frames]


def test_split_batch_of_a_single_frame_gives_one_object() -> None:
    assert split_batch(PING) == [{"type": "ping"}]


def test_split_batch_ignores_a_trailing_newline() -> None:
    assert split_batch(PING + "\n" + PONG + "\n") == [{"type": "ping"}, {"type": "pong"}]


@pytest.mark.parametrize(("constant", "kind"), [(PING, "ping"), (PONG, "pong")])
def test_heartbeat_constants_are_bare_typed_frames(constant: str, kind: str) -> None:
    assert orjson.loads(constant) == {"type": kind}


def test_a_client_can_decode_the_server_ping_constant() -> None:
    assert decode_client_frame(PING) == Ping()
    assert decode_client_frame(PONG) == Pong()
