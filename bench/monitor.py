"""``/monitor`` watching 10,000 live sessions that churn (``python -m bench.pages --crowd``).

    .venv/bin/python -m bench.pages --crowd 10000 --runs 3 --burst 600 [--watch 15] [--json F]

One ``hypercorn main:app`` on a free loopback port (``CHAT_MAX_SESSIONS`` and
the open-file limit raised), a crowd of ``--crowd`` ``chat.v1`` sessions in
``--rooms`` rooms held by ``--crowds`` load processes (``bench.crowd``,
picows). Once they are all connected, a first monitor watches them go idle
(``CHAT_IDLE_AFTER`` after they connected: the first page's 100 rows
together), and the crowd churns until the end: every second ``--close``
sessions close (and as many new ones open) and ``--wake`` idle sessions send
a message (active again, idle again ``CHAT_IDLE_AFTER`` later), so the
monitor receives a steady stream of changes. Then, ``--runs`` times:

1. ``--watch`` seconds with no monitor: the server's CPU (every process of
   it, from ``/proc/<pid>/stat``);
2. ``/monitor`` opened in a fresh context of Debian's headless Chromium:
   first paint, and the first full render of the sessions table (the first
   frame after its 100 rows are in);
3. ``--watch`` seconds watching: the server's CPU again, the events and
   bytes per second the page received from ``/status/events`` (counted by a
   wrapper around its ``fetch``), the main thread's long tasks
   (``PerformanceObserver('longtask')``, 50 ms and more of wall time), the
   main thread's CPU from a Chrome trace of the window (its busy share, its
   longest task and the tasks of 50 ms CPU or more: on a shared machine wall
   time also counts the time the browser waited for a core), and through the
   DevTools protocol (after a forced garbage collection) the JS heap and the
   DOM's node count at the start and end of the window; ``/healthz``'s
   latency every 0.2 s in both windows (the server's event loop).

With ``--burst N``, each run's window also replaces ``N`` sessions at once
(more than one ``sessions`` event holds: the stream says ``resync``).
Prints the medians; ``--json`` writes every run and the idle wave,
``--trace`` the Chrome trace of the last window. Everything is bounded in
time and every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.processes import LineProcess, children, cpu_s
from tests.e2e.harness import Server, start_server

#: Rows of the monitor's sessions table (``PAGE`` in chat/static/monitor.js).
TABLE_ROWS = 100
#: Seconds between two ``/healthz`` probes in a window.
PROBE_EVERY = 0.2
#: The longest wait for the crowd to connect.
CONNECT_TIMEOUT = 300.0

#: Injected before the page's own scripts: counts what the event stream brings and
#: notes long tasks and when the sessions table first holds its rows.
PROBE = """
(() => {
  const m = (window.__bench = { longtasks: [], bytes: 0, events: {}, tableAt: null });
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) m.longtasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
  const original = window.fetch;
  window.fetch = async (input, init) => {
    const response = await original(input, init);
    if (!String(input).includes("/status/events") || !response.body) return response;
    const decoder = new TextDecoder();
    let tail = "";
    const counting = new TransformStream({
      transform(chunk, controller) {
        m.bytes += chunk.byteLength;
        const text = tail + decoder.decode(chunk, { stream: true });
        const cut = text.lastIndexOf("\\n") + 1;
        for (const found of text.slice(0, cut).matchAll(/^event: (\\w+)$/gm)) {
          m.events[found[1]] = (m.events[found[1]] || 0) + 1;
        }
        tail = text.slice(cut);
        if (tail.length > 64) tail = tail.startsWith("event: ") ? tail : "";
        controller.enqueue(chunk);
      },
    });
    const { status, statusText, headers } = response;
    return new Response(response.body.pipeThrough(counting), { status, statusText, headers });
  };
  document.addEventListener("DOMContentLoaded", () => {
    const tbody = document.getElementById("sessions");
    const seen = new MutationObserver(() => {
      if (tbody.childElementCount < %(rows)d) return;
      seen.disconnect();
      requestAnimationFrame(() => setTimeout(() => (m.tableAt = performance.now())));
    });
    seen.observe(tbody, { childList: true });
  });
})();
"""


@dataclass(frozen=True)
class Options:
    crowd: int
    crowds: int
    rooms: int
    close: float
    wake: float
    runs: int
    watch: float
    burst: int
    idle_after: float


class Crowd(LineProcess):
    """One ``bench.crowd`` process."""

    module = "bench.crowd"

    def stop(self) -> dict[str, Any]:
        try:
            self.say("stop")
            return self.line(30)
        except (OSError, RuntimeError):
            return {}
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)


def server_cpu(server: Server) -> float:
    """CPU seconds of the server's processes (Hypercorn's parent and its worker)."""
    pid = server.process.pid
    return sum(cpu_s(p) for p in [pid, *children(pid)])


def live(server: Server) -> int:
    counts = httpx.get(server.http("/status"), timeout=60).json()["sessions"]
    return int(counts["connecting"] + counts["active"] + counts["idle"])


def heap(cdp: Any) -> dict[str, float]:
    """The page's JS heap and DOM nodes after a forced garbage collection."""
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {
        "heap_mb": round(metrics["JSHeapUsedSize"] / 2**20, 2),
        "nodes": metrics["Nodes"],
        "listeners": metrics["JSEventListeners"],
    }


class Window:
    """A measured window: the server's CPU (cores) and its ``/healthz`` latency, sampled
    every :data:`PROBE_EVERY` seconds by a thread; the burst, if any, a third of the way."""

    def __init__(self, server: Server, crowds: list[Crowd], o: Options) -> None:
        self.server = server
        self.crowds = crowds
        self.o = o
        self.latencies: list[float] = []
        self._stop = threading.Event()

    def _probe(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(PROBE_EVERY):
                began = time.monotonic()
                with contextlib.suppress(httpx.HTTPError):
                    client.get(self.server.http("/healthz"))
                    self.latencies.append(time.monotonic() - began)

    def run(self, wait: Callable[[float], object]) -> dict[str, float]:
        """Measure for ``o.watch`` seconds, waiting with ``wait(seconds)``."""
        prober = threading.Thread(target=self._probe, daemon=True)
        cpu, began = server_cpu(self.server), time.monotonic()
        prober.start()
        if self.o.burst:
            wait(self.o.watch / 3)
            for crowd in self.crowds:
                crowd.say(f"burst {self.o.burst // len(self.crowds)}")
            for crowd in self.crowds:
                crowd.line(120)
        wait(max(0.0, self.o.watch - (time.monotonic() - began)))
        self._stop.set()
        prober.join()
        seconds = time.monotonic() - began
        late = sorted(self.latencies) or [0.0]
        return {
            "cpu": round((server_cpu(self.server) - cpu) / seconds, 3),
            "healthz_p50_ms": round(1000 * statistics.median(late), 1),
            "healthz_max_ms": round(1000 * late[-1], 1),
        }


#: Where ``watch`` also writes the Chrome trace of its window (``--trace``).
TRACE: list[Path] = []
#: Trace categories: the main thread's tasks with their CPU time (``tdur``).
CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "toplevel"]


def main_thread(trace: bytes) -> dict[str, Any]:
    """The renderer main thread's tasks in a Chrome trace, by CPU time (not wall time,
    which on a shared machine counts the time the browser waited for a core)."""
    events = json.loads(trace)
    events = events["traceEvents"] if isinstance(events, dict) else events
    scripts = [e for e in events if e.get("name") == "FunctionCall"]
    if not scripts:
        return {"main_cpu_pct": 0.0, "longest_cpu_ms": 0, "long_cpu_tasks": 0}
    thread = (scripts[0]["pid"], scripts[0]["tid"])
    tasks = [
        e
        for e in events
        if e.get("ph") == "X"
        and e["name"] == "ThreadControllerImpl::RunTask"
        and (e["pid"], e["tid"]) == thread
    ]
    cpu = [e.get("tdur", 0) / 1000 for e in tasks]
    span = (max(e["ts"] + e["dur"] for e in tasks) - min(e["ts"] for e in tasks)) / 1e6
    return {
        "main_cpu_pct": round(100 * sum(cpu) / 1000 / span, 1),
        "longest_cpu_ms": round(max(cpu)),
        "long_cpu_tasks": sum(1 for ms in cpu if ms >= 50),
    }


def watch(browser: Any, base: str, window: Callable[[Callable[[float], object]], Any]) -> Any:
    """Open ``/monitor`` in a fresh context, wait for its sessions table, then run
    ``window(wait)`` while watching; the page's figures, ``window``'s result in ``server``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.add_init_script(PROBE % {"rows": TABLE_ROWS})
    page.goto(base + "/monitor", wait_until="load", timeout=120_000)
    # Polled from here: the page's CSP forbids the eval that wait_for_function needs.
    deadline = time.monotonic() + 30
    while not page.evaluate(
        "window.__bench.tableAt !== null && performance.getEntriesByType('paint').length >= 2"
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the monitor did not render its sessions table within 30 s")
        page.wait_for_timeout(20)
    paints = dict(
        page.evaluate("performance.getEntriesByType('paint').map(e => [e.name, e.startTime])")
    )
    table_ms = float(page.evaluate("window.__bench.tableAt"))
    # The page's two reads before its table: how long the server took to answer them.
    fetched = [
        (path, begin, end)
        for path, begin, end in page.evaluate(
            "performance.getEntriesByType('resource').map((e) => "
            "[new URL(e.name).pathname + new URL(e.name).search, e.startTime, e.responseEnd])"
        )
        if path == "/status" or path.startswith("/status/sessions?limit=100&offset=0")
    ]
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    start_heap = heap(cdp)
    start = page.evaluate(
        "({t: performance.now(), bytes: window.__bench.bytes, events: {...window.__bench.events}})"
    )
    browser.start_tracing(page=page, categories=CATEGORIES)
    server = window(lambda seconds: page.wait_for_timeout(seconds * 1000))
    trace = browser.stop_tracing()
    if TRACE:
        TRACE[0].write_bytes(trace)
    end = page.evaluate(
        "({t: performance.now(), bytes: window.__bench.bytes, events: {...window.__bench.events},"
        " longtasks: window.__bench.longtasks,"
        " rows: document.getElementById('sessions').childElementCount})"
    )
    end_heap = heap(cdp)
    context.close()

    seconds = (end["t"] - start["t"]) / 1000
    events = {k: v - start["events"].get(k, 0) for k, v in end["events"].items()}
    in_window = [d for at, d in end["longtasks"] if at >= start["t"]]
    at_load = [d for at, d in end["longtasks"] if at < start["t"]]
    return {
        "first_paint_ms": round(paints["first-paint"]),
        "table_ms": round(table_ms),
        "reads_ms": {name: [round(begin), round(end)] for name, begin, end in fetched},
        "load_longtasks": len(at_load),
        "load_longest_ms": round(max(at_load, default=0)),
        "events_per_s": round(sum(events.values()) / seconds, 2),
        "events": events,
        "kib_per_s": round((end["bytes"] - start["bytes"]) / seconds / 1024, 1),
        "longtasks": len(in_window),
        "longest_ms": round(max(in_window, default=0)),
        "longtasks_ms": [round(d) for d in in_window],
        **main_thread(trace),
        "heap_mb": [start_heap["heap_mb"], end_heap["heap_mb"]],
        "dom_nodes": [start_heap["nodes"], end_heap["nodes"]],
        "rows": end["rows"],
        "server": server,
    }


def watch_once(browser: Any, base: str, server: Server, crowds: list[Crowd], o: Options) -> Any:
    """One run: a window without a monitor, then one with a fresh monitor page."""
    none = Window(server, crowds, o).run(time.sleep)
    found = watch(browser, base, Window(server, crowds, o).run)
    one = found.pop("server")
    return {
        **found,
        "server_cpu_none": none["cpu"],
        "server_cpu_one": one["cpu"],
        "healthz_max_ms_none": none["healthz_max_ms"],
        "healthz_max_ms_one": one["healthz_max_ms"],
        "healthz_p50_ms_one": one["healthz_p50_ms"],
    }


def run(o: Options) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < o.crowd + 1000:
        raise SystemExit(f"the open-file limit ({hard}) is too low for {o.crowd} sessions")
    env = {
        "CHAT_MAX_SESSIONS": str(o.crowd + 1000),
        "CHAT_MAX_SESSIONS_PER_USER": "0",
        "CHAT_IDLE_AFTER": str(o.idle_after),
        "CHAT_IDLE_TIMEOUT": "0",
        "CHAT_LOG_LEVEL": "WARNING",
    }
    results: list[dict[str, Any]] = []
    crowds: list[Crowd] = []
    finals: list[dict[str, Any]] = []
    wave: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as logs:
        server = start_server(Path(logs), env)
        base = server.http("")
        try:
            share = o.crowd // o.crowds
            for n in range(o.crowds):
                spec = {
                    "url": server.ws(""),
                    "count": share,
                    "first": n * 1_000_000,
                    "rooms": o.rooms,
                    "close_per_s": o.close / o.crowds,
                    "wake_per_s": o.wake / o.crowds,
                    "limit_s": CONNECT_TIMEOUT + o.runs * (2 * o.watch + 60) + 120,
                    "seed": n + 1,
                }
                crowds.append(Crowd(spec))
            ready = [crowd.line(CONNECT_TIMEOUT) for crowd in crowds]
            print(f"crowd ready: {ready}", file=sys.stderr, flush=True)
            with sync_playwright() as playwright:
                executable = shutil.which("chromium") or "/usr/bin/chromium"
                browser = playwright.chromium.launch(executable_path=executable)
                try:
                    # The sessions go idle as they connected (the first page's together):
                    # watched once; the runs then see the steady churn only.
                    wave = watch(browser, base, lambda wait: wait(o.idle_after + 5))
                    print(f"idle wave: {json.dumps(wave)}", file=sys.stderr, flush=True)
                    print(f"live sessions: {live(server)}", file=sys.stderr, flush=True)
                    for n in range(o.runs):
                        result = watch_once(browser, base, server, crowds, o)
                        result["live"] = live(server)
                        results.append(result)
                        print(f"run {n + 1}/{o.runs}: {json.dumps(result)}", file=sys.stderr)
                finally:
                    browser.close()
        finally:
            finals = [crowd.stop() for crowd in crowds]
            server.stop()
    return {"wave": wave, "runs": results, "crowds": finals}


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def m(key: str, index: int | None = None) -> float:
        values = [r[key] if index is None else r[key][index] for r in runs]
        return float(statistics.median(values))

    def spread(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{m(key):g} ({min(values):g}-{max(values):g})"

    return {
        "first paint, ms": spread("first_paint_ms"),
        "sessions table rendered, ms": spread("table_ms"),
        "long tasks while loading": spread("load_longtasks"),
        "longest while loading, ms": spread("load_longest_ms"),
        "events/s": spread("events_per_s"),
        "KiB/s": spread("kib_per_s"),
        "long tasks while watching": spread("longtasks"),
        "longest while watching, ms": spread("longest_ms"),
        "main thread CPU while watching, %": spread("main_cpu_pct"),
        "longest task's CPU, ms": spread("longest_cpu_ms"),
        "tasks of 50 ms CPU or more": spread("long_cpu_tasks"),
        "JS heap, MB (start, end)": (m("heap_mb", 0), m("heap_mb", 1)),
        "DOM nodes (start, end)": (m("dom_nodes", 0), m("dom_nodes", 1)),
        "server CPU, no monitor": spread("server_cpu_none"),
        "server CPU, one monitor": spread("server_cpu_one"),
        "/healthz max, no monitor, ms": spread("healthz_max_ms_none"),
        "/healthz max, one monitor, ms": spread("healthz_max_ms_one"),
        "/healthz median, one monitor, ms": spread("healthz_p50_ms_one"),
        "live sessions": spread("live"),
    }
