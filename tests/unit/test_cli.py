"""python -m chat: check validates settings as the server does; token mints what it accepts."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chat import __version__
from chat.__main__ import main
from chat.auth import Authenticator
from chat.settings import Settings

SECRET = "cli-test-secret-" + "c" * 32
ROOT = Path(__file__).resolve().parents[2]
EC_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(autouse=True)
def _no_chat_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from no ``CHAT_*`` variable, whatever the shell running pytest has."""
    for name in list(os.environ):
        if name.startswith("CHAT_"):
            monkeypatch.delenv(name)


def private_pem(key: Any, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )


def public_pem(key: Any) -> str:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()


def key_file(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "private.pem"
    path.write_bytes(data)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["token", *argv]) == 0
    return capsys.readouterr().out.strip()


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What stderr says when the command returns exit status 2 and prints nothing else."""
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What stderr says when argparse refuses the arguments (exit status 2)."""
    with pytest.raises(SystemExit) as excinfo:
        main(list(argv))
    assert excinfo.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def settings_shown(out: str) -> dict[str, str]:
    """The ``CHAT_NAME  value`` lines of ``check``'s output, by variable."""
    rows = [line.split(None, 1) for line in out.splitlines() if line.startswith("CHAT_")]
    return {row[0]: row[1] for row in rows}


def environ(**chat: str) -> dict[str, str]:
    """This process's environment without its ``CHAT_*`` variables, plus ``chat``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CHAT_")}
    env.update(chat)
    return env


def python_m_chat(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chat", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- token ---------------------------------------------------------------------


def test_an_hs256_token_carries_the_claims_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    monkeypatch.setenv("CHAT_JWT_AUDIENCE", "chat")
    token = run(capsys, "--sub", "alice", "--rooms", "lobby, game-*", "--ttl", "120", "--admin")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="chat")
    assert claims["sub"] == "alice"
    assert claims["rooms"] == ["lobby", "game-*"]
    assert claims["admin"] is True
    assert claims["exp"] - claims["iat"] == 120
    identity = Authenticator(Settings(jwt_secret=SECRET, jwt_audience="chat")).verify(
        token, claims["iat"]
    )
    assert identity.user == "alice"


def test_a_private_key_signs_es256(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    token = run(
        capsys, "--sub", "bob", "--key", key_file(tmp_path, private_pem(EC_KEY)), "--iss", "me"
    )
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(token, EC_KEY.public_key(), algorithms=["ES256"], issuer="me")
    assert claims["sub"] == "bob"
    assert "rooms" not in claims


def test_the_private_key_of_the_configured_public_key_mints_what_the_server_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    monkeypatch.setenv("CHAT_JWT_PUBLIC_KEY", public_pem(key))
    token = run(capsys, "--sub", "carol", "--key", key_file(tmp_path, private_pem(key)))
    claims = jwt.decode(token, options={"verify_signature": False})
    identity = Authenticator(Settings(jwt_public_key=public_pem(key))).verify(token, claims["iat"])
    assert identity.user == "carol"
    assert jwt.get_unverified_header(token)["alg"] == "RS256"


def test_a_key_the_server_could_not_verify_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The server takes EC keys on P-256 only: an ES256 token from P-384 would never pass.
    p384 = key_file(tmp_path, private_pem(ec.generate_private_key(ec.SECP384R1())))
    err = refused(capsys, "token", "--sub", "bob", "--key", p384)
    assert err.startswith("chat token: --key must be an RSA or EC P-256 private key")


def test_without_a_secret_or_key_it_says_what_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "token", "--sub", "alice")
    assert "set CHAT_JWT_SECRET (HS256) or give --key" in err


def test_a_bad_setting_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", "short")
    err = refused(capsys, "token", "--sub", "alice")
    assert err.startswith("chat: configuration error: CHAT_JWT_SECRET")


@pytest.mark.parametrize("sub", ["", "two words", "a" * 129, "ålice", "alice/admin"])
def test_a_sub_the_server_refuses_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sub: str
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    err = usage_error(capsys, "token", "--sub", sub)
    assert "argument --sub: must be 1 to 128 of A-Z a-z 0-9 _ . @ + : = | -" in err


@pytest.mark.parametrize("ttl", ["0", "-60", "abc", "1.5"])
def test_a_ttl_that_is_not_a_positive_number_of_seconds_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    err = usage_error(capsys, "token", "--sub", "alice", f"--ttl={ttl}")
    assert "argument --ttl: must be a whole number of seconds above 0" in err


def test_a_ttl_beyond_what_the_server_reads_as_a_time_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    err = refused(capsys, "token", "--sub", "alice", "--ttl", str(10**11))
    assert err.startswith("chat token: --ttl ends beyond year 5138")


@pytest.mark.parametrize(
    ("rooms", "says"),
    [
        ("lobby,bad room", "'bad room' is not a room pattern"),
        ("lobby,games/1", "'games/1' is not a room pattern"),
        ("r" * 65, "is not a room pattern"),
        (" , ", "names no room pattern"),
        (",".join(f"r{n}" for n in range(257)), "at most 256 patterns"),
    ],
)
def test_room_patterns_the_server_refuses_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rooms: str, says: str
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    err = usage_error(capsys, "token", "--sub", "alice", "--rooms", rooms)
    assert "argument --rooms: " in err
    assert says in err


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not a key at all\n", "not a PEM private key"),
        (public_pem(EC_KEY).encode(), "not a PEM private key"),
        (private_pem(EC_KEY, password=b"pw"), "encrypted; give an unencrypted PEM private key"),
        (None, "cannot read it: No such file or directory"),
    ],
    ids=["garbage", "public-key", "encrypted", "missing"],
)
def test_a_key_file_that_holds_no_usable_private_key_is_refused_without_a_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | None, says: str
) -> None:
    path = tmp_path / "private.pem"
    if content is not None:
        path.write_bytes(content)
    err = refused(capsys, "token", "--sub", "bob", "--key", str(path))
    assert err == f"chat token: --key {path}: {says}\n"


def test_a_key_is_refused_while_the_secret_makes_the_server_take_hs256_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    err = refused(capsys, "token", "--sub", "bob", "--key", key_file(tmp_path, private_pem(EC_KEY)))
    assert "--key signs ES256, but CHAT_JWT_SECRET makes the server take HS256 only" in err


def test_a_key_that_is_not_the_configured_public_keys_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CHAT_JWT_PUBLIC_KEY", public_pem(ec.generate_private_key(ec.SECP256R1())))
    err = refused(capsys, "token", "--sub", "bob", "--key", key_file(tmp_path, private_pem(EC_KEY)))
    assert err == "chat token: --key is not the private key of CHAT_JWT_PUBLIC_KEY\n"


def test_a_configured_public_key_needs_its_private_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_PUBLIC_KEY", public_pem(EC_KEY))
    err = refused(capsys, "token", "--sub", "bob")
    assert err == "chat token: CHAT_JWT_PUBLIC_KEY is set: give --key with its private key\n"


def test_an_audience_the_configured_server_refuses_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    monkeypatch.setenv("CHAT_JWT_AUDIENCE", "chat")
    err = refused(capsys, "token", "--sub", "alice", "--aud", "billing")
    assert err == "chat token: the server would refuse this token: token audience does not match\n"


def test_the_real_command_refuses_a_bad_sub_and_a_bad_key_with_status_2(tmp_path: Path) -> None:
    env = environ(CHAT_JWT_SECRET=SECRET)
    bad_sub = python_m_chat("token", "--sub", "two words", env=env)
    assert bad_sub.returncode == 2
    assert "argument --sub: must be 1 to 128" in bad_sub.stderr
    bad_key = python_m_chat(
        "token", "--sub", "bob", "--key", key_file(tmp_path, b"junk"), env=environ()
    )
    assert bad_key.returncode == 2
    assert bad_key.stderr.startswith("chat token: --key ")
    assert "Traceback" not in bad_key.stderr
    assert bad_sub.stdout == bad_key.stdout == ""


# -- check ---------------------------------------------------------------------


def test_check_prints_every_setting_with_secrets_hidden(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", SECRET)
    monkeypatch.setenv("CHAT_STATUS_TOKEN", "status-Sup3rSecret")
    monkeypatch.setenv("CHAT_BROKER_URL", "redis://user:Sup3rSecret@cache:6379/0?password=x")
    monkeypatch.setenv("CHAT_IDLE_TIMEOUT", "0")
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    shown = settings_shown(out)
    assert sorted(shown) == sorted(f"CHAT_{name.upper()}" for name in Settings.model_fields)
    assert "Sup3rSecret" not in out
    assert SECRET not in out
    assert shown["CHAT_JWT_SECRET"] == "(set, hidden)"
    assert shown["CHAT_STATUS_TOKEN"] == "(set, hidden)"
    assert shown["CHAT_BROKER_URL"] == "redis://cache:6379/0"
    assert shown["CHAT_IDLE_TIMEOUT"] == "0.0"
    assert shown["CHAT_HEARTBEAT_INTERVAL"] == "25.0 (default)"
    assert shown["CHAT_WS_COMPRESSION"] == "false (default)"
    assert shown["CHAT_JWT_AUDIENCE"] == "(unset)"
    assert out.splitlines()[-1] == f"chat {__version__}: configuration OK; JWT auth on (HS256)"


def test_check_names_the_algorithm_of_a_public_key_and_hides_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_PUBLIC_KEY", public_pem(EC_KEY))
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert settings_shown(out)["CHAT_JWT_PUBLIC_KEY"] == "(set, hidden)"
    assert "BEGIN PUBLIC KEY" not in out
    assert out.splitlines()[-1].endswith("configuration OK; JWT auth on (ES256)")


def test_check_shows_the_default_node_id_with_each_process_pid_left_open(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 0
    default = settings_shown(capsys.readouterr().out)["CHAT_NODE_ID"]
    assert default.endswith("-<pid> (default)")
    assert str(os.getpid()) not in default
    monkeypatch.setenv("CHAT_NODE_ID", "chat-1")
    assert main(["check"]) == 0
    assert settings_shown(capsys.readouterr().out)["CHAT_NODE_ID"] == "chat-1"


def test_check_reads_the_env_file_as_the_server_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env_file = tmp_path / "chat.env"
    env_file.write_text("CHAT_RATE=5\nCHAT_BURST=7\n")
    monkeypatch.setenv("CHAT_ENV_FILE", str(env_file))
    monkeypatch.setenv("CHAT_BURST", "9")
    assert main(["check"]) == 0
    shown = settings_shown(capsys.readouterr().out)
    assert shown["CHAT_RATE"] == "5.0"
    assert shown["CHAT_BURST"] == "9"


def test_check_quiet_validates_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("quiet", [[], ["--quiet"]], ids=["loud", "quiet"])
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHAT_HEARTBEAT_INTERVAL", "abc"),
        ("CHAT_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"),
        ("CHAT_HEARTBEAT_INTERVALL", "5"),
        ("CHAT_ENV_FILE", "/nonexistent/chat.env"),
    ],
)
def test_check_refuses_what_the_server_refuses_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    quiet: list[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    err = refused(capsys, "check", *quiet)
    assert err.startswith(f"chat: configuration error: {variable}: ")
    assert err.count("\n") == 1


def test_the_real_check_exits_2_naming_the_variable() -> None:
    result = python_m_chat("check", env=environ(CHAT_HEARTBEAT_INTERVAL="abc"))
    assert result.returncode == 2
    assert result.stderr.startswith("chat: configuration error: CHAT_HEARTBEAT_INTERVAL: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# -- the command itself --------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out == f"chat {__version__}\n"


@pytest.mark.parametrize("command", [[], ["check"], ["token"]], ids=["top", "check", "token"])
def test_help_is_plain_text(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main([*command, "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m chat {' '.join(command)}".rstrip())
    for markup in ("``", ":class:", ":data:", ":func:"):
        assert markup not in out
    assert "exit status" in out.lower()


# -- make run ------------------------------------------------------------------


def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A ``VENV`` whose run stamp is fresh: its python runs this interpreter but no pip,
    its hypercorn only records its arguments. Returns the venv and that record."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "hypercorn-args"
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        'case "$*" in *pip*) echo "make run installed: $*" >&2; exit 97;; esac\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    hypercorn = venv / "bin" / "hypercorn"
    hypercorn.write_text(f'#!/bin/sh\necho "$@" > {shlex.quote(str(record))}\n')
    python.chmod(0o755)
    hypercorn.chmod(0o755)
    (venv / ".installed-run").touch()
    return venv, record


def make_run(venv: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    return subprocess.run(
        [make, "--no-print-directory", "run", f"VENV={venv}", "PYTHON=false"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_make_run_stops_with_the_message_before_hypercorn_on_a_bad_setting(
    tmp_path: Path,
) -> None:
    venv, record = fake_venv(tmp_path)
    result = make_run(venv, environ(CHAT_HEARTBEAT_INTERVAL="abc"))
    assert result.returncode == 2
    assert "chat: configuration error: CHAT_HEARTBEAT_INTERVAL: " in result.stderr
    assert not record.exists()


def test_make_run_starts_hypercorn_after_the_check_installing_nothing_more(
    tmp_path: Path,
) -> None:
    venv, record = fake_venv(tmp_path)
    result = make_run(venv, environ())
    assert result.returncode == 0, result.stderr
    assert record.read_text() == "-c config/hypercorn.toml main:app\n"
