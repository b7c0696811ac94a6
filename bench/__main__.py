"""The benchmark runner: chat against the naive tutorial loop, side by side, on loopback.

    .venv/bin/python -m bench --baseline --pairs 3               # everything, A B A B
    .venv/bin/python -m bench fanout-batch-1x100 --pairs 1       # one scenario, chat only

Each run starts a fresh server (chat: ``hypercorn main:app``; baseline:
``hypercorn bench.naive_app:app``, the same Hypercorn, the same flags) on a
free loopback port, drives it with client processes (``bench.client``,
picows), and reads the server worker's CPU time and RSS from ``/proc``.
With ``--baseline`` every scenario runs chat then the naive app, ``--pairs``
times, and the table shows each pair's ratio and their median. Every run is
bounded in count and time; results go to ``bench/results/<time>.json``.

Scenarios:

* ``fanout-{batch,text}-{1x100,10x10}``: R rooms of M members, senders sending
  flat out (a window of 16 messages each in flight). Deliveries per second,
  server and client CPU per delivery, latency.
* ``latency-{batch,text}-1x100``: one sender at 50 messages/s into a room of
  100: 5,000 deliveries/s. Latency p50/p99/max.
* ``echo``: sequential round trips on a room of one.
* ``idle-{json,text}``: 5,000 sessions (``--idle N``: N) in 100 rooms, idle for 3 s with a
  heartbeat every second (JSON sessions answer each ping): server RSS per
  connection, connects per second.
* ``stuck``: a room of 20 at 200 messages/s of 4 KB, one member never reads
  (12 MB for it); the others' p99 against the same run without it
  (``unstuck``), the server's peak RSS growth, and how chat closed it.

* ``cluster-{1x100,10x10}``: two chat nodes on one Redis (``redis``: a fresh
  redis-server, the members spread over the nodes) against one node with the
  memory broker (``memory``), always both, A B A B: one sender per room flat
  out with 8 messages in flight. Server CPU is summed over every server
  process of the run; the redis-server's is reported apart, per publish.

``--quick`` runs a tenth of the messages and sessions (the test suite's smoke
test); ``make bench`` runs everything with ``--baseline --pairs 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.processes import Client, PeakRss, deploy, rss_kib
from tests.e2e.harness import REPO

RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Scenario:
    """One measured situation; ``protocol`` is chat's (the baseline speaks plain text)."""

    name: str
    protocol: str = "chat.v1.batch"
    rooms: int = 1
    members: int = 100
    senders: int = 1
    messages: int = 500
    rate: float = 0.0
    echo: int = 0
    idle: int = 0
    stuck: bool = False
    limit_s: float = 60.0
    clients: int = 1
    #: Characters added to each message.
    pad: int = 0
    #: Extra ``CHAT_*`` settings for chat's server.
    env: dict[str, str] = field(default_factory=dict)
    #: Messages each sender has in flight (sent, not yet back to it).
    window: int = 16
    #: Chat nodes on one Redis for the ``redis`` target (members spread over them).
    nodes: int = 1
    #: What is measured, and what against (with ``--baseline``, or always for a cluster).
    targets: tuple[str, str] = ("chat", "naive")

    def tenth(self) -> Scenario:
        """The same shape with a tenth of the messages and sessions."""
        return replace(
            self,
            members=max(1, self.members // 10) if self.idle else self.members,
            idle=self.idle // 10,
            messages=max(1, self.messages // 10),
            echo=self.echo // 10,
        )


BEAT = {"CHAT_HEARTBEAT_INTERVAL": "1", "CHAT_HEARTBEAT_TIMEOUT": "2"}

CLUSTER: dict[str, Any] = {"window": 8, "nodes": 2, "targets": ("redis", "memory")}

SCENARIOS = {
    s.name: s
    for s in [
        Scenario("fanout-batch-1x100", senders=4, messages=500),
        Scenario("fanout-batch-10x10", rooms=10, members=10, senders=2, messages=500),
        Scenario("fanout-text-1x100", protocol="text", senders=4, messages=500),
        Scenario("fanout-text-10x10", protocol="text", rooms=10, members=10, senders=2),
        Scenario("latency-batch-1x100", messages=500, rate=50),
        Scenario("latency-text-1x100", protocol="text", messages=500, rate=50),
        Scenario("echo", protocol="text", members=1, echo=5000),
        # Idle for 3 s with a heartbeat every second: every JSON session answers pings.
        Scenario("idle-json", "chat.v1", rooms=100, members=50, idle=5000, clients=2, env=BEAT),
        Scenario("idle-text", "text", rooms=100, members=50, idle=5000, clients=2, env=BEAT),
        # 12 MB for the member that never reads: more than the kernel buffers
        # (4 MB sent, 4 KiB received) and chat's send queue hold.
        Scenario("stuck", members=20, messages=3000, rate=200, pad=4000, stuck=True, limit_s=30),
        Scenario("unstuck", members=20, messages=3000, rate=200, pad=4000, limit_s=30),
        # Two nodes on one Redis against one node with the memory broker: one
        # sender per room flat out, 8 messages in flight (issue 12's measurement).
        Scenario("cluster-1x100", messages=2000, **CLUSTER),
        Scenario("cluster-10x10", rooms=10, members=10, messages=1000, **CLUSTER),
    ]
}


# -- one run -------------------------------------------------------------------------


def connections(s: Scenario) -> list[dict[str, Any]]:
    found = []
    for room in range(s.rooms):
        for member in range(s.members):
            sender = member < s.senders
            stuck = s.stuck and member == s.members - 1
            found.append(
                {
                    "id": f"{room}-{member}",
                    "room": f"r{room}",
                    # Spread over the nodes; the first member (a sender) on the first.
                    "node": member,
                    "sender": sender and not s.idle and not s.echo,
                    "stuck": stuck,
                    "expect": 0 if (stuck or s.idle or s.echo) else s.senders * s.messages,
                }
            )
    return found


def run(target: str, s: Scenario) -> dict[str, Any]:
    """One run of ``s`` against a fresh deployment of ``target``; the figures of the table."""
    nodes = s.nodes if target == "redis" else 1
    with deploy(target, nodes, s.env) as deployment:
        clients: list[Client] = []
        try:
            pid = deployment.worker
            time.sleep(0.3)
            rss_before = rss_kib(pid)
            protocol = "text" if target == "naive" else s.protocol
            conns = connections(s)
            urls = [f"ws://127.0.0.1:{server.port}" for server in deployment.servers]
            for conn in conns:
                conn["url"] = urls[conn.pop("node") % len(urls)]
            shares = [conns[i :: s.clients] for i in range(s.clients)]
            for share in shares:
                spec = {
                    "url": urls[0],
                    "protocol": protocol,
                    "connections": share,
                    "messages": s.messages,
                    "rate": s.rate,
                    "window": s.window,
                    "echo": s.echo,
                    "idle": bool(s.idle),
                    "limit_s": s.limit_s,
                    "pad": s.pad,
                }
                clients.append(Client(spec))
            ready = [c.line() for c in clients]
            connect_s = max(r["connect_s"] for r in ready)
            time.sleep(1.0 if s.idle else 0.2)
            rss_ready = rss_kib(pid)
            cpu_before = deployment.cpu_s()
            redis_before = deployment.redis_cpu_s()
            started = time.monotonic()
            with PeakRss(pid) as peak:
                for c in clients:
                    c.say("go")
                if s.idle:
                    time.sleep(3)
                    rss_idle = rss_kib(pid)
                    for c in clients:
                        c.say("stop")
                results = [c.line() for c in clients]
                elapsed = time.monotonic() - started
                cpu = deployment.cpu_s() - cpu_before
                redis_cpu = deployment.redis_cpu_s() - redis_before
                rss_after = rss_kib(pid)
            # How chat closed sessions (the stuck member cannot read its close frame).
            closed_by = deployment.closed_by_reason()
        finally:
            for c in clients:
                c.stop()
    received = sum(r["received"] for r in results)
    samples = sorted(x for r in results for x in r["samples"])
    figures: dict[str, Any] = {
        "target": target,
        "elapsed_s": round(elapsed, 3),
        "timed_out": any(r.get("timed_out") for r in results),
        "received": received,
        "nodes": nodes,
        "server_cpu_s": round(cpu, 3),
        "client_cpu_s": round(sum(r["client_cpu_s"] for r in results), 3),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_peak_kib": peak.kib,
        "expected": sum(conn["expect"] for conn in conns),
        "closes": dict(sum((Counter(r["closes"]) for r in results), Counter())),
        # The server's own closes: slow consumers, rate limits (not clients leaving).
        "server_closed_by_reason": {
            k: v
            for k, v in closed_by.items()
            if v and k not in ("client_closed", "connection_lost")
        },
    }
    published = s.rooms * s.senders * s.messages
    if deployment.redis is not None:
        figures["redis_cpu_s"] = round(redis_cpu, 3)
        figures["redis_us_per_publish"] = round(redis_cpu / published * 1e6, 2)
    if received:
        figures["server_us_per_publish"] = round(cpu / published * 1e6, 1)
        figures["deliveries_per_s"] = round(received / elapsed)
        figures["server_us_per_delivery"] = round(cpu / received * 1e6, 2)
        figures["client_us_per_delivery"] = round(figures["client_cpu_s"] / received * 1e6, 2)
    if figures["received"] < figures["expected"] * 0.99:
        # More than 1% never arrived: their latency is unbounded, and so is p99.
        figures["stalled"] = True
        samples = []
    if samples:
        figures["p50_ms"] = round(samples[len(samples) // 2] / 1000, 2)
        figures["p99_ms"] = round(samples[int(len(samples) * 0.99)] / 1000, 2)
        figures["max_ms"] = round(samples[-1] / 1000, 2)
    if s.echo:
        figures["round_trips_per_s"] = round(results[0]["round_trips_per_s"])
    if s.idle:
        figures["kib_per_connection"] = round((rss_idle - rss_before) / s.idle, 2)
        figures["connects_per_s"] = round(s.idle / connect_s)
        figures["rss_ready_kib"] = rss_ready
    return figures


# -- the table -----------------------------------------------------------------------

#: The figure each kind of scenario is judged by.
KEY = {
    "fanout": "server_us_per_delivery",
    "latency": "p99_ms",
    "echo": "round_trips_per_s",
    "idle": "kib_per_connection",
    "stuck": "p99_ms",
    "unstuck": "p99_ms",
    "cluster": "server_us_per_delivery",
}


def key_of(name: str) -> str:
    return KEY[name.split("-")[0]]


@dataclass
class Row:
    """A scenario's runs of its two targets: ``a`` measured, ``b`` what it is compared with."""

    scenario: str
    targets: tuple[str, str] = ("chat", "naive")
    a: list[dict[str, Any]] = field(default_factory=list)
    b: list[dict[str, Any]] = field(default_factory=list)

    def ratios(self) -> list[float]:
        return pair_ratios(self.a, self.b, key_of(self.scenario))

    def runs(self) -> list[tuple[str, list[dict[str, Any]]]]:
        return list(zip(self.targets, (self.a, self.b), strict=True))


def pair_ratios(a: list[dict[str, Any]], b: list[dict[str, Any]], figure: str) -> list[float]:
    """``figure`` of each run in ``a`` over that of the run beside it in ``b``."""
    return [
        round(x[figure] / y[figure], 3)
        for x, y in zip(a, b, strict=False)
        if x.get(figure) and y.get(figure)
    ]


def median(runs: list[dict[str, Any]], figure: str) -> Any:
    values = [r[figure] for r in runs if r.get(figure) is not None]
    return round(statistics.median(values), 3) if values else None


def table(rows: list[Row]) -> str:
    out = [
        f"{'scenario':<22} {'figure':<24} {'A / B':>13} {'A (median)':>11} {'B (median)':>11}"
        f" {'ratio per pair':>24} {'median ratio':>13}"
    ]
    for row in rows:
        figure = key_of(row.scenario)
        a, b = median(row.a, figure), median(row.b, figure)
        ratios = row.ratios()
        out.append(
            f"{row.scenario:<22} {figure:<24} {'/'.join(row.targets):>13}"
            f" {a if a is not None else '-':>11} {b if b is not None else '-':>11}"
            f" {' '.join(str(r) for r in ratios) or '-':>24}"
            f" {round(statistics.median(ratios), 3) if ratios else '-':>13}"
        )
    by_name = {row.scenario: row for row in rows}
    if "stuck" in by_name and "unstuck" in by_name:
        stuck, unstuck = by_name["stuck"], by_name["unstuck"]
        for target, a, b in (
            ("chat", stuck.a, unstuck.a),
            ("naive", stuck.b, unstuck.b),
        ):
            ratios = pair_ratios(a, b, "p99_ms")
            if ratios:
                out.append(
                    f"{'stuck / unstuck':<22} {'p99_ms, ' + target:<24} {'':>13} {'':>11} {'':>11}"
                    f" {' '.join(map(str, ratios)):>24} {round(statistics.median(ratios), 3):>13}"
                )
    out.append("")
    out.append(
        f"{'scenario':<22} {'target':<6} {'deliv/s':>8} {'srv us/d':>9} {'cli us/d':>9}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} {'srv us/pub':>10} {'other':>22}"
    )
    for row in rows:
        for target, runs in row.runs():
            for r in runs:
                other = ""
                if "round_trips_per_s" in r:
                    other = f"{r['round_trips_per_s']} rt/s"
                if "kib_per_connection" in r:
                    other = f"{r['kib_per_connection']} KiB/c {r['connects_per_s']} c/s"
                if "redis_us_per_publish" in r:
                    other = f"redis {r['redis_us_per_publish']} us/pub"
                if r.get("timed_out"):
                    other += " TIMED OUT"
                if r.get("server_closed_by_reason"):
                    other += " " + ",".join(
                        f"{n}x{why}" for why, n in r["server_closed_by_reason"].items()
                    )
                if row.scenario.startswith(("stuck", "unstuck")):
                    other += (
                        f" got {100 * r['received'] / r['expected']:.0f}%"
                        f" rss +{r['rss_peak_kib'] - r['rss_before_kib']} KiB"
                    )
                out.append(
                    f"{row.scenario:<22} {target:<6} {r.get('deliveries_per_s', '-'):>8}"
                    f" {r.get('server_us_per_delivery', '-'):>9}"
                    f" {r.get('client_us_per_delivery', '-'):>9} {r.get('p50_ms', '-'):>7}"
                    f" {r.get('p99_ms', '-'):>7} {r.get('max_ms', '-'):>8}"
                    f" {r.get('server_us_per_publish', '-'):>10} {other:>22}".rstrip()
                )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--baseline", action="store_true", help="also run the naive app, A B A B")
    parser.add_argument("--pairs", type=int, default=3, help="runs per target (default 3)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the messages and sessions (a smoke test)"
    )
    parser.add_argument(
        "--idle", type=int, metavar="N", help="idle scenarios: N sessions instead of 5,000"
    )
    args = parser.parse_args()
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for name in names:
        scenario = SCENARIOS[name].tenth() if args.quick else SCENARIOS[name]
        row = Row(name, scenario.targets)
        # A cluster is always measured against one node: that is its point.
        against = args.baseline or scenario.targets[0] != "chat"
        if args.idle and scenario.idle:
            members = max(1, args.idle // scenario.rooms)
            scenario = replace(scenario, idle=members * scenario.rooms, members=members)
        for pair in range(args.pairs):
            row.a.append(run(row.targets[0], scenario))
            if against:
                row.b.append(run(row.targets[1], scenario))
            print(f"{name}: pair {pair + 1}/{args.pairs} done", file=sys.stderr, flush=True)
        rows.append(row)
    text = table(rows)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    path = args.json or RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "machine": machine(),
                "command": " ".join(sys.argv),
                "rows": [{"scenario": r.scenario, **dict(r.runs())} for r in rows],
                "table": text,
            },
            indent=2,
        )
    )
    print(f"\nresults: {path}")


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
