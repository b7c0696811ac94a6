"""The benchmark runner works end to end (a quick run; the figures belong in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import REPO
from tests.redis_server import need_redis


def test_a_quick_baseline_run_measures_both_servers_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    scenarios = ["fanout-batch-1x100", "latency-text-1x100", "echo", "idle-text", "stuck"]
    options = ["--quick", "--pairs", "1", "--baseline", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *scenarios, *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "median ratio" in done.stdout
    results = json.loads(out.read_text())
    assert results["machine"]["cpus"] >= 1
    rows = {row["scenario"]: row for row in results["rows"]}
    assert list(rows) == scenarios
    for row in rows.values():
        assert [len(row["chat"]), len(row["naive"])] == [1, 1]
    for target in ("chat", "naive"):
        fanout = rows["fanout-batch-1x100"][target][0]
        assert fanout["received"] == fanout["expected"] == 100 * 4 * 50
        assert fanout["server_us_per_delivery"] > 0
        assert fanout["p50_ms"] <= fanout["p99_ms"] <= fanout["max_ms"]
        latency = rows["latency-text-1x100"][target][0]
        assert latency["received"] == latency["expected"] == 100 * 50
        assert rows["echo"][target][0]["round_trips_per_s"] > 0
        idle = rows["idle-text"][target][0]
        assert idle["kib_per_connection"] > 0
        assert idle["connects_per_s"] > 0
    # The member that never reads is no one else's problem on chat.
    stuck = rows["stuck"]["chat"][0]
    assert stuck["received"] == stuck["expected"]
    assert not stuck["timed_out"]


def test_a_quick_cluster_run_measures_two_nodes_on_redis_against_one_on_memory(
    tmp_path: Path,
) -> None:
    need_redis()
    out = tmp_path / "results.json"
    options = ["--quick", "--pairs", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "cluster-1x100", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "redis/memory" in done.stdout
    (row,) = json.loads(out.read_text())["rows"]
    redis, memory = row["redis"][0], row["memory"][0]
    assert (redis["nodes"], memory["nodes"]) == (2, 1)
    for run in (redis, memory):
        # One sender, 200 messages, to 100 members spread over the nodes.
        assert run["received"] == run["expected"] == 100 * 200
        assert run["server_us_per_delivery"] > 0
        assert run["p50_ms"] <= run["p99_ms"]
    assert redis["redis_us_per_publish"] > 0
    assert "redis_cpu_s" not in memory
