"""Verification keys from JWKs (RFC 7517/7518/8037): RSA, EC P-256, Ed25519 and, only where a
caller asks for it, ``oct`` for HS256.

A key comes back as a ``KeyEntry``: ``(alg, verifier)``, the one algorithm the key may verify, so
the decoder can refuse a token whose header names another (``garrison.tokens.jws``). The algorithm
follows from the key type (EC: ES256, OKP: EdDSA, oct: HS256; RSA: the JWK's ``alg``, PS256 or
RS256, and RS256 when it names none, as IdPs publish them); a JWK whose ``alg`` names another is
not taken. Anything that is not a usable public signing key (an encryption key,
a private key, RSA under 2048 bits, another curve, a malformed member, non-canonical base64url) is
``None``, never an exception: one odd key in a provider's JWKS must not take the others down.

A symmetric key verifies only what its holder signed, and anyone holding it can sign: it is taken
only with ``symmetric=True`` (an IdP configured with a shared secret), never from a fetched JWKS.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from garrison.keys.algorithms import RSA_ALGS, RSA_BITS, Verifier, b64decode_strict, verifier

#: (the algorithm a key verifies, its verify function)
KeyEntry = tuple[str, Verifier]

HS256 = "HS256"
#: RFC 7518 section 3.2: an HS256 key is at least as long as the hash output.
MIN_HMAC_KEY_BYTES = 32
_KTY_ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA", "oct": HS256}
_P256_BYTES = 32


def hs256_verifier(secret: bytes) -> Verifier:
    """HMAC-SHA256 under a shared secret, compared in constant time."""

    def verify_hs256(data: bytes, signature: bytes) -> bool:
        expected = hmac.new(secret, data, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)

    return verify_hs256


def hs256_key(secret: bytes) -> KeyEntry:
    """The key entry of a configured shared secret (its strength is checked by the caller's
    configuration, ``config.checks.secret_problem``)."""
    if not secret:
        raise ValueError("an empty HMAC key signs for anyone")
    return HS256, hs256_verifier(secret)


def _b64_bytes(value: object, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("JWK member is not a string")
    raw = b64decode_strict(value)
    if length is not None and len(raw) != length:
        raise ValueError("JWK member has the wrong length")
    return raw


def _b64_int(value: object) -> int:
    return int.from_bytes(_b64_bytes(value), "big")


def jwk_verifier(jwk: Mapping[str, Any], *, symmetric: bool = False) -> KeyEntry | None:
    """``(alg, verifier)`` of a signing JWK, or None when it is not one this caller may use."""
    kty = jwk.get("kty")
    alg = _KTY_ALG.get(kty) if isinstance(kty, str) else None
    if not isinstance(kty, str) or alg is None:
        return None
    if kty == "RSA" and jwk.get("alg") in RSA_ALGS:
        alg = jwk["alg"]
    if jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    try:
        if kty == "oct":
            if not symmetric:
                return None
            secret = _b64_bytes(jwk.get("k"))
            return hs256_key(secret) if len(secret) >= MIN_HMAC_KEY_BYTES else None
        if "d" in jwk:  # a private key published by mistake is not trusted as a public one
            return None
        return alg, verifier(_public_key(kty, jwk), alg)
    except (ValueError, UnicodeError):  # binascii.Error is a ValueError
        return None


def _public_key(kty: str, jwk: Mapping[str, Any]) -> Any:
    if kty == "RSA":
        key = rsa.RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n"))).public_key()
        if key.key_size < RSA_BITS:
            raise ValueError("RSA key too small")
        return key
    if kty == "EC":
        if jwk.get("crv") != "P-256":
            raise ValueError("unsupported curve")
        x = _b64_bytes(jwk.get("x"), _P256_BYTES)
        y = _b64_bytes(jwk.get("y"), _P256_BYTES)
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
        )
        return numbers.public_key()
    if jwk.get("crv") != "Ed25519":
        raise ValueError("unsupported curve")
    return ed25519.Ed25519PublicKey.from_public_bytes(_b64_bytes(jwk.get("x"), 32))


def jwks_keys(document: Any) -> tuple[dict[str, KeyEntry], list[KeyEntry]]:
    """The public signing keys of a fetched JWKS document: (by kid, those without a kid).
    Symmetric keys are never taken from a JWKS."""
    keys = document.get("keys") if isinstance(document, dict) else None
    named: dict[str, KeyEntry] = {}
    unnamed: list[KeyEntry] = []
    for jwk in keys if isinstance(keys, list) else ():
        if not isinstance(jwk, dict):
            continue
        entry = jwk_verifier(jwk)
        if entry is None:
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str):
            named[kid] = entry
        else:
            unnamed.append(entry)
    return named, unnamed
