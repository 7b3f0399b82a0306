"""Access tokens: compact JWS issue and verify, strict by allow-list (A2, A3).

Verification accepts exactly what Garrison issues and nothing else:
- three base64url segments, strictly decoded, at most ``MAX_TOKEN_BYTES``;
- a header whose ``alg`` is one Garrison signs with *and* equals the algorithm of the key named by
  ``kid``: so ``none``, ``HS256`` against an RSA public key (key confusion) and any algorithm swap
  fail; ``jku``, ``x5u``, ``x5c``, ``jwk`` and ``crit`` headers are refused outright;
- ``iss`` and ``aud`` equal to the configured ones, ``exp`` in the future, ``nbf``/``iat`` not in the
  future (with ``clock_skew``), ``sub`` and ``jti`` present.

Tokens that verified once are kept in a bounded cache keyed by the token text, honouring ``exp``; the
caller still checks user status and revocation on every request (``identity.authn``).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from garrison.clock import Clock, system_clock
from garrison.errors import AuthenticationError
from garrison.keys.algorithms import ALGORITHMS, b64url
from garrison.keys.keyring import Keyring

MAX_TOKEN_BYTES = 8192
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "x5c", "jwk", "crit", "x5t", "x5t#S256"})
_ALLOWED_ALGS = frozenset(ALGORITHMS)
_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TokenError(AuthenticationError):
    code = "invalid_token"
    title = "Invalid token"


def _b64decode(segment: str) -> bytes:
    raw = segment.encode("ascii", "strict")
    if not raw or not _B64_CHARS.issuperset(raw) or len(raw) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


class TokenCodec:
    def __init__(
        self,
        keyring: Keyring,
        *,
        issuer: str,
        audience: str,
        ttl: int = 900,
        clock_skew: int = 30,
        cache_size: int = 100_000,
        clock: Clock = system_clock,
    ) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.skew = clock_skew
        self.clock = clock
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    # -- issue ---------------------------------------------------------------------------------
    def issue(
        self, claims: Mapping[str, Any], *, ttl: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Sign ``claims`` plus iss, aud, iat, nbf, exp, jti; returns (token, full claims)."""
        signer = self.keyring.current
        now = int(self.clock())
        body: dict[str, Any] = {
            **claims,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + (ttl or self.ttl),
            "jti": secrets.token_urlsafe(16),
        }
        header = {"alg": signer.alg, "typ": "JWT", "kid": signer.kid}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(body, separators=(",", ":")).encode())
        )
        signature = signer.sign(signing_input.encode())
        return f"{signing_input}.{b64url(signature)}", body

    # -- verify --------------------------------------------------------------------------------
    def verify(self, token: str) -> dict[str, Any]:
        """Claims of a valid token; ``TokenError`` (401) for anything else."""
        cached = self._cache.get(token)
        if cached is not None:
            if cached["exp"] > self.clock() - self.skew:
                return cached
            self._cache.pop(token, None)
            raise TokenError("token expired")
        claims = self._verify_uncached(token)
        if self.cache_size:
            self._cache[token] = claims
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return claims

    def forget(self) -> None:
        """Drop every cached token (a key was revoked)."""
        self._cache.clear()

    def _verify_uncached(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise TokenError("malformed token")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed token")
        head_b64, body_b64, sig_b64 = parts
        try:
            header = json.loads(_b64decode(head_b64))
            signature = _b64decode(sig_b64)
        except (ValueError, UnicodeError, binascii.Error):
            raise TokenError("malformed token") from None
        if not isinstance(header, dict):
            raise TokenError("malformed token")
        alg = header.get("alg")
        if alg not in _ALLOWED_ALGS:
            raise TokenError("algorithm not allowed")
        if FORBIDDEN_HEADERS.intersection(header):
            raise TokenError("token header not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("unknown signing key")
        entry = self.keyring.verifiers.get(kid)
        if entry is None and self.keyring.maybe_reload():
            entry = self.keyring.verifiers.get(kid)
        if entry is None:
            raise TokenError("unknown signing key")
        key_alg, verify = entry
        if key_alg != alg:
            raise TokenError("algorithm does not match the key")
        if not verify(f"{head_b64}.{body_b64}".encode("ascii"), signature):
            raise TokenError("bad signature")
        try:
            claims = json.loads(_b64decode(body_b64))
        except (ValueError, UnicodeError, binascii.Error):
            raise TokenError("malformed token") from None
        if not isinstance(claims, dict):
            raise TokenError("malformed token")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = self.clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf", 0), claims.get("iat")
        if not all(_is_number(v) for v in (exp, nbf, iat)):
            raise TokenError("token lacks valid exp, nbf or iat")
        if exp <= now - self.skew:
            raise TokenError("token expired")
        if nbf > now + self.skew or iat > now + self.skew:
            raise TokenError("token not yet valid")
        if claims.get("iss") != self.issuer:
            raise TokenError("wrong issuer")
        aud = claims.get("aud")
        if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
            raise TokenError("wrong audience")
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
            raise TokenError("token lacks sub or jti")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
