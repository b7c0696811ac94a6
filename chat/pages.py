"""The browser pages: ``/app`` (a chat page), ``/monitor`` (a live dashboard) and
``/static/*`` (their files, ``chat.js`` among them). See docs/pages.md.

The files are package data (``chat/static/``), read once and kept in memory
with their gzip form and an ETag. The pages are open: they hold no data. What
they show comes from the WebSocket (``/app``, with the user's own name or token)
and from the admin-only ``/status*`` endpoints and ``/status/events``
(``/monitor``, with a token the page asks for and sends as ``Authorization:
Bearer``, never in a URL). Every response forbids scripts, styles and
connections to any other origin (``Content-Security-Policy``), so the pages
load nothing from a third party.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import cast

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from chat.node import Node

router = APIRouter()

#: The files served under ``/static/``, with their media types.
MEDIA_TYPES = {
    "chat.js": "text/javascript; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "monitor.js": "text/javascript; charset=utf-8",
    "pages.css": "text/css; charset=utf-8",
    "app.html": "text/html; charset=utf-8",
    "monitor.html": "text/html; charset=utf-8",
}

#: Same-origin only: no third-party script, style, image, frame or connection.
#: ``connect-src 'self'`` covers the page's own ws:/wss: origin (CSP level 3).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # The pages' URLs never carry a secret; no referrer leaks them anywhere anyway.
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load (cheap: 304 by ETag), so an upgrade shows at once.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file as served: its bytes, gzipped bytes, media type and ETag."""

    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def load(name: str) -> Asset:
    """Read ``chat/static/<name>`` from the package (installed or not)."""
    body = resources.files("chat").joinpath("static", name).read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    return Asset(body, gzip.compress(body, 9, mtime=0), MEDIA_TYPES[name], f'"{digest}"')


#: Every asset, loaded at import: a missing file fails at start, not on a request.
ASSETS = {name: load(name) for name in MEDIA_TYPES}


def allowed_origin(request: Request) -> None:
    """Refuse (403) a request whose ``Origin`` is not in ``CHAT_ALLOWED_ORIGINS``.

    Browsers send ``Origin`` on cross-origin requests and on same-origin ones
    other than GET and HEAD; a request without one (a navigation, curl) passes,
    as a WebSocket handshake without one does (:meth:`chat.node.Node._admit`).
    """
    origins = cast(Node, request.app.state.node).settings.origins
    origin = request.headers.get("origin")
    if origins is not None and origin is not None and origin.lower() not in origins:
        raise HTTPException(403, detail="origin not allowed")


def serve(asset: Asset, request: Request) -> Response:
    """``asset`` with the pages' headers: 304 when the ETag matches, gzip when accepted."""
    headers = {**HEADERS, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/app")
async def app_page(request: Request) -> Response:
    """The chat page (open: the user gives a name or a token)."""
    allowed_origin(request)
    return serve(ASSETS["app.html"], request)


@router.get("/monitor")
async def monitor_page(request: Request) -> Response:
    """The monitor page (open; its data needs the admin token, which it asks for)."""
    allowed_origin(request)
    return serve(ASSETS["monitor.html"], request)


@router.get("/static/{name}")
async def static_file(name: str, request: Request) -> Response:
    """One of the pages' files; 404 for any other name."""
    allowed_origin(request)
    asset = ASSETS.get(name)
    if asset is None or name.endswith(".html"):
        raise HTTPException(404, detail="no such file")
    return serve(asset, request)
