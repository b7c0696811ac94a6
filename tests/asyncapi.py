"""The server frames of ``chat/asyncapi.json`` as validators, for the tests.

The end-to-end suite checks every ``chat.v1`` / ``chat.v1.batch`` frame a test
client receives against these schemas (``tests/e2e/conftest.py``), so the
document cannot drift from what the server sends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

import orjson
from jsonschema import Draft7Validator

from chat.protocol import split_batch

#: The channel of the JSON subprotocols.
ROOM_CHANNEL = "room"
#: The subprotocols whose server frames are JSON objects with a ``type``.
JSON_SUBPROTOCOLS = frozenset({"chat.v1", "chat.v1.batch"})


class FrameInvalid(AssertionError):
    """A frame the server sent does not match the document."""


def load_document() -> dict[str, Any]:
    """The packaged document, parsed (the file ``GET /asyncapi.json`` serves)."""
    document = orjson.loads(files("chat").joinpath("asyncapi.json").read_bytes())
    assert isinstance(document, dict)
    return document


def pointer(document: Mapping[str, Any], ref: str) -> Any:
    """What a local ``$ref`` (``#/a/b``) names in ``document``; KeyError if nothing."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def inlined(document: Mapping[str, Any], schema: Any) -> Any:
    """``schema`` with every local ``$ref`` replaced by what it names (the document has
    no recursive schema): a self-contained schema, validated several times faster
    than one that resolves its refs on every frame.

    Raises ValueError for a ``$ref`` with sibling keywords, which draft-07 ignores.
    """
    if isinstance(schema, dict):
        if "$ref" in schema:
            if len(schema) != 1:
                raise ValueError(f"a $ref with siblings (ignored by draft-07): {schema}")
            return inlined(document, pointer(document, schema["$ref"]))
        return {key: inlined(document, value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [inlined(document, item) for item in schema]
    return schema


def message_key(ref: str) -> str:
    """The component key of a channel message ref (``#/channels/room/messages/bye``)."""
    return ref.rsplit("/", 1)[1]


def operation_messages(
    document: Mapping[str, Any], action: str, channel: str = ROOM_CHANNEL
) -> Iterator[str]:
    """The component keys of the messages of ``channel``'s operations with ``action``."""
    for operation in document["operations"].values():
        if (
            operation["action"] == action
            and operation["channel"]["$ref"] == f"#/channels/{channel}"
        ):
            for message in operation["messages"]:
                channel_message = pointer(document, message["$ref"])
                yield message_key(channel_message["$ref"])


@dataclass(frozen=True)
class ServerFrames:
    """Validates server frames by their ``type`` against their message's payload."""

    validators: Mapping[str, Draft7Validator]

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> ServerFrames:
        """The validators of every message the server sends on the ``room`` channel."""
        validators: dict[str, Draft7Validator] = {}
        for key in operation_messages(document, "send"):
            payload = document["components"]["messages"][key]["payload"]
            kind = payload["properties"]["type"]["const"]
            assert kind not in validators, f"two server messages of type {kind!r}"
            validators[kind] = Draft7Validator(inlined(document, payload))
        return cls(validators)

    def check(self, frame: Any) -> str:
        """The ``type`` of ``frame``; raises :class:`FrameInvalid` unless it is an
        object of a known ``type`` that its message's payload schema accepts."""
        kind = frame.get("type") if isinstance(frame, dict) else None
        validator = self.validators.get(kind) if isinstance(kind, str) else None
        if validator is None:
            known = ", ".join(sorted(self.validators))
            raise FrameInvalid(
                f"server frame {_show(frame)} has no known type (the document has: {known})"
            )
        if validator.is_valid(frame):
            return str(kind)
        # The first error is enough to name the field; jsonschema's own is the clearest.
        error = next(iter(validator.iter_errors(frame)))
        where = "/".join(str(part) for part in error.absolute_path) or "(the frame)"
        raise FrameInvalid(
            f"server frame {_show(frame)} does not match the {kind!r} schema of "
            f"chat/asyncapi.json at {where}: {error.message}"
        )

    def check_text(self, raw: str) -> list[str]:
        """Check every object of one server WebSocket frame (several under batch);
        returns their types, in order."""
        try:
            frames = split_batch(raw)
        except orjson.JSONDecodeError as error:
            raise FrameInvalid(f"server frame {raw[:300]!r} is not JSON: {error}") from None
        if not frames:
            raise FrameInvalid(f"server frame {raw[:300]!r} holds no object")
        return [self.check(frame) for frame in frames]


@dataclass
class FrameWatch:
    """The server frames that test clients received, checked as they arrive.

    :meth:`received` sees what ``ClientConnection.recv`` returned on every
    connection (``tests/e2e/conftest.py`` wraps it); it checks the text frames of
    ``chat.v1`` / ``chat.v1.batch`` connections and leaves the rest alone.
    """

    frames: ServerFrames
    #: Objects checked so far by type (each object of a batch counts).
    kinds: Counter[str] = field(default_factory=Counter)
    #: The messages of the frames that failed, for the test that received them.
    failures: list[str] = field(default_factory=list)

    def received(self, subprotocol: str | None, data: object) -> None:
        """Check ``data`` if it is a JSON session's text frame; raise
        :class:`FrameInvalid` (after recording it) if it does not match."""
        if subprotocol not in JSON_SUBPROTOCOLS or not isinstance(data, str):
            return
        try:
            self.kinds.update(self.frames.check_text(data))
        except FrameInvalid as error:
            self.failures.append(str(error))
            raise

    @property
    def seen(self) -> int:
        """How many objects were checked so far."""
        return self.kinds.total()


def _show(frame: Any) -> str:
    text = orjson.dumps(frame).decode() if isinstance(frame, dict | list) else repr(frame)
    return text if len(text) <= 300 else text[:300] + "..."


@cache
def server_frames() -> ServerFrames:
    """The validators of the packaged document, built once."""
    return ServerFrames.of(load_document())
