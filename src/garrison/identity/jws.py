"""Tokens signed by someone else (external IdPs, OIDC id_tokens), checked as strictly as our own.

The same rules as ``garrison.tokens.jwt`` apply, through the same strict decoders: at most
``MAX_TOKEN_BYTES``, three canonical base64url segments, a JSON-object header whose ``alg`` is on
the caller's allow-list, no ``jku``/``x5u``/``x5c``/``jwk``/``crit`` header (a token never chooses
its own key), a signature checked before the claims are even decoded, and ``exp``/``nbf``/``iat``
finite numbers checked against an injected clock. The allow-list is per issuer: HS256 exists here
only for an IdP configured with a shared secret, never for a key that came from a JWKS.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from garrison.keys.algorithms import RSA_BITS, Verifier, verifier
from garrison.tokens.jwt import (
    FORBIDDEN_HEADERS,
    MAX_TOKEN_BYTES,
    TokenError,
    b64decode_strict,
    is_number,
    json_object,
)

ASYMMETRIC_ALGS = frozenset({"RS256", "ES256", "EdDSA"})
HS256 = "HS256"
_KTY_ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}

#: (kid or None, alg) -> the verifier of that key, or None when no such key is known.
KeyLookup = Callable[[str | None, str], Verifier | None]


@dataclass(frozen=True, slots=True)
class Parts:
    """A compact JWS split and checked for shape; its claims are not decoded yet."""

    header: dict[str, Any]
    body: str
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def split(token: str, allowed_algs: frozenset[str]) -> Parts:
    """Shape, header and algorithm checks; ``TokenError`` for anything off the allow-list."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise TokenError("malformed token")
    pieces = token.split(".")
    if len(pieces) != 3:
        raise TokenError("malformed token")
    head_b64, body_b64, sig_b64 = pieces
    header = json_object(head_b64)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed_algs:
        raise TokenError("algorithm not allowed")
    if FORBIDDEN_HEADERS.intersection(header):
        raise TokenError("token header not allowed")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenError("unknown signing key")
    try:
        signature = b64decode_strict(sig_b64)
    except (ValueError, UnicodeError, binascii.Error):
        raise TokenError("malformed token") from None
    return Parts(header, body_b64, f"{head_b64}.{body_b64}".encode("ascii"), signature)


def verified_claims(parts: Parts, lookup: KeyLookup) -> dict[str, Any]:
    """The claims, decoded only once the signature checks out under a key ``lookup`` names."""
    verify = lookup(parts.kid, parts.alg)
    if verify is None:
        raise TokenError("unknown signing key")
    if not verify(parts.signing_input, parts.signature):
        raise TokenError("bad signature")
    return json_object(parts.body)


def peek_claims(token: str) -> dict[str, Any] | None:
    """The UNVERIFIED claims of a compact JWS, for routing only (which issuer should check it)."""
    pieces = token.split(".") if isinstance(token, str) and len(token) <= MAX_TOKEN_BYTES else ()
    if len(pieces) != 3:
        return None
    try:
        return json_object(pieces[1])
    except TokenError:
        return None


def check_times(claims: Mapping[str, Any], now: float, skew: int) -> None:
    """``exp`` in the future, ``nbf``/``iat`` not in it (finite numbers only, as for our tokens)."""
    exp, nbf, iat = claims.get("exp"), claims.get("nbf", 0), claims.get("iat", 0)
    if not (is_number(exp) and is_number(nbf) and is_number(iat)):
        raise TokenError("token lacks valid exp, nbf or iat")
    if exp <= now - skew:
        raise TokenError("token expired")
    if nbf > now + skew or iat > now + skew:
        raise TokenError("token not yet valid")


def has_audience(claims: Mapping[str, Any], audience: str) -> bool:
    aud = claims.get("aud")
    return aud == audience or (isinstance(aud, list) and audience in aud)


def hs256_verifier(secret: bytes) -> Verifier:
    """HMAC-SHA256 under a configured shared secret, compared in constant time."""

    def verify_hs256(data: bytes, signature: bytes) -> bool:
        expected = hmac.new(secret, data, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)

    return verify_hs256


def _b64_int(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("JWK member is not a string")
    return int.from_bytes(b64decode_strict(value), "big")


def _b64_bytes(value: object, length: int) -> bytes:
    if not isinstance(value, str):
        raise ValueError("JWK member is not a string")
    raw = b64decode_strict(value)
    if len(raw) != length:
        raise ValueError("JWK member has the wrong length")
    return raw


def jwk_verifier(jwk: Mapping[str, Any]) -> tuple[str, Verifier] | None:
    """(alg, verifier) for a public signing JWK (RSA >= 2048 bits, P-256, Ed25519); None for a
    key that is not one (an encryption key, a symmetric key, another curve, a private key)."""
    kty = jwk.get("kty")
    alg = _KTY_ALG.get(kty) if isinstance(kty, str) else None
    if alg is None or jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig" or "d" in jwk:
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    try:
        if kty == "RSA":
            public: Any = rsa.RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n")))
            key: Any = public.public_key()
            if key.key_size < RSA_BITS:
                return None
        elif kty == "EC":
            if jwk.get("crv") != "P-256":
                return None
            x, y = _b64_bytes(jwk.get("x"), 32), _b64_bytes(jwk.get("y"), 32)
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            key = numbers.public_key()
        else:
            if jwk.get("crv") != "Ed25519":
                return None
            key = ed25519.Ed25519PublicKey.from_public_bytes(_b64_bytes(jwk.get("x"), 32))
    except (ValueError, UnicodeError, binascii.Error):
        return None
    return alg, verifier(key)
