"""Profile chat's server processes under one bench scenario with py-spy (a tool, by hand).

    .venv/bin/python -m pip install py-spy      # not a dependency of chat
    .venv/bin/python -m bench.profile cluster-1x100 --target redis --out /tmp/prof

Starts the scenario's deployment as ``python -m bench`` does, then records
every Hypercorn worker with ``py-spy record`` while the load runs:
``<out>/<target>-<n>.txt`` (py-spy's ``raw`` collapsed stacks) and a top
table of the functions with the most samples, by self and by total time,
printed for each worker. Bounded by the scenario's ``limit_s``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.__main__ import SCENARIOS, connections
from bench.processes import Client, deploy, worker_pid


def top(raw: Path, count: int) -> str:
    """The ``count`` frames with the most samples: ``self%  total%  frame``."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack:
            continue
        n = int(n_text)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", f"{'self%':>6} {'total%':>6}  frame"]
    for frame, n in own.most_common(count):
        lines.append(f"{100 * n / samples:6.1f} {100 * total[frame] / samples:6.1f}  {frame}")
    lines.append(f"{'':>6} {'total%':>6}  frame (by total)")
    for frame, n in total.most_common(count):
        lines.append(f"{'':>6} {100 * n / samples:6.1f}  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--target", default="redis")
    parser.add_argument("--out", type=Path, default=Path("/tmp/chat-profile"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    record = [spy, "record", "--format", "raw", "--rate", "250", "--nonblocking"]
    s = SCENARIOS[args.scenario]
    args.out.mkdir(parents=True, exist_ok=True)
    nodes = s.nodes if args.target == "redis" else 1
    with deploy(args.target, nodes, s.env) as deployment:
        urls = [f"ws://127.0.0.1:{server.port}" for server in deployment.servers]
        conns = connections(s)
        for conn in conns:
            conn["url"] = urls[conn.pop("node") % len(urls)]
        spec = {
            "url": urls[0],
            "protocol": s.protocol,
            "connections": conns,
            "messages": s.messages,
            "window": s.window,
            "limit_s": s.limit_s,
        }
        client = Client(spec)
        try:
            client.line()
            time.sleep(0.2)
            raws = [args.out / f"{args.target}-{n}.txt" for n in range(len(deployment.servers))]
            spies = [
                subprocess.Popen(
                    [*record, "-o", str(raw), "--pid", str(worker_pid(server))],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for raw, server in zip(raws, deployment.servers, strict=True)
            ]
            time.sleep(1.0)  # py-spy attached
            client.say("go")
            result = client.line()
        finally:
            client.stop()
        for spy_process in spies:
            spy_process.send_signal(2)  # SIGINT: py-spy writes its file and exits
            spy_process.wait(timeout=30)
    print(f"{result['received']} deliveries in {result['elapsed_s']:.2f} s")
    for raw in raws:
        print(f"\n== {raw}\n{top(raw, args.top)}")


if __name__ == "__main__":
    main()
