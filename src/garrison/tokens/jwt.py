"""Access tokens: compact JWS issue and verify, strict by allow-list (A2, A3).

Verification accepts exactly what Garrison issues and nothing else:
- three base64url segments, at most ``MAX_TOKEN_BYTES``, strictly and canonically decoded (no
  padding, no stray bits: one token has one spelling), each JSON part a UTF-8 object of RFC 8259
  JSON (no ``NaN``/``Infinity``; too-deep nesting is a 401, not a crash);
- a header whose ``alg`` is one Garrison signs with *and* equals the algorithm of the key named by
  ``kid``: so ``none``, ``HS256`` against an RSA public key (key confusion) and any algorithm swap
  fail; ``jku``, ``x5u``, ``x5c``, ``jwk`` and ``crit`` headers are refused outright;
- ``iss`` and ``aud`` equal to the configured ones, ``exp`` in the future, ``nbf``/``iat`` not in the
  future (with ``clock_skew``), ``sub`` and ``jti`` present.

Tokens that verified once are kept in a bounded cache keyed by the token text, honouring ``exp`` and
re-checking on every hit that the signing key is still in the keyring (an emergency rotation kills
cached tokens too); the caller still checks user status and revocation on every request
(``identity.authn``). Every verify first lets the keyring re-read its keys if they are older than
its ``refresh_interval``, which bounds how long another process's rotation takes to arrive.
"""

from __future__ import annotations

import binascii
import json
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, TypeGuard

from garrison.clock import Clock, system_clock
from garrison.errors import AuthenticationError
from garrison.keys.algorithms import ALGORITHMS, b64url
from garrison.keys.keyring import Keyring

MAX_TOKEN_BYTES = 8192
_HEADER_MEMO_SIZE = 256
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "x5c", "jwk", "crit", "x5t", "x5t#S256"})
_ALLOWED_ALGS = frozenset(ALGORITHMS)
_B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {c: i for i, c in enumerate(_B64_ALPHABET)}
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


class TokenError(AuthenticationError):
    code = "invalid_token"
    title = "Invalid token"


def b64decode_strict(segment: str) -> bytes:
    """Strict, canonical base64url: no padding, no stray bits, so one token has one spelling."""
    size = len(segment)
    if not _B64URL.fullmatch(segment) or size % 4 == 1:
        raise ValueError("not base64url")
    tail = size % 4  # 2 or 3 characters in the last quantum leave 4 or 2 unused low bits
    if tail and _B64_VALUE[segment[-1]] & (0b1111 if tail == 2 else 0b11):
        raise ValueError("not canonical base64url")  # another spelling of the same bytes
    padded = segment.encode("ascii").translate(_TO_STANDARD) + b"=" * (-size % 4)
    return binascii.a2b_base64(padded, strict_mode=True)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: RFC 8259 JSON only: ``NaN``/``Infinity`` (which ``json`` accepts by default) are refused.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def json_object(segment: str) -> dict[str, Any]:
    """A base64url segment holding a UTF-8 JSON object; ``TokenError`` for anything else.

    ``RecursionError`` is caught too: a header of nested brackets must be a 401, never a 500.
    """
    try:
        value = _JSON.decode(b64decode_strict(segment).decode("utf-8"))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        raise TokenError("malformed token") from None
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value


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
        #: token text -> (claims, kid); the kid is re-checked on a hit so a revoked key's tokens
        #: fail at once even when no invalidation message reached this cache.
        self._cache: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        self._headers: dict[str, tuple[str, str]] = {}

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
        if not isinstance(token, str):
            raise TokenError("malformed token")
        keyring = self.keyring
        if keyring.refresh_inline:
            keyring.refresh_if_stale()
        cached = self._cache.get(token)
        if cached is not None:
            claims, kid = cached
            if kid in keyring.verifiers and claims["exp"] > self.clock() - self.skew:
                return claims
            self._cache.pop(token, None)
            raise TokenError("token expired or its signing key was revoked")
        claims, kid = self._verify_uncached(token)
        if self.cache_size:
            self._cache[token] = (claims, kid)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return claims

    def forget(self) -> None:
        """Drop every cached token (a key was revoked)."""
        self._cache.clear()

    def _verify_uncached(self, token: str) -> tuple[dict[str, Any], str]:
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise TokenError("malformed token")
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("malformed token")
        head_b64, body_b64, sig_b64 = parts
        alg, kid = self._header(head_b64)
        entry = self.keyring.verifiers.get(kid)
        if entry is None and self.keyring.maybe_reload():
            entry = self.keyring.verifiers.get(kid)
        if entry is None:
            raise TokenError("unknown signing key")
        key_alg, verify = entry
        if key_alg != alg:
            raise TokenError("algorithm does not match the key")
        try:
            signature = b64decode_strict(sig_b64)
        except (ValueError, UnicodeError, binascii.Error):
            raise TokenError("malformed token") from None
        if not verify(token[: len(head_b64) + 1 + len(body_b64)].encode("ascii"), signature):
            raise TokenError("bad signature")
        claims = json_object(body_b64)
        self._check_claims(claims)
        return claims, kid

    def _header(self, head_b64: str) -> tuple[str, str]:
        """``(alg, kid)`` of an allowed header. Every token of one key has the same header text, so
        the answer is memoised per text (bounded): parsing it again would cost more than the rest
        of the checks together."""
        known = self._headers.get(head_b64)
        if known is not None:
            return known
        header = json_object(head_b64)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in _ALLOWED_ALGS:
            raise TokenError("algorithm not allowed")
        if FORBIDDEN_HEADERS.intersection(header):
            raise TokenError("token header not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("unknown signing key")
        if len(self._headers) >= _HEADER_MEMO_SIZE:
            self._headers.clear()
        self._headers[head_b64] = (alg, kid)
        return alg, kid

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = self.clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf", 0), claims.get("iat")
        if not (is_number(exp) and is_number(nbf) and is_number(iat)):
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


def is_number(value: object) -> TypeGuard[int | float]:
    """A finite JSON number (``1e999`` parses to infinity: a token that never expires)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)
