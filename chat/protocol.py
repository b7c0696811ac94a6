"""The ``chat.v1`` wire protocol: client frames in, server frames out. Pure: no I/O.

Every frame is one JSON object with a ``type`` (``docs/protocol.md``). Under
``chat.v1.batch`` one server WebSocket frame may carry several objects joined
by ``\\n``; client frames are always one object.

Decoding is strict so that nothing a client sends can break another member:
invalid JSON, ``NaN``/``Infinity``, lone surrogates, nesting deeper than
:data:`MAX_DEPTH`, a non-object, a missing or unknown ``type`` and wrong field
types all raise :class:`~chat.errors.FrameError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson

from chat.errors import ErrorCode, FrameError
from chat.settings import NAME_PATTERN


class Subprotocol(StrEnum):
    """What a session speaks; the value is the WebSocket subprotocol name."""

    #: Plain text frames, no subprotocol offered (the tutorial's behaviour).
    TEXT = "text"
    #: One JSON object per frame.
    JSON = "chat.v1"
    #: Several newline-separated JSON objects per server frame.
    BATCH = "chat.v1.batch"


#: Client frames nested deeper than this are refused.
MAX_DEPTH = 32
#: Longest client ``id`` string echoed back.
MAX_ID_LENGTH = 128
#: Longest ``epoch`` a client may send back.
MAX_EPOCH_LENGTH = 64
#: Client ``id`` integers must be exact in JavaScript.
MAX_SAFE_INTEGER = 2**53 - 1

FrameId = str | int | None


# -- client to server ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Publish ``text`` to ``room``, a room this session has joined."""

    room: str
    text: str
    id: FrameId = None


@dataclass(frozen=True, slots=True)
class Join:
    """Join ``room``; with ``since`` (and the ``epoch`` it was seen in), replay the
    messages with a greater ``seq`` first."""

    room: str
    since: int | None = None
    epoch: str | None = None
    id: FrameId = None


@dataclass(frozen=True, slots=True)
class Leave:
    """Leave ``room``."""

    room: str
    id: FrameId = None


@dataclass(frozen=True, slots=True)
class Ping:
    """The client checks the server is alive; answered with ``pong``."""

    id: FrameId = None


@dataclass(frozen=True, slots=True)
class Pong:
    """The client's answer to a server ``ping``."""

    id: FrameId = None


@dataclass(frozen=True, slots=True)
class Refresh:
    """Replace the session's JWT before it expires."""

    token: str
    id: FrameId = None


ClientFrame = Send | Join | Leave | Ping | Pong | Refresh


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend(
                (child, depth + 1) for child in item.values() if isinstance(child, dict | list)
            )
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return False


def _frame_id(data: dict[str, Any]) -> FrameId:
    value = data.get("id")
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER:
        return value
    raise FrameError(
        ErrorCode.BAD_REQUEST,
        f"id must be a string of at most {MAX_ID_LENGTH} characters or a safe integer",
    )


def _room(data: dict[str, Any], frame_id: FrameId) -> str:
    room = data.get("room")
    if not isinstance(room, str):
        raise FrameError(ErrorCode.BAD_REQUEST, "room must be a string", frame_id)
    if not NAME_PATTERN.fullmatch(room):
        raise FrameError(ErrorCode.BAD_REQUEST, "room must match [A-Za-z0-9_.-]{1,64}", frame_id)
    return room


def _string(data: dict[str, Any], name: str, frame_id: FrameId) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise FrameError(ErrorCode.BAD_REQUEST, f"{name} must be a string", frame_id)
    return value


def _parse_send(data: dict[str, Any], frame_id: FrameId) -> Send:
    return Send(room=_room(data, frame_id), text=_string(data, "text", frame_id), id=frame_id)


def _parse_join(data: dict[str, Any], frame_id: FrameId) -> Join:
    room = _room(data, frame_id)
    since = data.get("since")
    if since is not None and (
        not isinstance(since, int) or isinstance(since, bool) or not 0 <= since <= 2**63
    ):
        raise FrameError(ErrorCode.BAD_REQUEST, "since must be a non-negative integer", frame_id)
    epoch = data.get("epoch")
    if epoch is not None and (not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH):
        raise FrameError(
            ErrorCode.BAD_REQUEST,
            f"epoch must be a string of at most {MAX_EPOCH_LENGTH} characters",
            frame_id,
        )
    return Join(room=room, since=since, epoch=epoch, id=frame_id)


def _parse_leave(data: dict[str, Any], frame_id: FrameId) -> Leave:
    return Leave(room=_room(data, frame_id), id=frame_id)


def _parse_refresh(data: dict[str, Any], frame_id: FrameId) -> Refresh:
    return Refresh(token=_string(data, "token", frame_id), id=frame_id)


_PARSERS: dict[str, Callable[[dict[str, Any], FrameId], ClientFrame]] = {
    "send": _parse_send,
    "join": _parse_join,
    "leave": _parse_leave,
    "ping": lambda data, frame_id: Ping(id=frame_id),
    "pong": lambda data, frame_id: Pong(id=frame_id),
    "refresh": _parse_refresh,
}


def decode_client_frame(raw: str | bytes) -> ClientFrame:
    """Parse one client frame.

    Raises :class:`~chat.errors.FrameError` with ``bad_request`` for anything
    that is not a well-formed object of a known shape, and ``unknown_type`` for
    an unknown ``type``; the error carries the frame's ``id`` when it had a
    valid one. Unknown fields are ignored.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FrameError(ErrorCode.BAD_REQUEST, "invalid JSON") from None
    if not isinstance(data, dict):
        raise FrameError(ErrorCode.BAD_REQUEST, "a frame must be a JSON object")
    if _depth_exceeds(data, MAX_DEPTH):
        raise FrameError(ErrorCode.BAD_REQUEST, f"nesting deeper than {MAX_DEPTH} levels")
    frame_id = _frame_id(data)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.BAD_REQUEST, "type must be a string", frame_id)
    parser = _PARSERS.get(kind)
    if parser is None:
        shown = kind if len(kind) <= 32 else kind[:32] + "..."
        raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown type {shown!r}", frame_id)
    return parser(data, frame_id)


def peek_id(raw: str) -> FrameId:
    """The ``id`` of a small client frame without validating the rest; None otherwise.

    For answering a frame that is refused before it is parsed (rate limit).
    """
    if len(raw) > 1024:
        return None
    try:
        data = orjson.loads(raw)
        return _frame_id(data) if isinstance(data, dict) else None
    except (orjson.JSONDecodeError, FrameError):
        return None


def is_send(raw: str) -> bool:
    """True when ``raw`` is a JSON object of type ``send`` (valid or not otherwise)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("type") == "send"


# -- server to client ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatInfo:
    interval: float
    timeout: float


@dataclass(frozen=True, slots=True)
class LimitsInfo:
    max_message_bytes: int
    rate: float
    burst: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    type: Literal["welcome"] = "welcome"
    session: str
    user: str
    node: str
    heartbeat: HeartbeatInfo
    limits: LimitsInfo


@dataclass(frozen=True, slots=True)
class MemberInfo:
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Joined:
    type: Literal["joined"] = "joined"
    room: str
    seq: int
    epoch: str
    recovered: bool
    members: tuple[MemberInfo, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    type: Literal["message"] = "message"
    room: str
    seq: int
    id: FrameId
    user: str
    text: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    type: Literal["ack"] = "ack"
    id: FrameId
    room: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence:
    type: Literal["presence"] = "presence"
    room: str
    event: Literal["join", "leave"]
    user: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Left:
    type: Literal["left"] = "left"
    room: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorFrame:
    type: Literal["error"] = "error"
    code: ErrorCode
    detail: str
    id: FrameId = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Bye:
    """The last frame before a close the server starts.

    ``detail`` (a sentence for the user, such as an operator's reason for a
    ``disconnected``) is left out of the frame when empty.
    """

    type: Literal["bye"] = "bye"
    reason: str
    detail: str | None = None
    reconnect: bool
    retry_after_ms: int = field(default=0)


ServerFrame = Welcome | Joined | Message | Ack | Presence | Left | ErrorFrame | Bye


def encode(frame: ServerFrame) -> str:
    """The compact JSON text of one server frame (``error`` omits a null ``id``, ``bye``
    an empty ``detail``)."""
    if isinstance(frame, ErrorFrame) and frame.id is None:
        return orjson.dumps(
            {"type": frame.type, "code": frame.code, "detail": frame.detail}
        ).decode()
    if isinstance(frame, Bye) and not frame.detail:
        return orjson.dumps(
            {
                "type": frame.type,
                "reason": frame.reason,
                "reconnect": frame.reconnect,
                "retry_after_ms": frame.retry_after_ms,
            }
        ).decode()
    return orjson.dumps(frame).decode()


#: Constant frames, encoded once.
PING = '{"type":"ping"}'
PONG = '{"type":"pong"}'


def error_frame(error: FrameError) -> str:
    """The encoded ``error`` frame for a refused client frame."""
    return encode(ErrorFrame(code=error.code, detail=error.detail, id=error.frame_id))


def split_batch(raw: str) -> list[dict[str, Any]]:
    """Decode one server WebSocket frame into its JSON objects (one, or several under batch)."""
    return [orjson.loads(line) for line in raw.split("\n") if line]
