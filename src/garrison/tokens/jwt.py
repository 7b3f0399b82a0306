"""Access tokens: compact JWS issue and verify, strict by allow-list (A2, A3).

Verification is ``tokens.jws`` (the one decoder, shared with external IdP tokens and OIDC
id_tokens) under ``own_policy``: exactly what Garrison issues and nothing else, i.e. an asymmetric
``alg`` equal to the algorithm of the keyring key named by ``kid`` (so ``none``, ``HS256`` against an
RSA public key and any algorithm swap fail), no ``jku``/``x5u``/``x5c``/``jwk``/``crit`` header,
strict canonical base64url and strict JSON, ``iss``/``aud`` equal to the configured ones, ``exp`` in
the future, ``nbf``/``iat`` not in it (with ``clock_skew``), ``sub`` and ``jti`` present.

Tokens that verified once are kept in a bounded cache keyed by the token text, honouring ``exp`` and
re-checking on every hit that the signing key is still in the keyring (an emergency rotation kills
cached tokens too); the caller still checks user status and revocation on every request
(``identity.authn``). Every verify first lets the keyring re-read its keys if they are older than
its ``refresh_interval``, which bounds how long another process's rotation takes to arrive.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from garrison.clock import Clock, system_clock
from garrison.keys.algorithms import b64url
from garrison.keys.jwk import KeyEntry
from garrison.keys.keyring import Keyring
from garrison.tokens.jws import MAX_TOKEN_BYTES, JwsDecoder, TokenError, own_policy

__all__ = ["MAX_TOKEN_BYTES", "TokenCodec", "TokenError"]


@dataclass(eq=False, repr=False)
class TokenCodec:
    keyring: Keyring
    _: KW_ONLY
    issuer: str
    audience: str
    ttl: int = 900
    clock_skew: int = 30
    cache_size: int = 100_000
    clock: Clock = system_clock
    #: token text -> (claims, kid); the kid is re-checked on a hit so a revoked key's tokens
    #: fail at once even when no invalidation message reached this cache.
    _cache: OrderedDict[str, tuple[dict[str, Any], str]] = field(
        default_factory=OrderedDict, init=False
    )
    _decoder: JwsDecoder = field(init=False)

    def __post_init__(self) -> None:
        self._decoder = JwsDecoder(
            own_policy(self.issuer, self.audience, self.clock_skew), self._key
        )

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
            if kid in keyring.verifiers and claims["exp"] > self.clock() - self.clock_skew:
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
        claims, kid = self._decoder.decode(token, self.clock())
        assert kid is not None  # own_policy requires one
        return claims, kid

    def _key(self, kid: str | None, _alg: str) -> KeyEntry | None:
        """The keyring's key ``kid``; an unknown one reloads the keyring (rate-limited)."""
        if kid is None:
            return None
        entry = self.keyring.verifiers.get(kid)
        if entry is None and self.keyring.maybe_reload():
            entry = self.keyring.verifiers.get(kid)
        return entry
