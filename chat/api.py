"""The server API under ``/api``: what an application's backend asks of the chat service.

Publish to a room, read its history, see who is in it, disconnect a session or
every session of a user (``docs/api.md``). Admin only, by the rule of
``/status`` (:func:`chat.status.require_admin`); JSON in and out; described in
OpenAPI at ``/docs``. Bad input gets 400 with a ``detail`` (FastAPI's own
validation errors included: see :class:`ApiRoute`), a broker that cannot answer
503 with ``Retry-After``. Cluster-wide with Redis.

The routes check input and shape output; the work is the node's
(:meth:`chat.node.Node.publish`, :meth:`~chat.node.Node.disconnect`) and the
broker's (its reads of history and presence).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from chat.brokers import BrokerUnavailable
from chat.envelope import DisconnectCommand, Publication
from chat.node import Node
from chat.protocol import MAX_EPOCH_LENGTH, MAX_ID_LENGTH, MAX_SAFE_INTEGER, FrameId
from chat.settings import NAME_PATTERN
from chat.status import require_admin

#: The most messages one history read returns.
MAX_HISTORY_LIMIT = 1000
#: The longest reason a disconnect may give (it is shown to the user in ``bye``).
MAX_REASON_LENGTH = 256
#: Seconds a caller should wait before retrying after a 503.
RETRY_AFTER = "1"
#: What a name (room, user, session id) must look like, in the words of the errors.
NAME_RULE = "[A-Za-z0-9_.-]{1,64}"

UNAVAILABLE = "the broker is unavailable, nothing was done: try again"
PUBLISH_UNCERTAIN = (
    "the broker did not answer in time: the message may still be published, once;"
    " retry with the same id to get its seq"
)
PUBLISH_UNCERTAIN_WITHOUT_ID = (
    "the broker did not answer in time: the message may still be published;"
    " a retry without an id may publish it twice"
)
DISCONNECT_UNCERTAIN = (
    "the broker did not answer in time: the disconnect may have reached some nodes;"
    " sending it again is safe (no session is closed twice)"
)


class ApiRoute(APIRoute):
    """A route of the server API: the admin check comes before the body is read, the
    body is bounded (413 beyond :func:`max_body`), and FastAPI's validation errors
    (422) become 400 with one readable ``detail``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            # FastAPI reads and parses the body before the dependencies run: check
            # access first, so that a caller without it neither learns anything about
            # its input nor makes the server hold a body of any size.
            require_admin(request)
            if request.method in BODY_METHODS:
                await read_bounded(request, max_body(_node(request).settings.max_message_bytes))
            try:
                return await handler(request)
            except RequestValidationError as error:
                raise HTTPException(400, detail=readable(error.errors())) from None

        return route


#: The methods whose body an API route reads.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def max_body(max_message_bytes: int) -> int:
    """The largest request body accepted: a message of ``max_message_bytes`` bytes,
    each escaped in JSON (``\\u0001`` is six), with room for the other fields."""
    return 6 * max_message_bytes + 4096


async def read_bounded(request: Request, limit: int) -> None:
    """Read the body of ``request`` if it is at most ``limit`` bytes; 413 otherwise,
    as soon as its ``Content-Length`` or what arrived says so."""
    too_large = HTTPException(413, detail=f"the request body must be at most {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    # Starlette's Request keeps the body it read here: FastAPI's handler parses it.
    request._body = bytes(body)


def readable(errors: Sequence[Any]) -> str:
    """Pydantic's validation errors as one sentence: ``field: problem; ...``."""
    parts = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        where = ".".join(location[1:]) or (location[0] if location else "request")
        problem = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            where, problem = "body", "not valid JSON"
        elif where == "body" and error.get("type") in {"missing", "model_attributes_type"}:
            problem = "a JSON object is required"
        parts.append(f"{where}: {problem}")
    return "; ".join(parts) or "invalid request"


class Problem(BaseModel):
    """Every error answer: what was wrong, in a sentence."""

    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Bad input: `detail` says what and why."},
    401: {"model": Problem, "description": "No valid admin credentials."},
    403: {"model": Problem, "description": "A valid JWT without `admin: true`."},
    413: {"model": Problem, "description": "A body larger than any message could need."},
    503: {
        "model": Problem,
        "description": "The broker (Redis) cannot answer now; retry after `Retry-After` seconds.",
    },
}

router = APIRouter(
    prefix="/api",
    tags=["server API"],
    route_class=ApiRoute,
    responses=ERRORS,
    dependencies=[
        Depends(require_admin),
        # Documents the scheme in OpenAPI (and /docs' Authorize); require_admin decides.
        Security(HTTPBearer(auto_error=False, description="The status token or an admin JWT")),
    ],
)


def _node(request: Request) -> Node:
    return cast(Node, request.app.state.node)


NodeDep = Annotated[Node, Depends(_node)]


def bad(detail: str) -> HTTPException:
    """A 400 with ``detail``."""
    return HTTPException(400, detail=detail)


def unavailable(detail: str) -> HTTPException:
    """A 503 with ``detail`` and ``Retry-After``."""
    return HTTPException(503, detail=detail, headers={"Retry-After": RETRY_AFTER})


def checked_name(value: str, what: str) -> str:
    """``value`` if it is a valid room, user or session id; 400 otherwise."""
    if not NAME_PATTERN.fullmatch(value):
        raise bad(f"{what} must match {NAME_RULE}")
    return value


def checked_text(value: str, what: str, max_bytes: int | None = None) -> str:
    """``value`` if it is valid Unicode (no lone surrogates) of at most ``max_bytes``
    bytes of UTF-8; 400 otherwise."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad(f"{what} must be valid Unicode (no lone surrogates)") from None
    if max_bytes is not None and size > max_bytes:
        raise bad(f"{what} is {size} bytes of UTF-8: at most {max_bytes} are allowed")
    return value


ID_RULE = (
    f"must be a string of at most {MAX_ID_LENGTH} characters or an integer"
    " between -(2**53 - 1) and 2**53 - 1"
)


def checked_id(value: Any) -> FrameId:
    """A message ``id`` as a ``send`` may carry it; :class:`ValueError` otherwise."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogates)") from None
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER:
        return value
    raise ValueError(ID_RULE)


Room = Annotated[str, Path(description=f"The room id: {NAME_RULE}.")]


# -- publish ----------------------------------------------------------------------------


class PublishRequest(BaseModel):
    """A message to publish, as a member named ``user`` would send it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user: str = Field(description=f"Who the message is from ({NAME_RULE}), such as `system`.")
    text: str = Field(description="The text, at most `CHAT_MAX_MESSAGE_BYTES` bytes of UTF-8.")
    id: Annotated[str | int | None, BeforeValidator(checked_id)] = Field(
        default=None,
        description=(
            "A client-chosen id (a string of at most 128 characters or a safe integer):"
            " a retry with the same user, id and text within `CHAT_SEND_ID_WINDOW`"
            " is not published again."
        ),
    )


class PublishResponse(BaseModel):
    """Where the message landed."""

    room: str
    seq: int = Field(description="The message's `seq` in the room.")
    epoch: str = Field(description="The run of the room's `seq` it belongs to.")
    id: str | int | None
    duplicate: bool = Field(
        description="True when this retried an earlier publish: nothing was published again."
    )


@router.post("/rooms/{room}/messages", summary="Publish a message to a room")
async def publish(node: NodeDep, room: Room, body: PublishRequest) -> PublishResponse:
    """Publish to ``room`` exactly as a member's ``send``: JSON members receive a
    ``message``, plain-text members its bare text. Idempotent with ``id``."""
    checked_name(room, "room")
    checked_name(body.user, "user")
    checked_text(body.text, "text", node.settings.max_message_bytes)
    try:
        published: Publication = await node.publish(room, body.user, body.text, body.id)
    except BrokerUnavailable as error:
        if not error.uncertain:
            raise unavailable(UNAVAILABLE) from None
        raise unavailable(
            PUBLISH_UNCERTAIN if body.id is not None else PUBLISH_UNCERTAIN_WITHOUT_ID
        ) from None
    return PublishResponse(
        room=room,
        seq=published.seq,
        epoch=published.epoch,
        id=published.id,
        duplicate=published.duplicate,
    )


# -- history ----------------------------------------------------------------------------


class HistoryMessage(BaseModel):
    """A kept message, with the fields of its ``message`` frame."""

    room: str
    seq: int
    id: str | int | None
    user: str
    text: str
    ts: float = Field(description="The server's Unix time when it was published, in seconds.")


class HistoryResponse(BaseModel):
    """A room's kept messages after ``since``."""

    room: str
    epoch: str | None = Field(description="The room's run; null when it has none.")
    seq: int = Field(description="The room's latest `seq` (0 without a run).")
    since: int
    complete: bool = Field(
        description=(
            "True when no message after `since` is missing: false when older messages"
            " were dropped (`CHAT_HISTORY_SIZE`, `CHAT_HISTORY_TTL`), when `epoch` is not"
            " the room's run any more, or when `since` is ahead of the room."
        )
    )
    more: bool = Field(description="More kept messages follow: read again after the last `seq`.")
    messages: list[HistoryMessage]


@router.get("/rooms/{room}/history", summary="Read a room's recent messages")
async def history(
    node: NodeDep,
    room: Room,
    since: Annotated[
        int, Query(ge=0, le=2**63, description="Return the messages after this `seq`.")
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_HISTORY_LIMIT, description="At most this many messages.")
    ] = 100,
    epoch: Annotated[
        str | None,
        Query(
            max_length=MAX_EPOCH_LENGTH,
            description="The run `since` was seen in: another run makes `complete` false.",
        ),
    ] = None,
) -> HistoryResponse:
    """The kept messages after ``since`` in ``seq`` order, at most ``limit``, and whether
    they cover ``since``. Reading starts nothing: a room without a run stays without."""
    checked_name(room, "room")
    if epoch is not None:
        checked_text(epoch, "epoch")
    try:
        page = await node.broker.read(room, since, limit, epoch)
    except BrokerUnavailable:
        raise unavailable(UNAVAILABLE) from None
    return HistoryResponse(
        room=room,
        epoch=page.epoch,
        seq=page.latest,
        since=since,
        complete=page.complete,
        more=page.more,
        messages=[
            HistoryMessage(room=p.room, seq=p.seq, id=p.id, user=p.user, text=p.text, ts=p.ts)
            for p in page.publications
        ],
    )


# -- presence ---------------------------------------------------------------------------


class PresentUser(BaseModel):
    user: str
    sessions: int = Field(description="The user's sessions in the room, over every node.")


class PresenceResponse(BaseModel):
    """Who is in a room."""

    room: str
    users: list[PresentUser] = Field(description="Sorted by user.")
    sessions: int = Field(description="Every session in the room.")


@router.get("/rooms/{room}/presence", summary="Who is in a room")
async def presence(node: NodeDep, room: Room) -> PresenceResponse:
    """The users with a session in ``room`` (one whose join completed), with their
    session counts; cluster-wide with Redis."""
    checked_name(room, "room")
    try:
        counts = await node.broker.presence_counts(room)
    except BrokerUnavailable:
        raise unavailable(UNAVAILABLE) from None
    return PresenceResponse(
        room=room,
        users=[PresentUser(user=user, sessions=n) for user, n in sorted(counts.items())],
        sessions=sum(counts.values()),
    )


# -- disconnect -------------------------------------------------------------------------


class DisconnectRequest(BaseModel):
    """How to disconnect."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(
        default="",
        max_length=MAX_REASON_LENGTH,
        description="Shown to the client as `bye.detail` (left out when empty).",
    )
    reconnect: bool = Field(
        default=False,
        description=(
            "May the client come back? true: close 1013 and `bye.reconnect` true, with a"
            " jittered `retry_after_ms`; false: close 1008, `bye.reconnect` false."
        ),
    )


class DisconnectResponse(BaseModel):
    """How many sessions began closing, where."""

    closed: int = Field(description="Sessions closed on the nodes that answered.")
    nodes: dict[str, int] = Field(description="Sessions closed per node that answered.")
    unanswered: list[str] = Field(
        description=(
            "Live nodes that did not answer within about a second: they may have"
            " closed sessions too (send the disconnect again to be sure)."
        )
    )


async def _disconnect(node: Node, command: DisconnectCommand) -> DisconnectResponse:
    try:
        tally = await node.disconnect(command)
    except BrokerUnavailable as error:
        raise unavailable(DISCONNECT_UNCERTAIN if error.uncertain else UNAVAILABLE) from None
    nodes = {node.settings.node_id: tally.here, **tally.others}
    return DisconnectResponse(
        closed=sum(nodes.values()), nodes=nodes, unanswered=list(tally.unanswered)
    )


@router.post("/sessions/{session_id}/disconnect", summary="Disconnect one session")
async def disconnect_session(
    node: NodeDep,
    session_id: Annotated[str, Path(description="The session id (`welcome.session`).")],
    body: DisconnectRequest,
) -> DisconnectResponse:
    """Close the session, on whichever node holds it: a JSON session gets ``bye``
    ``disconnected`` with ``reason`` as its ``detail``, then close 1008 (or 1013
    with ``reconnect``); a plain-text session just the close."""
    checked_name(session_id, "session id")
    reason = checked_text(body.reason, "reason")
    return await _disconnect(node, DisconnectCommand(session_id, None, reason, body.reconnect))


@router.post("/users/{user}/disconnect", summary="Disconnect every session of a user")
async def disconnect_user(
    node: NodeDep,
    user: Annotated[str, Path(description=f"The user: {NAME_RULE}.")],
    body: DisconnectRequest,
) -> DisconnectResponse:
    """Close every session of ``user`` on every node, as for one session."""
    checked_name(user, "user")
    reason = checked_text(body.reason, "reason")
    return await _disconnect(node, DisconnectCommand(None, user, reason, body.reconnect))


def without_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without FastAPI's 422 answers, which :class:`ApiRoute` turns into 400."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema
