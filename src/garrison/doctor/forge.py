"""Forged access tokens for the live token checks (A3): what an attacker would send.

Built by hand, byte by byte, never through ``TokenCodec``: the point is to see whether the server
under test refuses them. Both carry plausible claims (the deployment's issuer and audience, an admin
role, a fresh ``exp``, and the caller may put a real admin's ``sub`` in) so that the signature
handling is the only reason left for a 401.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

from garrison.keys.algorithms import b64url


def claims(issuer: str, audience: str, now: float) -> dict[str, Any]:
    return {
        "iss": issuer,
        "aud": audience,
        "sub": f"garrison-doctor-{secrets.token_hex(4)}",
        "roles": ["admin"],
        "iat": int(now),
        "nbf": int(now) - 5,
        "exp": int(now) + 300,
        "jti": secrets.token_hex(12),
    }


def _segment(data: Mapping[str, Any]) -> str:
    return b64url(json.dumps(data, separators=(",", ":")).encode())


def unsigned(payload: Mapping[str, Any], kid: str | None = None) -> str:
    """``alg: none`` with an empty signature (RFC 7519 §6 "unsecured JWT")."""
    header: dict[str, Any] = {"alg": "none", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    return f"{_segment(header)}.{_segment(payload)}."


def public_pem(jwk: Mapping[str, Any]) -> bytes:
    """The PEM a naive HS256 verifier would use as its "key" for this public JWK."""
    public = {k: v for k, v in jwk.items() if k in {"kty", "n", "e", "crv", "x", "y"}}
    kind = _KINDS.get(str(public.get("kty")))
    if kind is None:
        raise ValueError(f"not an asymmetric public key: kty {public.get('kty')!r}")
    pem: bytes = kind.import_key(public).as_pem(private=False)
    return pem


_KINDS: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
    "RSA": RSAKey,
    "EC": ECKey,
    "OKP": OKPKey,
}


def hs256_with_public_key(payload: Mapping[str, Any], jwk: Mapping[str, Any]) -> str:
    """HS256 keyed with the server's own public key: the RS/HS algorithm-confusion attack."""
    header = {"alg": "HS256", "typ": "JWT", "kid": str(jwk.get("kid", ""))}
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    mac = hmac.new(public_pem(jwk), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"
