"""Metrics read from the node's counters, and the status view of the workers, in one process."""

from __future__ import annotations

import os
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chat import __version__
from chat.app import create_app
from chat.metrics import FAMILIES, LocalMetrics, Worker, create_metrics, increments, read
from chat.node import Node
from tests.clock import FakeClock
from tests.domain import Harness, make_settings, running

Sample = tuple[str, tuple[tuple[str, str], ...]]


def exposed(text: str) -> dict[Sample, float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("synced", "current", "expected"),
    [
        ({}, {}, {}),
        ({}, {"a": 3.0}, {"a": 3.0}),
        ({"a": 3.0}, {"a": 3.0}, {}),
        ({"a": 3.0, "b": 1.0}, {"a": 5.0, "b": 1.0, "c": 2.0}, {"a": 2.0, "c": 2.0}),
        ({"a": 5.0}, {"a": 3.0}, {}),
        ({"a": 5.0}, {}, {}),
    ],
)
def test_counters_are_synced_by_what_they_grew(
    synced: dict[str, float], current: dict[str, float], expected: dict[str, float]
) -> None:
    assert increments(synced, current) == expected


def test_a_reading_has_every_family_with_its_labels() -> None:
    node = Node(make_settings())
    node.registry.totals.rejected["bad_room"] += 2
    node.registry.totals.closed_by_reason["client_closed"] += 1
    reading = read(node)
    assert list(reading) == [family.name for family in FAMILIES]
    for family in FAMILIES:
        assert all(len(labels) == len(family.labels) for labels in reading[family.name])


def test_the_families_merge_workers_as_each_one_means() -> None:
    modes = {family.name: family.mode for family in FAMILIES if family.kind == "gauge"}
    assert modes == {
        "chat_node_info": "liveall",
        "chat_sessions": "livesum",
        "chat_rooms": "livesum",
        "chat_draining": "livemax",
        "chat_broker_healthy": "livemin",
        "chat_worker_sessions": "liveall",
    }


def test_a_process_without_a_multiprocess_directory_has_its_own_metrics() -> None:
    assert isinstance(create_metrics(Node(make_settings())), LocalMetrics)


def test_one_process_exposes_its_counters_under_the_documented_names() -> None:
    node = Node(make_settings(node_id="solo"))
    totals = node.registry.totals
    totals.accepted = 7
    totals.rejected["bad_room"] += 2
    totals.closed_by_reason["client_closed"] += 3
    totals.messages_in = 11
    totals.messages_out = 13
    totals.rate_limited = 1

    values = exposed(LocalMetrics(node).render().decode())

    assert values == {
        ("chat_node_info", (("node", "solo"), ("version", __version__))): 1,
        ("chat_sessions", (("state", "connecting"),)): 0,
        ("chat_sessions", (("state", "active"),)): 0,
        ("chat_sessions", (("state", "idle"),)): 0,
        ("chat_sessions", (("state", "closed"),)): 0,
        ("chat_sessions_accepted_total", ()): 7,
        ("chat_sessions_rejected_total", (("reason", "bad_room"),)): 2,
        ("chat_sessions_closed_total", (("reason", "client_closed"),)): 3,
        ("chat_messages_in_total", ()): 11,
        ("chat_messages_out_total", ()): 13,
        ("chat_rate_limited_total", ()): 1,
        ("chat_rooms", ()): 0,
        ("chat_draining", ()): 0,
        ("chat_broker_healthy", ()): 1,
        ("chat_worker_sessions", (("node", "solo"),)): 0,
    }


@pytest.mark.anyio
async def test_live_sessions_count_in_the_gauges_and_in_the_only_worker() -> None:
    async with running(node_id="solo") as harness:
        await harness.connect("lobby")
        await harness.connect("lobby")
        metrics = LocalMetrics(harness.node)
        values = exposed(metrics.render().decode())
        assert values[("chat_sessions", (("state", "active"),))] == 2
        assert values[("chat_worker_sessions", (("node", "solo"),))] == 2
        assert values[("chat_rooms", ())] == 1
        assert metrics.workers() == [Worker(os.getpid(), "solo", 2)]


@pytest.mark.anyio
async def test_status_names_this_process_as_the_worker_and_the_only_one() -> None:
    clock = FakeClock()
    app = create_app(make_settings(node_id="solo"), clock=clock)
    node = app.state.node
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with node, anyio.create_task_group() as group:
            await Harness(node, clock, group).connect("lobby")
            async with httpx.AsyncClient(transport=transport) as client:
                status: dict[str, Any] = (await client.get("http://chat/status")).json()
            group.cancel_scope.cancel()
    assert status["worker"] == {"pid": os.getpid(), "node": "solo"}
    assert status["workers"] == [{"pid": os.getpid(), "node": "solo", "sessions": 1}]
