"""``GET /status/events``: the registry's changes as server-sent events, for ``/monitor``.

Admin only, by the rule of ``/status`` (:func:`chat.status.require_admin`),
and refused to a browser page of an origin not in ``CHAT_ALLOWED_ORIGINS``.
One stream sends (docs/pages.md, The event stream):

- ``hello`` first: the last minutes of summaries (:class:`chat.watch.Trend`),
  for the chart;
- ``summary`` every :data:`SUMMARY_INTERVAL` seconds: sessions per state,
  message counters, broker health, the busiest rooms, the cluster's nodes;
- ``sessions`` as they change: the views (as ``/status/sessions`` shows them)
  of the sessions that changed since the last event, at most one event per
  :data:`COALESCE` seconds and each session once however often it changed;
- ``resync`` when more sessions changed than a subscriber holds
  (:data:`chat.watch.FEED_LIMIT`): reload what you show;
- a ``: ping`` comment every :data:`HEARTBEAT` seconds, so proxies and
  readers see the stream alive;
- ``expired`` last, when the admin JWT the stream was opened with reaches its
  ``exp`` (:func:`chat.status.admin_until`): the credentials are checked once,
  so the stream ends there and the reader must sign in again.

Nothing grows with a slow reader: its changes coalesce in a bounded set
(:class:`chat.watch.Feed`), and its summaries are made when it can take
them. The stream ends when the node starts draining (a server shutdown must
not wait for monitors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from chat.brokers import BrokerUnavailable
from chat.clock import wait_within
from chat.node import Node
from chat.pages import allowed_origin
from chat.status import admin_until, iso, session_view
from chat.watch import Feed, Sample, TooManyWatchers, Trend

router = APIRouter()

#: Seconds between ``summary`` events (and between the samples of the trend).
SUMMARY_INTERVAL = 2.0
#: Samples kept for the chart: ten minutes at one per :data:`SUMMARY_INTERVAL`.
TREND_SIZE = 300
#: The shortest time between two ``sessions`` events: changes in between are merged.
COALESCE = 0.25
#: Seconds between ``: ping`` comments.
HEARTBEAT = 15.0
#: Rooms a summary lists (the busiest first); ``rooms_total`` says how many there are.
SUMMARY_ROOMS = 50
#: Every this many summaries also lists the cluster's nodes (a broker read).
NODES_EVERY = 5
#: The longest a summary waits for the broker's node list.
NODES_TIMEOUT = 1.0
#: The ``detail`` of a refusal when every stream is taken.
FULL = "too many event streams are open: try again later"
#: The ``detail`` of the last event of a stream whose admin JWT expired.
EXPIRED = "the admin token expired: sign in again"


def _node(request: Request) -> Node:
    return cast(Node, request.app.state.node)


def _trend(request: Request) -> Trend:
    return cast(Trend, request.app.state.trend)


def sample(node: Node) -> Sample:
    """The node now, as one point of the trend."""
    totals = node.registry.totals
    return Sample(
        at=node.clock.time(),
        sessions=node.registry.counts(),
        messages_in=totals.messages_in,
        messages_out=totals.messages_out,
    )


async def run_sampler(node: Node, trend: Trend) -> None:
    """Record a sample every :data:`SUMMARY_INTERVAL` seconds until cancelled
    (run it in the node's task group)."""
    while True:
        trend.record(sample(node))
        await node.clock.sleep(SUMMARY_INTERVAL)


def event(name: str, data: Any) -> bytes:
    """One server-sent event: compact JSON never holds a raw newline, so one data line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _sample_view(point: Sample) -> dict[str, Any]:
    return asdict(point)


async def summary(node: Node, *, nodes: bool) -> dict[str, Any]:
    """This node's summary: small, whatever the number of sessions or rooms."""
    totals = node.registry.totals
    rooms = node.rooms.counts()
    busiest = sorted(rooms.items(), key=lambda item: (-item[1], item[0]))[:SUMMARY_ROOMS]
    found: dict[str, Any] = {
        "node": node.settings.node_id,
        "at": iso(node.clock.time()),
        "draining": node.draining,
        "sample": _sample_view(sample(node)),
        "totals": {
            "accepted": totals.accepted,
            "rejected": sum(totals.rejected.values()),
            "closed_by_reason": dict(totals.closed_by_reason),
        },
        "broker": {"url": node.broker.url, "healthy": node.broker.healthy},
        "rooms": [{"room": name, "members": members} for name, members in busiest],
        "rooms_total": len(rooms),
    }
    if nodes:
        listed: list[dict[str, Any]] | None = None
        try:
            cluster: list[Any] | None = None

            async def read() -> None:
                nonlocal cluster
                cluster = await node.broker.nodes()

            if await wait_within(node.clock, NODES_TIMEOUT, read) and cluster is not None:
                listed = [
                    {"node": n.node, "sessions": n.sessions, "last_seen": iso(n.last_seen)}
                    for n in cluster
                ]
        except BrokerUnavailable:
            listed = []
        found["nodes"] = listed
    return found


def changed_views(node: Node, ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """The views of the sessions ``ids``; one no longer retained is ``{"id", "gone"}``."""
    views: list[dict[str, Any]] = []
    for session_id in ids:
        found = node.registry.get(session_id)
        if found is None:
            views.append({"id": session_id, "gone": True})
        else:
            views.append(session_view(node, *found))
    return views


async def stream(
    node: Node, trend: Trend, feed: Feed, expires_at: float | None = None
) -> AsyncIterator[bytes]:
    """The events of one subscriber, until the node drains or, with ``expires_at`` (Unix
    seconds, the admin JWT's ``exp``), until then: ``expired`` is the last event."""
    clock = node.clock
    yield event(
        "hello",
        {
            "node": node.settings.node_id,
            "interval": SUMMARY_INTERVAL,
            "trend": [_sample_view(point) for point in trend.samples()],
        },
    )
    summaries = 0
    next_summary = clock.now()
    last_ping = clock.now()
    while not node.draining:
        if expires_at is not None and clock.time() >= expires_at:
            yield event("expired", {"detail": EXPIRED})
            return
        now = clock.now()
        if now >= next_summary:
            yield event("summary", await summary(node, nodes=summaries % NODES_EVERY == 0))
            summaries += 1
            next_summary = now + SUMMARY_INTERVAL
        changes = feed.take()
        if changes.overflowed:
            yield event("resync", {"reason": "more sessions changed than one event carries"})
        elif changes.ids:
            yield event("sessions", {"sessions": changed_views(node, changes.ids)})
        if now - last_ping >= HEARTBEAT:
            yield b": ping\n\n"
            last_ping = now
        await clock.sleep(COALESCE)
        wait = next_summary - clock.now()
        if expires_at is not None:
            wait = min(wait, expires_at - clock.time())
        await wait_within(clock, max(0.0, wait), feed.wait)


@router.get("/status/events", dependencies=[Depends(allowed_origin)])
async def events(
    request: Request, expires_at: Annotated[float | None, Depends(admin_until)]
) -> StreamingResponse:
    """Server-sent events of the registry's changes and periodic summaries (admin only,
    until the admin JWT's ``exp``); 503 when :data:`chat.watch.MAX_FEEDS` streams are
    open already."""
    node = _node(request)
    trend = _trend(request)
    watch = node.registry.watch
    if watch.full:
        raise HTTPException(503, detail=FULL, headers={"Retry-After": "5"})

    async def body() -> AsyncIterator[bytes]:
        # Subscribed in the body, whose end (or cancellation) always unsubscribes: a
        # client gone before its first byte never leaves a feed behind.
        try:
            with watch.subscribe() as feed:
                async for chunk in stream(node, trend, feed, expires_at):
                    yield chunk
        except TooManyWatchers:  # filled up between the check and the first byte
            yield event("error", {"detail": FULL})

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
