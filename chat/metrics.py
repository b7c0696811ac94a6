"""Prometheus metrics, read from the node's own counters.

Nothing is incremented per message for Prometheus: the registry's plain
counters are the source, read by :func:`read` when needed. Where the values
go depends on how the process serves (:func:`create_metrics` chooses):

- alone (``hypercorn -w 0``, an embedded app): :class:`LocalMetrics` turns a
  reading into metric families when ``/metrics`` is scraped;
- as a worker of ``hypercorn -w N`` (prometheus-client's multiprocess mode,
  which ``main.py`` turns on through :mod:`chat.workers`): :class:`SharedMetrics`
  copies the reading into prometheus-client counters and gauges, which write
  this worker's files, at every scrape and every :data:`SYNC_INTERVAL`; a
  scrape on any worker merges every worker's files, so the other workers'
  values in it are at most that interval old.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from chat import __version__
from chat.node import Node
from chat.workers import process_identity

log = logging.getLogger("chat")

#: Seconds between two copies of a worker's values to its files (multiprocess mode).
SYNC_INTERVAL = 1.0

#: Label values, in the order of the family's label names.
Labels = tuple[str, ...]
#: A node's values: by family name, then by label values.
Reading = dict[str, dict[Labels, float]]

#: The multiprocess modes chat uses: every one counts running workers only.
Mode = Literal["livesum", "livemin", "livemax", "liveall"]

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family (a counter's name is without ``_total``)."""

    name: str
    documentation: str
    kind: Literal["counter", "gauge"]
    labels: Labels = ()
    #: How multiprocess mode merges the workers' values of a gauge. ``live*``
    #: modes count the running workers only (a worker's file goes when it stops);
    #: ``liveall`` keeps one series per worker, labelled ``pid``.
    mode: Mode = "livesum"


#: Every metric, in the order of the exposition.
FAMILIES: tuple[Family, ...] = (
    Family("chat_node_info", "This node", "gauge", ("node", "version"), mode="liveall"),
    Family(
        "chat_sessions",
        "Sessions by state (closed: still retained in status)",
        "gauge",
        ("state",),
    ),
    Family("chat_sessions_accepted", "Handshakes accepted", "counter"),
    Family("chat_sessions_rejected", "Handshakes refused, by reason", "counter", ("reason",)),
    Family("chat_sessions_closed", "Sessions closed, by reason", "counter", ("reason",)),
    Family("chat_messages_in", "Frames received from clients", "counter"),
    Family("chat_messages_out", "Messages sent to clients", "counter"),
    Family("chat_rate_limited", "Client frames dropped over the rate", "counter"),
    Family("chat_rooms", "Rooms with a member on this node", "gauge"),
    Family("chat_draining", "1 while shutting down", "gauge", mode="livemax"),
    Family("chat_broker_healthy", "1 while the broker works", "gauge", mode="livemin"),
    Family(
        "chat_worker_sessions",
        "Live sessions (connecting, active, idle) of this process",
        "gauge",
        ("node",),
        mode="liveall",
    ),
)


def read(node: Node) -> Reading:
    """The node's values now, for every family of :data:`FAMILIES`."""
    totals = node.registry.totals
    node_id = node.settings.node_id
    return {
        "chat_node_info": {(node_id, __version__): 1},
        "chat_sessions": {(state,): count for state, count in node.registry.counts().items()},
        "chat_sessions_accepted": {(): totals.accepted},
        "chat_sessions_rejected": {(r,): n for r, n in sorted(totals.rejected.items())},
        "chat_sessions_closed": {(r,): n for r, n in sorted(totals.closed_by_reason.items())},
        "chat_messages_in": {(): totals.messages_in},
        "chat_messages_out": {(): totals.messages_out},
        "chat_rate_limited": {(): totals.rate_limited},
        "chat_rooms": {(): len(node.rooms.counts())},
        "chat_draining": {(): int(node.draining)},
        "chat_broker_healthy": {(): int(node.broker.healthy)},
        "chat_worker_sessions": {(node_id,): len(node.registry)},
    }


def increments(synced: Mapping[K, float], current: Mapping[K, float]) -> dict[K, float]:
    """What to add to counters holding ``synced`` so that they hold ``current``.

    Only the counters that grew are listed; one missing from ``synced`` held 0.
    A counter never goes down: one that reads less than it was synced at is
    left alone.
    """
    return {
        key: value - synced.get(key, 0.0)
        for key, value in current.items()
        if value > synced.get(key, 0.0)
    }


@dataclass(frozen=True, slots=True)
class Worker:
    """One process serving the app, and how many live sessions it holds."""

    pid: int
    node: str
    sessions: int


class Metrics(Protocol):
    """This server's metrics, as ``/metrics`` and ``/status`` show them."""

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        ...

    def workers(self) -> list[Worker]:
        """The running processes of this server (this one included), by pid."""
        ...

    async def run(self) -> None:
        """Keep what other processes read of this one fresh until cancelled (return at
        once if none does). Run it in the node's task group while the node runs."""
        ...

    def close(self) -> None:
        """Record this process's last values and withdraw its live ones (at shutdown)."""
        ...


def create_metrics(node: Node) -> Metrics:
    """:class:`SharedMetrics` when prometheus-client runs in multiprocess mode, else
    :class:`LocalMetrics`.

    prometheus-client chose its mode when first imported (from
    ``PROMETHEUS_MULTIPROC_DIR``); this follows that choice.
    """
    if values.ValueClass is values.MutexValue:
        return LocalMetrics(node)
    return SharedMetrics(node)


class NodeCollector(Collector):
    """The node's reading as metric families, made at each scrape."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        reading = read(self._node)
        for family in FAMILIES:
            kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
            metric = kind(family.name, family.documentation, labels=family.labels)
            for labels, value in reading[family.name].items():
                metric.add_metric(labels, value)
            yield metric


class LocalMetrics:
    """The metrics of a process that serves alone: its node's, read at each scrape."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(NodeCollector(node))

    def render(self) -> bytes:
        return generate_latest(self._registry)

    def workers(self) -> list[Worker]:
        node = self._node
        return [Worker(os.getpid(), node.settings.node_id, len(node.registry))]

    async def run(self) -> None:
        """Return at once: nothing outside this process reads its values."""

    def close(self) -> None:
        pass


class SharedMetrics:
    """Every worker's metrics, through prometheus-client's multiprocess files.

    Build one per process, and only in multiprocess mode: its counters and
    gauges are this process's files. Counters add up over every worker that
    ever ran in the directory (they never go down, even when a worker stops);
    gauges merge the running workers' values by their :attr:`Family.mode`.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        for family in FAMILIES:
            if family.kind == "counter":
                self._counters[family.name] = Counter(
                    family.name, family.documentation, family.labels, registry=None
                )
            else:
                self._gauges[family.name] = Gauge(
                    family.name,
                    family.documentation,
                    family.labels,
                    registry=None,
                    multiprocess_mode=family.mode,
                )
        #: The counters' values as last copied to the files.
        self._synced: dict[tuple[str, Labels], float] = {}
        self._collector = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)
        self._closed = False

    def sync(self) -> None:
        """Copy the node's values to this worker's files (after :meth:`close`, nothing)."""
        if self._closed:
            return
        reading = read(self._node)
        counters = {
            (name, labels): value
            for name in self._counters
            for labels, value in reading[name].items()
        }
        for (name, labels), amount in increments(self._synced, counters).items():
            counter = self._counters[name]
            (counter.labels(*labels) if labels else counter).inc(amount)
        self._synced.update(counters)
        for name, gauge in self._gauges.items():
            for labels, value in reading[name].items():
                (gauge.labels(*labels) if labels else gauge).set(value)

    def render(self) -> bytes:
        self.sync()
        return generate_latest(self._registry)

    def workers(self) -> list[Worker]:
        self.sync()
        found = [
            Worker(int(sample.labels["pid"]), sample.labels["node"], int(sample.value))
            for family in self.collect()
            if family.name == "chat_worker_sessions"
            for sample in family.samples
        ]
        return sorted(found, key=lambda worker: worker.pid)

    async def run(self) -> None:
        """Copy this worker's values every :data:`SYNC_INTERVAL` of the node's clock."""
        failing = False
        while True:
            try:
                self.sync()
            except Exception:
                if not failing:  # once per run of failures, not every second
                    log.exception("copying this worker's metrics to its files failed")
                failing = True
            else:
                failing = False
            await self._node.clock.sleep(SYNC_INTERVAL)

    def close(self) -> None:
        """Copy the last values, then remove this worker's live gauges (its counters stay)."""
        try:
            self.sync()
        finally:
            self._closed = True
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def collect(self) -> list[Metric]:
        """Every worker's files merged, without the live gauges of workers that died
        unannounced (killed before :meth:`close`): what a scrape shows."""
        families: list[Metric] = list(self._collector.collect())  # type: ignore[no-untyped-call]
        dead = {
            pid
            for family in families
            if family.name == "chat_worker_sessions"
            for sample in family.samples
            if process_identity(pid := int(sample.labels["pid"])) is None
        }
        if not dead:
            return families
        for pid in dead:
            mark_process_dead(pid)  # type: ignore[no-untyped-call]
        return list(self._collector.collect())  # type: ignore[no-untyped-call]
