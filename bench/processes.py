"""The processes of a bench run: the servers under test, their CPU and RSS, the clients.

A run measures a :class:`Deployment`: one server (chat or the naive app), or
a cluster of chat nodes on one private ``redis-server``. Every process is
started on a free loopback port and stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.harness import REPO, Server, start_server
from tests.redis_server import RedisServer

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The PIDs of ``pid``'s children (none if it has exited)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in found.stdout.split()]


def worker_pid(server: Server) -> int:
    for pid in children(server.process.pid):
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise RuntimeError("no Hypercorn worker")


def cpu_s(pid: int) -> float:
    """User and system CPU time of ``pid`` so far (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start(target: str, logs: Path, extra: dict[str, str]) -> Server:
    env = {
        "CHAT_RATE": "1000000",
        "CHAT_BURST": "1000000",
        "CHAT_MAX_SESSIONS": "100000",
        "CHAT_MAX_SESSIONS_PER_USER": "0",
        "CHAT_LOG_LEVEL": "WARNING",
        **extra,
    }
    app = "bench.naive_app:app" if target == "naive" else "main:app"
    return start_server(logs, env, app=app)


@dataclass
class Deployment:
    """The servers of one run: ``servers[i]`` serves the connections with ``node == i``."""

    target: str
    servers: list[Server]
    redis: RedisServer | None = None
    #: Every server process (Hypercorn's parents and workers), read once all started.
    pids: list[int] = field(default_factory=list)

    @property
    def worker(self) -> int:
        """The first server's worker: the one whose RSS is reported."""
        return worker_pid(self.servers[0])

    def cpu_s(self) -> float:
        """CPU time of every server process so far."""
        return sum(cpu_s(pid) for pid in self.pids)

    def redis_cpu_s(self) -> float:
        """CPU time of the redis-server so far (0 without one)."""
        if self.redis is None or self.redis.process is None:
            return 0.0
        return cpu_s(self.redis.process.pid)

    def closed_by_reason(self) -> dict[str, int]:
        """How chat's servers closed sessions, summed (empty for the naive app)."""
        if self.target == "naive":
            return {}
        total: dict[str, int] = {}
        for server in self.servers:
            for why, n in server.json("/status")["totals"]["closed_by_reason"].items():
                total[why] = total.get(why, 0) + n
        return total


@contextlib.contextmanager
def deploy(target: str, nodes: int, env: dict[str, str]) -> Iterator[Deployment]:
    """Start ``target``: ``chat`` or ``naive`` (one server; ``memory`` is chat too), or
    ``redis``: a fresh redis-server and ``nodes`` chat nodes on it. Stops them all."""
    with tempfile.TemporaryDirectory() as logs:
        deployment = Deployment(target, [])
        try:
            if target == "redis":
                deployment.redis = RedisServer(Path(logs))
                deployment.redis.start()
                for n in range(nodes):
                    cluster = {"CHAT_BROKER_URL": deployment.redis.url, "CHAT_NODE_ID": f"n{n}"}
                    deployment.servers.append(start(target, Path(logs), {**env, **cluster}))
            else:
                deployment.servers.append(start(target, Path(logs), env))
            deployment.pids = [
                pid
                for server in deployment.servers
                for pid in [server.process.pid, *children(server.process.pid)]
            ]
            yield deployment
        finally:
            for server in deployment.servers:
                server.stop()
            if deployment.redis is not None:
                deployment.redis.stop()


class PeakRss:
    """The highest RSS of ``pid`` seen while in the ``with`` block (sampled every 0.1 s)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.kib = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError):
                self.kib = max(self.kib, rss_kib(self.pid))


class LineProcess:
    """A ``python -m <module>`` child spoken to in lines: the JSON spec first, then
    words; it answers with JSON lines."""

    module = ""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.say(json.dumps(spec))

    def say(self, word: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()

    def line(self, timeout: float | None = None) -> dict[str, Any]:
        """The next answer; RuntimeError if the child died (or said nothing in ``timeout``)."""
        assert self.process.stdout is not None
        if timeout is not None:
            ready, _, _ = select.select([self.process.stdout], [], [], timeout)
            if not ready:
                raise RuntimeError(f"{self.module} said nothing in {timeout} s")
        text = self.process.stdout.readline()
        if not text:
            raise RuntimeError(f"{self.module} died")
        found: dict[str, Any] = json.loads(text)
        return found


class Client(LineProcess):
    """One ``bench.client`` process."""

    module = "bench.client"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
