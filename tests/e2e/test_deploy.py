"""deploy/systemd/chat.service without systemd: verified, and its commands run as it runs them.

The unit is read with configparser; its ``ExecStartPre`` and ``ExecStart``
run with the variables of an env file made from deploy/systemd/chat.env
(``${VAR}`` expanded as systemd does), in the repository, with the test's
interpreter in place of /opt/chat/.venv. ``systemd-analyze verify`` checks
the unit itself where it is installed.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from chat.settings import load_settings
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "chat.service"
ENV_FILE = REPO / "deploy" / "systemd" / "chat.env"
VENV_BIN = "/opt/chat/.venv/bin/"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def env_file(**overrides: str) -> dict[str, str]:
    """The shipped env file's ``KEY=value`` lines, with ``overrides``."""
    values: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return {**values, **overrides}


def command(line: str, variables: Mapping[str, str]) -> list[str]:
    """An ``Exec*`` line as systemd runs it: ``${VAR}`` expanded, the venv replaced by ours."""
    expanded = re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], line)
    words = shlex.split(expanded)
    assert words[0].startswith(VENV_BIN), words[0]
    words[0] = str(Path(sys.executable).parent / words[0].removeprefix(VENV_BIN))
    return words


def environment(variables: Mapping[str, str]) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CHAT_")}
    return {**clean, **variables}


def service() -> configparser.SectionProxy:
    return unit()["Service"]


@contextmanager
def started(variables: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """ExecStart running until ``/readyz`` answers 200 on ``BIND``; killed (group) on exit."""
    process = subprocess.Popen(
        command(service()["ExecStart"], variables),
        cwd=REPO,
        env=environment(variables),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"ExecStart exited with {process.returncode}"
            try:
                if httpx.get(f"http://{variables['BIND']}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ExecStart did not become ready"
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        # Workers of a parent that is gone must not outlive the test.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def workers_of(pid: int) -> list[int]:
    """Hypercorn's worker processes (multiprocessing spawns) whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("REQUIRE_SYSTEMD") == "1":
            pytest.fail("REQUIRE_SYSTEMD=1 but systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    (tmp_path / "chat.env").write_text(ENV_FILE.read_text())
    rendered = (
        UNIT.read_text()
        .replace(VENV_BIN, f"{Path(sys.executable).parent}/")
        .replace("/opt/chat", str(REPO))
        .replace("/etc/chat/chat.env", str(tmp_path / "chat.env"))
    )
    (tmp_path / "chat.service").write_text(rendered)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "chat.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for a directive it ignores: any remark is a failure here.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_settings_check_runs_first_and_refuses_a_bad_setting() -> None:
    pre = command(service()["ExecStartPre"], env_file())
    assert pre[1:] == ["-m", "chat", "check", "--quiet"]
    ok = subprocess.run(pre, cwd=REPO, env=environment(env_file()), capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = env_file(CHAT_TRUSTED_PROXIES="nginx")
    refused = subprocess.run(pre, cwd=REPO, env=environment(bad), capture_output=True, timeout=60)
    assert refused.returncode == 2
    assert b"CHAT_TRUSTED_PROXIES: 'nginx' is not an IP address" in refused.stderr


def test_exec_start_serves_with_the_env_files_workers_and_stops_cleanly_on_sigterm() -> None:
    variables = env_file(BIND=f"127.0.0.1:{free_port()}", WORKERS="2")
    with started(variables) as process:
        assert len(workers_of(process.pid)) == 2
        # KillMode=mixed: the stop signal goes to Hypercorn's parent alone.
        assert service()["KillMode"] == "mixed"
        process.send_signal(signal.Signals[service()["KillSignal"]])
        assert process.wait(timeout=float(service()["TimeoutStopSec"])) == 0


def test_one_workers_crash_ends_hypercorn_with_status_0_so_restart_is_always() -> None:
    variables = env_file(BIND=f"127.0.0.1:{free_port()}", WORKERS="2")
    with started(variables) as process:
        victim, survivor = workers_of(process.pid)
        os.kill(victim, signal.SIGKILL)
        # Hypercorn 0.18 stops the other worker and exits; its status is the survivor's.
        assert process.wait(timeout=15) == 0
        # The other worker was told to stop, and does: no orphan goes on serving.
        deadline = time.monotonic() + 10
        while running(survivor):
            assert time.monotonic() < deadline, "the surviving worker did not exit"
            time.sleep(0.05)
    # Restart=on-failure would leave the service dead after that exit 0.
    assert service()["Restart"] == "always"


def test_the_stop_timeout_outlasts_the_drain_and_hypercorns_grace() -> None:
    drain = load_settings(env_file()).drain_timeout
    config = tomllib.loads((REPO / "config" / "hypercorn.toml").read_text())
    timeout = float(service()["TimeoutStopSec"])
    assert timeout > drain + 1
    assert timeout > config["graceful_timeout"]
    assert service()["KillSignal"] == "SIGTERM"
