"""Prometheus metrics, read from the node's own counters at scrape time.

Nothing is incremented per message for Prometheus: the registry's plain
counters are the source, and :class:`NodeCollector` turns them into metric
families only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chat import __version__
from chat.node import Node


class NodeCollector(Collector):
    """Sessions by state, messages in and out, closes and rejections by reason."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        totals = node.registry.totals
        info = GaugeMetricFamily("chat_node_info", "This node", labels=["node", "version"])
        info.add_metric([node.settings.node_id, __version__], 1)
        yield info
        sessions = GaugeMetricFamily(
            "chat_sessions",
            "Sessions by state (closed: still retained in status)",
            labels=["state"],
        )
        for state, count in node.registry.counts().items():
            sessions.add_metric([state], count)
        yield sessions
        yield CounterMetricFamily(
            "chat_sessions_accepted", "Handshakes accepted", value=totals.accepted
        )
        rejected = CounterMetricFamily(
            "chat_sessions_rejected", "Handshakes refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(totals.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        closed = CounterMetricFamily(
            "chat_sessions_closed", "Sessions closed, by reason", labels=["reason"]
        )
        for reason, count in sorted(totals.closed_by_reason.items()):
            closed.add_metric([reason], count)
        yield closed
        yield CounterMetricFamily(
            "chat_messages_in", "Frames received from clients", value=totals.messages_in
        )
        yield CounterMetricFamily(
            "chat_messages_out", "Messages sent to clients", value=totals.messages_out
        )
        yield CounterMetricFamily(
            "chat_rate_limited", "Client frames dropped over the rate", value=totals.rate_limited
        )
        yield GaugeMetricFamily(
            "chat_rooms", "Rooms with a member on this node", value=len(node.rooms.counts())
        )
        yield GaugeMetricFamily("chat_draining", "1 while shutting down", value=int(node.draining))
        yield GaugeMetricFamily(
            "chat_broker_healthy", "1 while the broker works", value=int(node.broker.healthy)
        )


class Metrics:
    """A Prometheus registry holding only this node's collector."""

    def __init__(self, node: Node) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(NodeCollector(node))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self._registry)
