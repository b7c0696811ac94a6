"""python -m chat token: development tokens the server accepts."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chat.__main__ import main
from chat.auth import Authenticator
from chat.settings import Settings

SECRET = "cli-test-secret-" + "c" * 32


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["token", *argv]) == 0
    return capsys.readouterr().out.strip()


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


def test_a_private_key_signs_es256(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("CHAT_JWT_SECRET", raising=False)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "private.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    token = run(capsys, "--sub", "bob", "--key", str(pem), "--iss", "me")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], issuer="me")
    assert claims["sub"] == "bob"
    assert "rooms" not in claims


def test_a_key_the_server_could_not_verify_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The server takes EC keys on P-256 only: an ES256 token from P-384 would never pass.
    monkeypatch.delenv("CHAT_JWT_SECRET", raising=False)
    pem = tmp_path / "p384.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SystemExit, match="RSA or EC P-256 private key"):
        main(["token", "--sub", "bob", "--key", str(pem)])


def test_without_a_secret_or_key_it_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAT_JWT_SECRET", raising=False)
    with pytest.raises(SystemExit, match="CHAT_JWT_SECRET"):
        main(["token", "--sub", "alice"])


def test_a_bad_setting_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_JWT_SECRET", "short")
    assert main(["token", "--sub", "alice"]) == 2
    assert "CHAT_JWT_SECRET" in capsys.readouterr().err
