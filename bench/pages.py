"""The pages' weight and time to first paint against a local server (docs/pages.md).

    .venv/bin/python -m bench.pages [--runs 11]
    .venv/bin/python -m bench.pages --crowd 10000 --runs 3 --burst 600


Starts ``hypercorn main:app`` on a free loopback port, sums the bytes of each
page's HTML, CSS and JS (as served, and gzipped as served to a browser that
accepts gzip), then loads each page ``--runs`` times in Debian's headless
Chromium (a fresh browser context each time, so nothing is cached) and
prints the medians of ``first-paint`` and ``first-contentful-paint``
(``performance.getEntriesByType('paint')``) and of the load event.

With ``--crowd N`` it measures ``/monitor`` watching N live sessions that
churn instead (:mod:`bench.monitor`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.redis_server import free_port

#: Each page and the files it loads.
PAGES = {
    "/app": ["/app", "/static/pages.css", "/static/app.js", "/static/chat.js"],
    "/monitor": ["/monitor", "/static/pages.css", "/static/monitor.js"],
}


def weigh(base: str) -> None:
    for page, paths in PAGES.items():
        plain = sum(
            len(httpx.get(base + p, headers={"Accept-Encoding": "identity"}).content) for p in paths
        )
        gzipped = sum(
            int(httpx.get(base + p, headers={"Accept-Encoding": "gzip"}).headers["content-length"])
            for p in paths
        )
        print(f"{page}: {plain} bytes, {gzipped} gzipped ({len(paths)} files)")


def paint(base: str, runs: int) -> None:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        for page in PAGES:
            first: list[float] = []
            contentful: list[float] = []
            loaded: list[float] = []
            for _ in range(runs):
                context = browser.new_context()
                tab = context.new_page()
                tab.goto(base + page, wait_until="load")
                # A paint may come after the load event: wait for both entries.
                tab.wait_for_function("performance.getEntriesByType('paint').length >= 2")
                entries = dict(
                    tab.evaluate(
                        "performance.getEntriesByType('paint').map(e => [e.name, e.startTime])"
                    )
                )
                first.append(float(entries["first-paint"]))
                contentful.append(float(entries["first-contentful-paint"]))
                loaded.append(
                    float(
                        tab.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                    )
                )
                context.close()
            print(
                f"{page}: first-paint median {statistics.median(first):.0f} ms"
                f" (min {min(first):.0f}, max {max(first):.0f}),"
                f" first-contentful-paint median {statistics.median(contentful):.0f} ms,"
                f" load median {statistics.median(loaded):.0f} ms, {runs} runs"
            )
        browser.close()


def crowded(args: argparse.Namespace) -> None:
    from bench import monitor

    if args.trace:
        monitor.TRACE.append(args.trace)
    options = monitor.Options(
        args.crowd,
        args.crowds,
        args.rooms,
        args.close,
        args.wake,
        args.runs,
        args.watch,
        args.burst,
        args.idle_after,
    )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    found = monitor.run(options)
    summary = monitor.medians(found["runs"])
    for key, value in summary.items():
        print(f"{key}: {value}")
    if args.json:
        record = {
            "command": "python -m bench.pages " + " ".join(sys.argv[1:]),
            "uptime": [
                load,
                subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            ],
            "medians": summary,
            **found,
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    crowd = parser.add_argument_group("the monitor at scale (bench/monitor.py)")
    crowd.add_argument("--crowd", type=int, default=0, metavar="N", help="live sessions")
    crowd.add_argument("--crowds", type=int, default=2, help="load processes (default 2)")
    crowd.add_argument("--rooms", type=int, default=100, help="rooms (default 100)")
    crowd.add_argument("--close", type=float, default=5, help="sessions replaced per second")
    crowd.add_argument("--wake", type=float, default=5, help="idle sessions woken per second")
    crowd.add_argument("--watch", type=float, default=15, help="seconds per window")
    crowd.add_argument("--burst", type=int, default=0, help="sessions replaced at once per run")
    crowd.add_argument("--idle-after", type=float, default=20, help="CHAT_IDLE_AFTER")
    crowd.add_argument("--json", type=Path, help="write every run here")
    crowd.add_argument("--trace", type=Path, help="a Chrome trace of the last window")
    args = parser.parse_args()
    if args.crowd:
        crowded(args)
        return
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    command = [sys.executable, "-m", "hypercorn", "-b", f"127.0.0.1:{port}", "main:app"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        weigh(base)
        paint(base, args.runs)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
