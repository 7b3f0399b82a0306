"""The one compact-JWS decoder (A3, A10, A11): Garrison's own access tokens, external IdP tokens
and OIDC id_tokens all go through ``JwsDecoder.decode``; only its ``Policy`` differs per caller.

Written on ``cryptography`` directly (``keys.algorithms``, ``keys.jwk``) because it is the hot path.
A token is accepted only when it is:
- a string of at most ``MAX_TOKEN_BYTES`` ASCII characters in three strictly and canonically
  base64url-encoded segments (no padding, no stray bits: one token has one spelling);
- a header and a payload that are UTF-8 JSON objects of RFC 8259 JSON, with no ``NaN``/``Infinity``
  and no member name twice (RFC 7515 4 / RFC 7519 4 allow "last one wins"; refusing is the strict
  reading, and two parsers can then never disagree on which ``alg`` or ``aud`` a token has);
- a header whose ``alg`` is on the policy's allow-list and that carries none of ``jku``, ``x5u``,
  ``x5c``, ``jwk``, ``crit``, ``x5t``, ``x5t#S256`` (a token never chooses its own key);
- signed by the key its ``kid`` names (looked up by the caller's ``KeyLookup``), and that key's own
  algorithm is the header's ``alg``: a header cannot swap RS256 for ES256 or HS256 on a key. The
  signature is checked before the claims are even decoded;
- carrying claims that pass ``check_claims``, defined here once for every caller: ``exp`` (in the
  future) and ``iat`` (not in the future) required, ``nbf`` (not in the future) optional, all three
  finite JSON numbers within the interoperable range (|x| <= 2**53, RFC 7493 2.2; ``1e999`` parses to
  infinity, a token that never expires), ``iss`` and ``aud`` equal to the policy's (``aud`` may be
  a list holding it), each of the policy's ``required`` claims a non-empty string, all with the
  policy's leeway; and no top-level claim (its name, its string value or a string of its list)
  holding a control character (``garrison.text``, E7: ``sub`` and ``email`` reach user rows).

Per caller: Garrison's own tokens (``own_policy``) allow the asymmetric algorithms only and need a
``kid``, ``sub`` and ``jti``, and an ES256 signature in its low-S spelling (Garrison signs low S, so
each token has one spelling; the high-S twin of a valid signature is refused); an external IdP configured with a shared secret (``shared_secret_policy``)
allows HS256 and nothing else; a JWKS IdP and OIDC id_tokens (``keyset_policy``) the asymmetric
algorithms. HS256 never shares an allow-list with another algorithm, so no key can be fed an HMAC
token keyed with its own public half.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from garrison.errors import AuthenticationError
from garrison.keys.algorithms import ALGORITHMS, b64decode_strict, es256_high_s
from garrison.keys.jwk import HS256, KeyEntry
from garrison.text import control_character, plain_json_text

MAX_TOKEN_BYTES = 8192
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "x5c", "jwk", "crit", "x5t", "x5t#S256"})
ASYMMETRIC_ALGS = frozenset(ALGORITHMS)
#: RFC 7493 (I-JSON) 2.2: numbers beyond IEEE 754 double precision are not interoperable.
MAX_NUMERIC_DATE = 2**53
_HEADER_MEMO_SIZE = 256

#: (kid or None, the header's alg) -> the key that kid names, or None when no such key is known.
#: The entry's own algorithm is compared with the header's by the decoder.
KeyLookup = Callable[[str | None, str], KeyEntry | None]


class TokenError(AuthenticationError):
    code = "invalid_token"
    title = "Invalid token"


# -- strict decoding ---------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


#: RFC 8259 JSON only: ``NaN``/``Infinity`` (which ``json`` accepts by default) and duplicate
#: member names (which it resolves silently, last one wins) are refused.
_JSON = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_members)


def json_object(segment: str) -> dict[str, Any]:
    """A base64url segment holding a UTF-8 JSON object; ``TokenError`` for anything else.

    ``RecursionError`` is caught too: a header of nested brackets must be a 401, never a 500.
    """
    return json_object_text(segment)[0]


def json_object_text(segment: str) -> tuple[dict[str, Any], str]:
    """``json_object``, with the JSON text it was decoded from."""
    try:
        text = b64decode_strict(segment).decode("utf-8")
        value = _JSON.decode(text)
    except (ValueError, UnicodeError, RecursionError):  # binascii.Error is a ValueError
        raise TokenError("malformed token") from None
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value, text


def _segments(token: object) -> list[str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or not token.isascii():
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    return parts


def unverified(token: object) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The UNVERIFIED (header, claims) of a compact JWS, each None when it does not decode; for
    routing only (which issuer should check it), never for a decision."""
    try:
        head_b64, body_b64, _ = _segments(token)
    except TokenError:
        return None, None
    parsed: list[dict[str, Any] | None] = []
    for part in (head_b64, body_b64):
        try:
            parsed.append(json_object(part))
        except TokenError:
            parsed.append(None)
    return parsed[0], parsed[1]


# -- claims ------------------------------------------------------------------------------------
def is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number usable as a NumericDate: not a bool, finite, |x| <= 2**53."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return -MAX_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE  # NaN and the infinities fail too


@dataclass(frozen=True, slots=True)
class Policy:
    """What one caller accepts; see ``own_policy``, ``shared_secret_policy``, ``keyset_policy``."""

    algorithms: frozenset[str]
    issuer: str
    audience: str
    leeway: float = 30
    require_kid: bool = False
    #: claims that must be non-empty strings
    required: tuple[str, ...] = ("sub",)
    #: refuse an ES256 signature with a high S (the second spelling of a valid one): for tokens
    #: Garrison signs itself, always low S; other signers emit either (RFC 7518 allows both)
    low_s_only: bool = False

    def __post_init__(self) -> None:
        if not self.algorithms or not self.algorithms <= ASYMMETRIC_ALGS | {HS256}:
            raise ValueError(f"unsupported algorithms {sorted(self.algorithms)}")
        if HS256 in self.algorithms and len(self.algorithms) > 1:
            raise ValueError("HS256 is only ever allowed alone (one shared secret, no key choice)")
        if not self.issuer or not self.audience:
            raise ValueError("a policy needs an issuer and an audience")
        if self.leeway < 0:
            raise ValueError("leeway cannot be negative")


def own_policy(issuer: str, audience: str, leeway: float) -> Policy:
    """Garrison's own access tokens: asymmetric only (never HS256), a ``kid``, ``sub`` and ``jti``."""
    return Policy(ASYMMETRIC_ALGS, issuer, audience, leeway, True, ("sub", "jti"), low_s_only=True)


def shared_secret_policy(issuer: str, audience: str, leeway: float) -> Policy:
    """An external IdP configured with a shared secret (Supabase GoTrue): HS256 and nothing else."""
    return Policy(frozenset({HS256}), issuer, audience, leeway)


def keyset_policy(issuer: str, audience: str, leeway: float) -> Policy:
    """An issuer with a JWKS (an external IdP, an OIDC provider): asymmetric algorithms only."""
    return Policy(ASYMMETRIC_ALGS, issuer, audience, leeway)


def check_claims(
    claims: Mapping[str, Any], policy: Policy, now: float, *, text: str | None = None
) -> None:
    """The claim checks of every caller; ``TokenError`` naming the first that fails. ``text``:
    the JSON the claims were decoded from, when the caller has it (one scan of it can clear every
    claim of control characters at once)."""
    exp, nbf, iat = claims.get("exp"), claims.get("nbf", 0), claims.get("iat")
    if not (is_number(exp) and is_number(nbf) and is_number(iat)):
        raise TokenError("token lacks valid exp, nbf or iat")
    leeway = policy.leeway
    if exp <= now - leeway:
        raise TokenError("token expired")
    if nbf > now + leeway or iat > now + leeway:
        raise TokenError("token not yet valid")
    if claims.get("iss") != policy.issuer:
        raise TokenError("wrong issuer")
    aud = claims.get("aud")
    if not (aud == policy.audience or (isinstance(aud, list) and policy.audience in aud)):
        raise TokenError("wrong audience")
    for name in policy.required:
        value = claims.get(name)
        if not isinstance(value, str) or not value:
            raise TokenError(f"token lacks {' or '.join(policy.required)}")
    if text is not None and plain_json_text(text):
        return  # no string in it can decode to a refused character
    for name, value in claims.items():
        _check_claim_text(name, value)


def _check_claim_text(name: str, value: Any) -> None:
    """A top-level claim (or a string of a list claim) holding a control character (E7,
    ``garrison.text``) is refused: ``sub``, ``email`` and the rest reach user rows and logs."""
    texts = (value,) if isinstance(value, str) else value if isinstance(value, list) else ()
    for text in (name, *texts):
        bad = control_character(text) if isinstance(text, str) else None
        if bad is not None:
            raise TokenError(f"token claim {name[:64]!r}: control character {bad}")


# -- the decoder -------------------------------------------------------------------------------
class JwsDecoder:
    """Decodes and verifies tokens for one policy, with keys from one ``KeyLookup``."""

    __slots__ = ("_headers", "lookup", "policy")

    def __init__(self, policy: Policy, lookup: KeyLookup) -> None:
        self.policy = policy
        self.lookup = lookup
        #: header text -> (alg, kid): every token of one key has the same header text
        self._headers: dict[str, tuple[str, str | None]] = {}

    def decode(self, token: object, now: float) -> tuple[dict[str, Any], str | None]:
        """``(claims, kid)`` of a valid token; ``TokenError`` (401) for anything else."""
        head_b64, body_b64, sig_b64 = _segments(token)
        alg, kid = self._header(head_b64)
        try:
            signature = b64decode_strict(sig_b64)
        except (ValueError, UnicodeError):  # binascii.Error is a ValueError
            raise TokenError("malformed token") from None
        entry = self.lookup(kid, alg)
        if entry is None:
            raise TokenError("unknown signing key")
        key_alg, verify = entry
        if key_alg != alg:
            raise TokenError("algorithm does not match the key")
        if alg == "ES256" and self.policy.low_s_only and es256_high_s(signature):
            raise TokenError("non-canonical signature (high S)")
        if not verify(f"{head_b64}.{body_b64}".encode("ascii"), signature):
            raise TokenError("bad signature")
        claims, text = json_object_text(body_b64)
        check_claims(claims, self.policy, now, text=text)
        return claims, kid

    def _header(self, head_b64: str) -> tuple[str, str | None]:
        """``(alg, kid)`` of an allowed header, memoised per header text (bounded): parsing it
        again would cost more than the rest of the checks together."""
        known = self._headers.get(head_b64)
        if known is not None:
            return known
        header = json_object(head_b64)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.policy.algorithms:
            raise TokenError("algorithm not allowed")
        if FORBIDDEN_HEADERS.intersection(header):
            raise TokenError("token header not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("unknown signing key")
        if kid is None and self.policy.require_kid:
            raise TokenError("unknown signing key")
        if len(self._headers) >= _HEADER_MEMO_SIZE:
            self._headers.clear()
        self._headers[head_b64] = (alg, kid)
        return alg, kid
