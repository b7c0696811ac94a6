"""``GET /asyncapi.json``: the wire protocol as an AsyncAPI 3 document (``docs/protocol.md``).

The document is package data, ``chat/asyncapi.json`` (``docs/asyncapi.json``
links to it). It is open like ``/healthz``: it describes what any client may
already see, and holds nothing about this server. Not in the OpenAPI schema:
it describes the WebSockets, not the HTTP API.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

#: The package resource that holds the document.
RESOURCE = "asyncapi.json"

router = APIRouter()


@cache
def asyncapi_document() -> bytes:
    """The document's bytes, read from the package once and kept.

    Raises :class:`ValueError` if the packaged file is not an AsyncAPI 3
    document (a broken build), rather than serve something clients cannot read.
    """
    raw = files("chat").joinpath(RESOURCE).read_bytes()
    document = orjson.loads(raw)
    if not isinstance(document, dict) or not str(document.get("asyncapi", "")).startswith("3."):
        raise ValueError(f"chat/{RESOURCE} is not an AsyncAPI 3 document")
    return raw


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi() -> Response:
    """The AsyncAPI document of ``chat.v1``, ``chat.v1.batch``, plain-text rooms and echo."""
    return Response(asyncapi_document(), media_type="application/json")
