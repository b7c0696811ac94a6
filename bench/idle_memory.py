"""Server memory per idle connection: RSS of the worker before and after N idle sessions.

    .venv/bin/python -m bench.idle_memory --connections 1000 [--protocol chat.v1|text] [--runs 3]

Starts its own ``hypercorn main:app`` on a free loopback port (compression
off, the default), opens N sessions spread over 10 rooms, lets them settle,
and reads the worker's VmRSS from /proc. Bounded: every run ends after the N
connections are measured (and at most ``--timeout`` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.harness import Server, open_ws, start_server


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def worker_pid(server: Server) -> int:
    """The spawned Hypercorn worker (not multiprocessing's resource tracker)."""
    found = subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=True
    )
    for pid in found.stdout.split():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return int(pid)
    raise RuntimeError("no Hypercorn worker found")


async def one_run(connections: int, protocol: str | None, limit_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as logs:
        server = start_server(Path(logs), {"CHAT_MAX_SESSIONS": str(connections + 100)})
        try:
            pid = worker_pid(server)
            clients = []
            # Warm up code paths (imports, first allocations) before the baseline.
            async with open_ws(
                server.ws("/ws/warmup"), subprotocols=[protocol] if protocol else None
            ):
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            before = rss_kib(pid)
            started = time.monotonic()
            async with asyncio.timeout(limit_s):
                for n in range(connections):
                    ws = await open_ws(
                        server.ws(f"/ws/room-{n % 10}"),
                        subprotocols=[protocol] if protocol else None,
                    ).__aenter__()
                    clients.append(ws)
            connect_s = time.monotonic() - started
            await asyncio.sleep(2)
            after = rss_kib(pid)
            for ws in clients:
                ws.transport.abort()
            return {
                "connections": connections,
                "protocol": protocol or "text",
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_connection": round((after - before) / connections, 2),
                "connects_per_s": round(connections / connect_s, 1),
            }
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--protocol", choices=["chat.v1", "text"], default="chat.v1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections * 2 + 200)), hard)
    )
    protocol = None if args.protocol == "text" else args.protocol
    results = [
        asyncio.run(one_run(args.connections, protocol, args.timeout)) for _ in range(args.runs)
    ]
    print(
        f"{'run':>3} {'protocol':>8} {'conns':>6} {'RSS before':>11}"
        f" {'RSS after':>10} {'KiB/conn':>9} {'conn/s':>8}"
    )
    for index, r in enumerate(results, 1):
        print(
            f"{index:>3} {r['protocol']:>8} {r['connections']:>6} {r['rss_before_kib']:>8} KiB"
            f" {r['rss_after_kib']:>7} KiB {r['kib_per_connection']:>9} {r['connects_per_s']:>8}"
        )
    median = statistics.median(r["kib_per_connection"] for r in results)
    print(f"median KiB per idle connection: {median}")
    if args.json:
        args.json.write_text(
            json.dumps({"runs": results, "median_kib_per_connection": median}, indent=2)
        )


if __name__ == "__main__":
    main()
