"""Zero loss across a rolling restart of a two-node cluster (bench/rolling_restart.py, small)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.rolling_restart import rolling_restart
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


async def test_a_rolling_restart_loses_nothing_duplicates_nothing_and_spreads_reconnects(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    report = await rolling_restart(tmp_path, own_redis, clients=30, rate=20)
    # The sender kept sending through its own reconnects: every send acknowledged.
    assert report.acked > 100, report
    assert (report.sent, report.send_failed) == (report.acked, 0), report
    assert (report.lost, report.duplicated, report.out_of_order) == (0, 0, 0)
    assert report.unrecoverable == 0
    # Every listener was told bye at least once (its node went down) and was back in time.
    assert report.byes >= report.clients
    assert report.back_max_s < 10.0, report
    # The servers' retry_after_ms (1 to 5 s, per client) spreads the returns out.
    assert all(spread > 1.5 for spread in report.reconnect_spread_s), report
