"""Health, readiness, status and metrics endpoints (README.md, Endpoints; docs/operations.md).

Open when no credentials are configured (the default binds to loopback).
With ``CHAT_STATUS_TOKEN`` set, or JWT auth on, they need
``Authorization: Bearer`` with that token or an admin JWT: the rule of
:func:`require_admin`, which the server API (:mod:`chat.api`) shares.
"""

from __future__ import annotations

import hmac
import os
from contextlib import suppress
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from chat import __version__
from chat.auth import TokenError, bearer_token
from chat.brokers import BrokerUnavailable
from chat.metrics import Metrics
from chat.node import Node
from chat.session import Session

router = APIRouter()


def _node(request: Request) -> Node:
    return cast(Node, request.app.state.node)


def _metrics(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


#: The ``detail`` of a refusal by :func:`require_admin`.
ADMIN_ONLY = "this needs an admin token: the status token or a JWT with admin: true"


def require_admin(request: Request) -> None:
    """Refuse unless admin access is open or the bearer credentials allow it
    (``/status*``, ``/metrics`` and the server API under ``/api``).

    Open when neither ``CHAT_STATUS_TOKEN`` nor JWT auth is configured. Otherwise
    ``Authorization: Bearer`` must carry the status token, or a valid JWT whose
    claims include ``"admin": true``. Missing or invalid credentials get 401; a
    valid JWT without ``admin`` gets 403 (who it is is known, and not enough).
    """
    admin_until(request)


def admin_until(request: Request) -> float | None:
    """:func:`require_admin`, and when the admin access it granted ends: the admin
    JWT's ``exp`` (Unix seconds), or None (open access, the status token: no end).

    A response that lasts (``/status/events``) must end there: the check is made
    once, when it starts.
    """
    node = _node(request)
    status_token = node.settings.status_token
    if not status_token and not node.auth.enabled:
        return None
    given = bearer_token(request.headers.get("authorization", ""))
    if given:
        if status_token and hmac.compare_digest(given.encode(), status_token.encode()):
            return None
        if node.auth.enabled:
            try:
                identity = node.auth.verify(given, node.clock.time())
            except TokenError:
                pass
            else:
                if identity.admin:
                    return identity.expires_at
                raise HTTPException(status_code=403, detail=ADMIN_ONLY)
    raise HTTPException(
        status_code=401,
        detail=ADMIN_ONLY,
        headers={"WWW-Authenticate": "Bearer"},
    )


NodeDep = Annotated[Node, Depends(_node)]
#: The states a session shows (a closing one shows the state it closed from).
PublicState = Literal["connecting", "active", "idle", "closed"]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
Guarded = [Depends(require_admin)]


def iso(timestamp: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string with milliseconds, or None."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def session_view(
    node: Node, session: Session, queued: int, *, history: bool = False
) -> dict[str, Any]:
    """A session as the status API shows it; times converted from the monotonic clock."""
    now = node.clock.now()
    offset = node.clock.time() - now
    end = session.closed_at if session.closed_at is not None else now
    view: dict[str, Any] = {
        "id": session.id,
        "user": session.user,
        "state": session.public_state.value,
        "closing": session.closing,
        "protocol": session.protocol.value,
        "rooms": list(session.rooms),
        "remote": session.remote,
        "node": session.node,
        "connected_at": iso(session.connected_at + offset),
        "last_activity_at": iso(session.last_activity + offset),
        "idle_s": round(max(0.0, end - session.last_activity), 3),
        "messages_in": session.messages_in,
        "messages_out": session.messages_out,
        "queue": queued,
        "close_code": session.close_code,
        "close_reason": session.close_reason,
        "closed_by": session.closed_by,
        "closed_at": iso(None if session.closed_at is None else session.closed_at + offset),
    }
    if history:
        view["history"] = [
            {"state": entry.state.value, "at": iso(entry.at + offset), "reason": entry.reason}
            for entry in session.history
        ]
    return view


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process serves."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(node: NodeDep) -> JSONResponse:
    """200 when accepting sessions; 503 while draining or when the broker is down."""
    if node.ready:
        return JSONResponse({"status": "ready"})
    reason = "draining" if node.draining else "broker unavailable" if node.running else "starting"
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)


@router.get("/status", dependencies=Guarded)
async def status(node: NodeDep, metrics: MetricsDep) -> dict[str, Any]:
    """This node's summary, the worker that answered and every worker of its process group."""
    totals = node.registry.totals
    summary: dict[str, Any] = {
        "node": node.settings.node_id,
        "worker": {"pid": os.getpid(), "node": node.settings.node_id},
        "version": __version__,
        "started_at": iso(node.started_at),
        "uptime_s": round(node.clock.now() - node.started_mono, 3),
        "draining": node.draining,
        "broker": {
            "url": node.broker.url,
            "healthy": node.broker.healthy,
            **node.broker.statistics(),
        },
        "sessions": node.registry.counts(),
        "rooms": node.rooms.counts(),
        "totals": {
            "accepted": totals.accepted,
            "rejected": dict(totals.rejected),
            "messages_in": totals.messages_in,
            "messages_out": totals.messages_out,
            "closed_by_reason": dict(totals.closed_by_reason),
            "rate_limited": totals.rate_limited,
        },
        "workers": [asdict(worker) for worker in metrics.workers()],
    }
    try:
        nodes = await node.broker.nodes()
    except BrokerUnavailable:
        nodes = []  # the cluster view needs the broker; never hang on it
    if nodes is not None:
        summary["nodes"] = [
            {"node": n.node, "sessions": n.sessions, "last_seen": iso(n.last_seen)} for n in nodes
        ]
    return summary


@router.get("/status/rooms", dependencies=Guarded)
async def rooms(node: NodeDep, room: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rooms with a member on this node: members, distinct users and the latest ``seq``."""
    found = []
    for name, members in sorted(node.rooms.counts().items()):
        if room is not None and name != room:
            continue
        latest: int | None = None
        users: list[str] | None = None
        with suppress(BrokerUnavailable):  # the room's shared state needs the broker
            run = await node.broker.latest(name)
            latest = 0 if run is None else run[1]
            users = await node.broker.presence_users(name)
        found.append({"room": name, "members": members, "users": users, "seq": latest})
    return {"rooms": found}


@router.get("/status/sessions", dependencies=Guarded)
async def sessions(
    node: NodeDep,
    state: PublicState | None = None,
    room: str | None = None,
    user: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Live sessions, then recently closed ones; filtered by ``state``, ``room``, ``user``;
    the first ``offset`` that match are skipped (a page of ``limit``)."""
    found: list[dict[str, Any]] = []
    for session, queued in node.registry.sessions():
        if state is not None and session.public_state.value != state:
            continue
        if room is not None and room not in session.rooms:
            continue
        if user is not None and session.user != user:
            continue
        if offset:
            offset -= 1
            continue
        found.append(session_view(node, session, queued))
        if len(found) >= limit:
            break
    return {"sessions": found}


@router.get("/status/sessions/{session_id}", dependencies=Guarded)
async def session_detail(node: NodeDep, session_id: str) -> dict[str, Any]:
    """One session with its state history; 404 if unknown or no longer retained."""
    found = node.registry.get(session_id)
    if found is None:
        raise HTTPException(status_code=404, detail="no such session")
    session, queued = found
    return session_view(node, session, queued, history=True)


@router.get("/metrics", dependencies=Guarded)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format: every worker of the process group (see :mod:`chat.metrics`)."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
