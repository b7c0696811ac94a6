"""Signing keys for JWTs: which algorithm a PEM key means. Pure.

The algorithm is fixed by the key the server is configured with (RS256 for
RSA, ES256 for EC P-256), never taken from a token. Used by the settings (to
refuse a bad ``CHAT_JWT_PUBLIC_KEY`` at start-up), by :mod:`chat.auth` and by
``python -m chat token``.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key


def load_public_key(pem: str) -> tuple[Any, str]:
    """The key object and its algorithm (RS256 for RSA, ES256 for EC P-256).

    Raises :class:`ValueError` for anything else.
    """
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as error:
        raise ValueError("not a PEM public key") from error
    return key, algorithm_for(key)


def algorithm_for(key: Any) -> str:
    """RS256 for an RSA key, ES256 for an EC P-256 key (public or private).

    Raises :class:`ValueError` for anything else.
    """
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if (
        isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey)
        and key.curve.name == "secp256r1"
    ):
        return "ES256"
    raise ValueError("only RSA and EC P-256 keys are supported")
