"""A private nginx for tests, serving the shipped ``deploy/nginx/chat.conf``.

The site file is used as shipped, with two lines replaced: its ``listen``
port (a free one on 127.0.0.1) and its upstream ``server`` (the test's
hypercorn). Everything nginx writes (pid, logs, temp files) goes under the
test's directory, and it runs in the foreground, stopped by PID. Without an
``nginx`` binary the tests skip, saying why, unless ``REQUIRE_NGINX=1`` is
set (CI sets it), in which case they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "deploy" / "nginx" / "chat.conf"
#: Debian installs nginx here, outside a normal user's PATH.
CANDIDATES = ("nginx", "/usr/sbin/nginx")

MAIN_CONF = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/chat.conf;
}}
"""


def nginx_binary() -> str | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def need_nginx() -> str:
    """The nginx binary; skips (or fails, in CI) when none is installed."""
    binary = nginx_binary()
    if binary is not None:
        return binary
    if os.environ.get("REQUIRE_NGINX") == "1":
        pytest.fail("REQUIRE_NGINX=1 but no nginx installed")
    pytest.skip("nginx is not installed (apt-get install nginx)")


def render_site(upstream_port: int, listen_port: int) -> str:
    """The shipped site with its listen port and upstream replaced (each exactly once)."""
    site = SITE.read_text()
    site, listens = re.subn(r"(?m)^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{listen_port};", site)
    site, servers = re.subn(
        r"(?m)^(\s*)server 127\.0\.0\.1:8000;$", rf"\1server 127.0.0.1:{upstream_port};", site
    )
    # The shipped file changed shape: the test must change with it, not test something else.
    assert (listens, servers) == (1, 1), "deploy/nginx/chat.conf: listen 80 / server lines moved"
    return site


@dataclass
class Nginx:
    """One nginx master (and its worker) in front of ``upstream_port``."""

    directory: Path
    upstream_port: int
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def ws(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        binary = need_nginx()
        self.port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "chat.conf").write_text(render_site(self.upstream_port, self.port))
        # As root (CI), nginx's workers would switch to "nobody", who cannot read tmp_path.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = self.directory / "nginx.conf"
        conf.write_text(MAIN_CONF.format(dir=self.directory, user=user))
        self.process = subprocess.Popen(
            [binary, "-p", str(self.directory), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL to its process group if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
