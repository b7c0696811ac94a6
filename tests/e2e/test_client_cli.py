"""``python -m chat client`` against the real server, as a script and as a line chat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import jwt
import orjson

from tests.e2e.conftest import StartServer, keep_secret
from tests.e2e.harness import REPO

CLIENT = [sys.executable, "-m", "chat", "client"]


def read_json_line(stream: IO[str], timeout: float = 10.0) -> Any:
    """The next line of ``stream`` as JSON; fails the test after ``timeout`` seconds."""
    pool = ThreadPoolExecutor(1)
    try:
        line = pool.submit(stream.readline).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False)  # a line that never came: the caller kills the process
    assert line, "the process ended its output"
    return orjson.loads(line)


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLIENT, *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_listener_prints_json_lines_of_what_a_sender_sends(start: StartServer) -> None:
    server = start()
    url = server.ws("/ws/lobby")
    listener = subprocess.Popen(
        [*CLIENT, url, "--user", "bob", "--listen", "--json", "--count", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        first = read_json_line(listener.stdout)
        assert (first["type"], first["state"]) == ("state_changed", "connecting")
        # It is connected (welcomed, in the room) once it says so: send after that.
        connected = read_json_line(listener.stdout)
        assert (connected["type"], connected["state"]) == ("state_changed", "connected")
        assert server.json("/status")["sessions"]["active"] == 1
        sent = run(url, "--user", "ann", "--send", "hi", "--send", "there", "--json")
        assert sent.returncode == 0, sent.stderr
        acks = [orjson.loads(line) for line in sent.stdout.splitlines()]
        assert [(a["room"], a["seq"]) for a in acks] == [("lobby", 1), ("lobby", 2)]
        out, err = listener.communicate(timeout=20)
    finally:
        listener.kill()
    assert listener.returncode == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    messages = [(m["user"], m["text"], m["seq"]) for m in lines if m["type"] == "message"]
    assert messages == [("ann", "hi", 1), ("ann", "there", 2)]
    assert [m["id"] for m in lines if m["type"] == "message"] == [a["id"] for a in acks]
    assert {"type": "presence_event", "room": "lobby", "event": "join", "user": "ann"} in lines


def test_the_line_chat_sends_joins_shows_members_and_quits(start: StartServer) -> None:
    server = start()
    typed = "hello\n/join games\n/who\n/leave games\n/quit\n"
    chat = run(server.ws("/ws/lobby"), "--user", "cy", stdin=typed)
    assert chat.returncode == 0, chat.stderr
    lines = chat.stdout.splitlines()
    assert f"* connected to {server.ws('/ws/lobby')}" in lines
    assert "* joined #lobby: cy" in lines
    assert "* #games: cy" in lines
    assert "* left #games" in lines
    shown = [line for line in lines if line.endswith("<cy> hello")]
    assert len(shown) == 1
    assert shown[0].startswith("[")  # its time: [HH:MM:SS]


def test_a_refusal_no_retry_can_change_exits_1_with_the_reason(start: StartServer) -> None:
    server = start({"CHAT_JWT_SECRET": "x" * 40})
    refused = run(server.ws("/ws/lobby"), "--send", "hi")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "chat client: refused: 401"


def test_a_bad_url_exits_2_without_a_traceback() -> None:
    bad = run("http://127.0.0.1:1/ws/lobby", "--send", "hi")
    assert bad.returncode == 2
    assert "is not a ws:// or wss:// URL of /ws/{room}" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_token_comes_from_a_file_or_the_environment_instead_of_the_command_line(
    start: StartServer, tmp_path: Path
) -> None:
    secret = keep_secret("cli-token-file-secret-0123456789abcdefghijklmn")
    server = start({"CHAT_JWT_SECRET": secret})
    url = server.ws("/ws/lobby")
    minted = keep_secret(
        jwt.encode({"sub": "filed", "exp": int(time.time()) + 600}, secret, "HS256")
    )
    token_file = tmp_path / "token"
    token_file.write_text(f"{minted}\n")
    by_file = run(url, "--token-file", str(token_file), "--send", "from a file", "--json")
    assert by_file.returncode == 0, by_file.stderr
    environ = {**os.environ, "CHAT_CLIENT_TOKEN": minted}
    by_env = run(url, "--send", "from the environment", "--json", env=environ)
    assert by_env.returncode == 0, by_env.stderr
    # Both accepted by a server that refuses a handshake without a token (401).
    assert [orjson.loads(r.stdout)["seq"] for r in (by_file, by_env)] == [1, 2]
    missing = run(url, "--token-file", str(tmp_path / "none"), "--send", "x")
    assert missing.returncode == 2
    none = str(tmp_path / "none")
    assert missing.stderr == (
        f"chat client: cannot read the token file {none!r}: No such file or directory\n"
    )
    (tmp_path / "blank").write_text("\n")
    blank = run(url, "--token-file", str(tmp_path / "blank"), "--send", "x")
    assert (blank.returncode, blank.stderr) == (
        2,
        f"chat client: the token file {str(tmp_path / 'blank')!r} is empty\n",
    )
