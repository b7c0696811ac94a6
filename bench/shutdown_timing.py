"""Shutdown timings: signal to the last client's close, and signal to process exit.

    .venv/bin/python -m bench.shutdown_timing [--python .venv-py312/bin/python ...] [--runs 3]

For each interpreter (default: this one) and worker count (default and -w 2),
starts ``hypercorn main:app`` on a free loopback port, opens 20 sessions (half
plain text, half ``chat.v1``), sends SIGTERM to the main PID and records what
the clients saw. Every run is bounded by the server's own drain timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.e2e.harness import start_server
from tests.e2e.test_shutdown import open_sessions, signal_and_watch


async def one_run(
    python: str, workers: list[str], sessions: int
) -> tuple[float, float, set[int | None], int]:
    with tempfile.TemporaryDirectory() as logs:
        server = start_server(Path(logs), {"CHAT_DRAIN_TIMEOUT": "2"}, workers, python=python)
        try:
            clients = await open_sessions(server, sessions)
            outcome = await signal_and_watch(server, clients, signal.SIGTERM)
            seen = outcome.seen
            codes = {s.code for s in seen}
            return max(s.closed_after for s in seen), outcome.exited_after, codes, outcome.status
        finally:
            server.stop()


def version(python: str) -> str:
    return subprocess.run(
        [python, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--python", action="append", help="interpreter with chat installed (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    pythons = args.python or [sys.executable]
    print(
        f"{'python':<15} {'workers':<8} {'signal->last close (s)':>24}"
        f" {'signal->exit (s)':>18}  codes, exit status"
    )
    for python in pythons:
        for workers in ([], ["-w", "2"]):
            runs = [asyncio.run(one_run(python, workers, args.sessions)) for _ in range(args.runs)]
            closes = [r[0] for r in runs]
            exits = [r[1] for r in runs]
            codes = set().union(*(r[2] for r in runs))
            statuses = {r[3] for r in runs}
            print(
                f"{version(python):<15} {' '.join(workers) or 'default':<8}"
                f" {statistics.median(closes):>10.3f} (max {max(closes):.3f})"
                f" {statistics.median(exits):>8.3f} (max {max(exits):.3f})"
                f"  {sorted(c for c in codes if c is not None)}, {sorted(statuses)}"
            )


if __name__ == "__main__":
    main()
