"""Attacks on access-token verification (A2, A3, A6). Each test forges a token the way an attacker
would and proves ``TokenCodec.verify`` refuses it with a 401 ``TokenError`` (never a 500), next to a
positive control that the same setup does accept a genuine token, so no test passes vacuously."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from garrison.keys import algorithms
from garrison.keys.algorithms import ALGORITHMS, b64url
from garrison.keys.keyring import Keyring
from garrison.storage.db import Database
from garrison.tokens.jwt import MAX_TOKEN_BYTES, TokenCodec, TokenError
from tests.jose import (
    AUDIENCE,
    ISSUER,
    SKEW,
    TTL,
    FakeClock,
    claims,
    jws,
    make_codec,
    make_keyring,
    open_db,
    segment,
    signed_by,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_db(f"sqlite:///{tmp_path / 'keys.db'}")
    yield database
    database.dispose()


@pytest.fixture(params=ALGORITHMS)
def keyring(request: pytest.FixtureRequest, db: Database, clock: FakeClock) -> Keyring:
    return make_keyring(db, clock, request.param)


@pytest.fixture
def rsa_keyring(db: Database, clock: FakeClock) -> Keyring:
    return make_keyring(db, clock, "RS256")


@pytest.fixture
def codec(keyring: Keyring, clock: FakeClock) -> TokenCodec:
    return make_codec(keyring, clock, cache_size=0)  # every verify is a first sight


def refused(codec: TokenCodec, token: Any, match: str | None = None) -> None:
    with pytest.raises(TokenError, match=match) as caught:
        codec.verify(token)
    assert caught.value.status == 401


def rsa_public_pem(keyring: Keyring) -> bytes:
    jwk = keyring.jwks()["keys"][0]
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big")
    public = rsa.RSAPublicNumbers(65537, n).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


# -- positive controls -----------------------------------------------------------------------------
@pytest.mark.req("A2", "A3")
def test_genuine_token_verifies_with_every_algorithm(codec: TokenCodec, keyring: Keyring) -> None:
    token, body = codec.issue({"sub": "user-1", "roles": ["user"], "tenant": "t1"})
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": keyring.alg, "typ": "JWT", "kid": keyring.current.kid}
    assert codec.verify(token) == body
    assert set(body) >= {"sub", "iss", "aud", "iat", "nbf", "exp", "jti", "roles", "tenant"}
    assert body["exp"] - body["iat"] == TTL


@pytest.mark.req("A3")
def test_hand_built_token_verifies(codec: TokenCodec, keyring: Keyring, clock: FakeClock) -> None:
    """The forging helper itself makes acceptable tokens: refusals below are about the attack."""
    assert codec.verify(signed_by(keyring, claims(clock())))["sub"] == "user-1"


# -- algorithm attacks ---------------------------------------------------------------------------
@pytest.mark.req("A3")
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
@pytest.mark.parametrize("signature", [b"", b"x"])
def test_alg_none_is_refused(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, alg: str, signature: bytes
) -> None:
    header = {"alg": alg, "typ": "JWT", "kid": keyring.current.kid}
    refused(codec, jws(header, claims(clock()), signature=signature), "algorithm not allowed")


@pytest.mark.req("A3")
@pytest.mark.parametrize("alg", [None, ["RS256"], {"RS256": 1}, 256, True])
def test_alg_of_the_wrong_type_is_a_401_not_a_crash(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, alg: Any
) -> None:
    header = {"alg": alg, "kid": keyring.current.kid} if alg is not None else {"kid": "x"}
    refused(codec, jws(header, claims(clock()), keyring.current.sign), "algorithm not allowed")


@pytest.mark.req("A3")
@pytest.mark.parametrize("encoding", ["spki-pem", "pkcs1-pem", "jwk-json", "der"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_the_public_key_as_secret_is_refused(
    rsa_keyring: Keyring, clock: FakeClock, encoding: str, alg: str
) -> None:
    """Key confusion: HMAC keyed with the published RSA key, as a naive verifier would check it."""
    codec = make_codec(rsa_keyring, clock, cache_size=0)
    pem = rsa_public_pem(rsa_keyring)
    public = serialization.load_pem_public_key(pem)
    secrets = {
        "spki-pem": pem,
        "pkcs1-pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ),
        "jwk-json": json.dumps(rsa_keyring.jwks()["keys"][0]).encode(),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    secret = secrets[encoding]
    header = {"alg": alg, "typ": "JWT", "kid": rsa_keyring.current.kid}
    token = jws(header, claims(clock()), lambda d: hmac.new(secret, d, digest).digest())
    refused(codec, token, "algorithm not allowed")


@pytest.mark.req("A3", "A6")
def test_rs256_and_es256_cannot_be_swapped(db: Database, clock: FakeClock) -> None:
    """Two live keys of different algorithms: a header naming the other algorithm never verifies."""
    keyring = make_keyring(db, clock, "RS256")
    rs_kid = keyring.current.kid
    rs_sign = keyring.current.sign
    keyring.rotate(alg="ES256")  # the RS256 key is retired but still verifies
    es_kid, es_sign = keyring.current.kid, keyring.current.sign
    codec = make_codec(keyring, clock, cache_size=0)
    body = claims(clock())
    assert codec.verify(jws({"alg": "RS256", "kid": rs_kid}, body, rs_sign))
    assert codec.verify(jws({"alg": "ES256", "kid": es_kid}, body, es_sign))
    # header alg swapped, signature from the real key of the kid
    refused(codec, jws({"alg": "ES256", "kid": rs_kid}, body, rs_sign), "does not match the key")
    refused(codec, jws({"alg": "RS256", "kid": es_kid}, body, es_sign), "does not match the key")
    # signature from the other key under this kid
    refused(codec, jws({"alg": "RS256", "kid": rs_kid}, body, es_sign), "bad signature")
    refused(codec, jws({"alg": "ES256", "kid": es_kid}, body, rs_sign), "bad signature")
    # EdDSA named on a P-256 key
    refused(codec, jws({"alg": "EdDSA", "kid": es_kid}, body, es_sign), "does not match the key")


@pytest.mark.req("A3")
def test_attacker_key_under_our_kid_is_refused(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    own = algorithms.signer(algorithms.generate(keyring.alg), keyring.alg)
    header = {"alg": keyring.alg, "kid": keyring.current.kid}
    refused(codec, jws(header, claims(clock()), own), "bad signature")


# -- key selection -------------------------------------------------------------------------------
@pytest.mark.req("A3")
@pytest.mark.parametrize("kid", ["no-such-kid", "", "../../etc/passwd", "a" * 200])
def test_unknown_kid_is_refused(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, kid: str
) -> None:
    refused(codec, signed_by(keyring, claims(clock()), kid=kid), "unknown signing key")


@pytest.mark.req("A3")
@pytest.mark.parametrize("kid", [None, 1, ["x"], {"kid": "x"}])
def test_missing_or_non_string_kid_is_refused(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, kid: Any
) -> None:
    token = signed_by(keyring, claims(clock()), kid=kid)
    if kid is None:
        token = jws({"alg": keyring.alg}, claims(clock()), keyring.current.sign)
    refused(codec, token, "unknown signing key")


@pytest.mark.req("A3")
def test_unknown_kid_reloads_the_keyring_at_most_every_two_seconds(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of made-up kids must not turn into a flood of database reads."""
    reads = 0
    rows = keyring._rows

    def counting_rows() -> Any:
        nonlocal reads
        reads += 1
        return rows()

    monkeypatch.setattr(keyring, "_rows", counting_rows)
    clock.advance(5)
    for i in range(50):
        refused(codec, signed_by(keyring, claims(clock()), kid=f"forged-{i}"))
    assert reads == 1


@pytest.mark.req("A3")
@pytest.mark.parametrize(
    "extra",
    [
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]},
        {
            "jwk": {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            }
        },
        {"crit": ["exp"]},
        {"crit": ["b64"], "b64": False},
        {"x5t": "abc"},
        {"x5t#S256": "abc"},
    ],
    ids=["jku", "x5u", "x5c", "jwk", "crit", "crit-b64", "x5t", "x5t#S256"],
)
def test_key_pointing_headers_are_refused_even_when_signed_by_us(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, extra: dict[str, Any]
) -> None:
    refused(codec, signed_by(keyring, claims(clock()), **extra), "header not allowed")


@pytest.mark.req("A3")
def test_embedded_jwk_of_the_attackers_key_is_refused(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    """The CVE-2018-0114 shape: sign with your own key and embed its public JWK in the header."""
    own = algorithms.generate(keyring.alg)
    header = {
        "alg": keyring.alg,
        "kid": keyring.current.kid,
        "jwk": algorithms.public_jwk(own, keyring.alg, "evil"),
    }
    refused(
        codec,
        jws(header, claims(clock()), algorithms.signer(own, keyring.alg)),
        "header not allowed",
    )


# -- claims --------------------------------------------------------------------------------------
@pytest.mark.req("A2", "A3")
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": None}, "wrong audience"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"aud": ["someone-else", "other"]}, "wrong audience"),
        ({"aud": []}, "wrong audience"),
        ({"aud": {"garrison-tests": True}}, "wrong audience"),
        ({"aud": AUDIENCE.upper()}, "wrong audience"),
        ({"iss": None}, "wrong issuer"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"iss": ISSUER + "/"}, "wrong issuer"),
        ({"iss": [ISSUER]}, "wrong issuer"),
        ({"sub": None}, "lacks sub or jti"),
        ({"sub": 42}, "lacks sub or jti"),
        ({"jti": None}, "lacks sub or jti"),
        ({"exp": None}, "valid exp"),
        ({"iat": None}, "valid exp"),
        ({"exp": "9999999999"}, "valid exp"),
        ({"exp": True}, "valid exp"),
        ({"exp": 1e999}, "valid exp"),  # json.dumps writes Infinity
        ({"nbf": "0"}, "valid exp"),
    ],
)
def test_bad_claims_are_refused_even_when_signed_by_us(
    codec: TokenCodec,
    keyring: Keyring,
    clock: FakeClock,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    token = signed_by(keyring, claims(clock(), **overrides))
    with pytest.raises(TokenError) as caught:
        codec.verify(token)
    assert reason in str(caught.value) or caught.value.detail == "malformed token"


@pytest.mark.req("A3")
@pytest.mark.parametrize("literal", [b"1e999", b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_exp_is_refused(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, literal: bytes
) -> None:
    """``json`` reads ``1e999`` as infinity and accepts ``NaN``: a token that would never expire."""
    body = json.dumps(claims(clock(), exp=0)).encode().replace(b'"exp": 0', b'"exp": ' + literal)
    current = keyring.current
    refused(codec, jws({"alg": current.alg, "kid": current.kid}, body, current.sign))


@pytest.mark.req("A2", "A3")
def test_audience_list_with_ours_is_accepted(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    token = signed_by(keyring, claims(clock(), aud=["other", AUDIENCE]))
    assert codec.verify(token)["aud"] == ["other", AUDIENCE]


@pytest.mark.req("A2", "A3")
def test_expiry_honours_the_skew_to_the_second(keyring: Keyring, clock: FakeClock) -> None:
    """Valid while ``exp > now - skew``; refused from ``now == exp + skew`` on, cached or not."""
    fresh = make_codec(keyring, clock, cache_size=0)
    cached = make_codec(keyring, clock)
    token, body = fresh.issue({"sub": "user-1"})
    assert cached.verify(token)  # now in the cache
    clock.now = body["exp"] + SKEW - 0.001
    assert fresh.verify(token)
    assert cached.verify(token)
    clock.now = body["exp"] + SKEW
    refused(fresh, token, "expired")
    refused(cached, token, "expired")


@pytest.mark.req("A3")
@pytest.mark.parametrize("field", ["nbf", "iat"])
def test_not_before_and_issued_at_in_the_future(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, field: str
) -> None:
    now = int(clock())
    assert codec.verify(signed_by(keyring, claims(now, **{field: now + SKEW})))  # inside skew
    refused(codec, signed_by(keyring, claims(now, **{field: now + SKEW + 1})), "not yet valid")
    refused(codec, signed_by(keyring, claims(now, **{field: now + 86400})), "not yet valid")


# -- tampering and structure ---------------------------------------------------------------------
@pytest.mark.req("A3")
@pytest.mark.parametrize(
    "change",
    [{"roles": ["admin"]}, {"sub": "user-2"}, {"tenant": "other"}, {"exp": 4_000_000_000}],
)
def test_tampered_claims_with_the_original_signature(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, change: dict[str, Any]
) -> None:
    token, body = codec.issue({"sub": "user-1", "roles": ["user"], "tenant": "t1"})
    head, _, sig = token.split(".")
    refused(codec, f"{head}.{segment({**body, **change})}.{sig}", "bad signature")


@pytest.mark.req("A3")
def test_tampered_header_with_the_original_signature(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    token, _ = codec.issue({"sub": "user-1"})
    _, body, sig = token.split(".")
    head = segment({"alg": keyring.alg, "kid": keyring.current.kid, "typ": "at+jwt"})
    refused(codec, f"{head}.{body}.{sig}", "bad signature")


@pytest.mark.req("A3")
def test_flipped_signature_bit(codec: TokenCodec, keyring: Keyring) -> None:
    token, _ = codec.issue({"sub": "user-1"})
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    for index in (0, len(raw) // 2, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[index] ^= 0x01
        refused(codec, f"{head}.{body}.{b64url(bytes(flipped))}", "bad signature")


@pytest.mark.req("A3")
def test_stripped_or_resized_signature(codec: TokenCodec, keyring: Keyring) -> None:
    token, _ = codec.issue({"sub": "user-1"})
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    refused(codec, f"{head}.{body}.", "malformed")
    refused(codec, f"{head}.{body}", "malformed")
    refused(codec, f"{head}.{body}.{b64url(raw[:-1])}", "bad signature")
    refused(codec, f"{head}.{body}.{b64url(raw + bytes(1))}", "bad signature")
    refused(codec, f"{head}.{body}.{b64url(bytes(len(raw)))}", "bad signature")


@pytest.mark.req("A3")
@pytest.mark.parametrize("shape", ["1", "2", "4", "5", "empty", "dots", "lead-dot"])
def test_wrong_number_of_segments(codec: TokenCodec, keyring: Keyring, shape: str) -> None:
    token, _ = codec.issue({"sub": "user-1"})
    head, body, sig = token.split(".")
    forged = {
        "1": head,
        "2": f"{head}.{body}",
        "4": f"{token}.{sig}",
        "5": f"{head}.{body}.{sig}.{sig}.{sig}",  # a JWE-shaped token
        "empty": "",
        "dots": "..",
        "lead-dot": f".{token}",
    }[shape]
    refused(codec, forged, "malformed")


@pytest.mark.req("A3")
@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize(
    "mangle", ["pad", "pad2", "plus-slash", "space", "non-canonical", "non-ascii", "len-mod-4-1"]
)
def test_non_canonical_base64_is_refused(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, where: int, mangle: str
) -> None:
    """One token has exactly one spelling: padded, standard-alphabet, stray-bit or non-ASCII
    variants of a genuine token are all refused (no malleable cache keys or denylist bypass)."""
    token = signed_by(keyring, claims(clock()))
    parts = token.split(".")
    assert codec.verify(token)
    parts[where] = _mangle(parts[where], mangle)
    refused(codec, ".".join(parts))


def _mangle(part: str, how: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if how == "pad":
        return part + "=" * (-len(part) % 4 or 4)
    if how == "pad2":
        return part + "=="
    if how == "plus-slash":
        # the standard alphabet's spelling; a segment with neither "-" nor "_" gets a "+" added
        return part.replace("-", "+").replace("_", "/") + ("" if {"-", "_"} & set(part) else "+")
    if how == "space":
        return part[:5] + " " + part[5:]
    if how == "non-ascii":
        return part[:5] + "é" + part[5:]
    if how == "len-mod-4-1":
        return part + "A" * ((1 - len(part)) % 4)
    # non-canonical: the same bytes with non-zero unused bits in the last character; a segment of
    # length 4k has no unused bits, so it gets one character more (length 4k+1: never base64)
    if len(part) % 4 == 0:
        return part + "Q"
    return part[:-1] + alphabet[alphabet.index(part[-1]) + 1]


@pytest.mark.req("A3")
def test_non_canonical_signature_decodes_to_the_same_bytes(
    codec: TokenCodec, keyring: Keyring
) -> None:
    """The stray-bit variant really is the same signature, so only the canonical check stops it."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    token, _ = codec.issue({"sub": "user-1"})
    head, body, sig = token.split(".")
    if len(sig) % 4 == 0:
        pytest.skip("this algorithm's signature length leaves no unused bits")
    variant = sig[:-1] + alphabet[alphabet.index(sig[-1]) + 1]
    pad = "=" * (-len(sig) % 4)
    assert base64.urlsafe_b64decode(variant + pad) == base64.urlsafe_b64decode(sig + pad)
    refused(codec, f"{head}.{body}.{variant}", "malformed")


@pytest.mark.req("A3")
def test_oversized_token_is_refused_before_any_work(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    token = signed_by(keyring, claims(clock(), pad="x" * MAX_TOKEN_BYTES))
    assert len(token) > MAX_TOKEN_BYTES
    refused(codec, token, "malformed")
    refused(codec, "a" * 10_000_000, "malformed")


@pytest.mark.req("A3")
@pytest.mark.parametrize(
    "bad",
    [[], ["alg"], "RS256", 1, None, b"\xff\xfe{}", b"{", b'{"alg":"RS256"', b"[" * 6000],
    ids=["list", "list2", "string", "number", "null", "not-utf8", "cut", "cut2", "deep-nesting"],
)
@pytest.mark.parametrize("where", ["header", "payload"])
def test_non_object_header_or_payload(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock, bad: Any, where: str
) -> None:
    current = keyring.current
    header: Any = {"alg": current.alg, "kid": current.kid}
    payload: Any = claims(clock())
    if where == "header":
        header = bad
    else:
        payload = bad
    refused(codec, jws(header, payload, current.sign), "malformed")


@pytest.mark.req("A3")
def test_utf16_json_is_not_json_for_jose(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    """``json.loads(bytes)`` would guess UTF-16; RFC 7515 says UTF-8 only."""
    current = keyring.current
    header = json.dumps({"alg": current.alg, "kid": current.kid}).encode("utf-16")
    refused(codec, jws(header, claims(clock()), current.sign), "malformed")


@pytest.mark.req("A3")
@pytest.mark.parametrize("value", [None, b"abc", 12, ["a.b.c"]])
def test_non_string_token_is_refused(codec: TokenCodec, value: Any) -> None:
    refused(codec, value, "malformed")


# -- keys that left the keyring ------------------------------------------------------------------
@pytest.mark.req("A3", "A6")
def test_token_from_a_revoked_key_fails_at_once(keyring: Keyring, clock: FakeClock) -> None:
    cached = make_codec(keyring, clock)
    token, _ = cached.issue({"sub": "user-1"})
    assert cached.verify(token)  # cached from here on
    keyring.rotate(emergency=True)
    refused(cached, token, "revoked")  # the cache does not keep it alive
    refused(make_codec(keyring, clock, cache_size=0), token, "unknown signing key")
    new_token, _ = cached.issue({"sub": "user-1"})
    assert cached.verify(new_token)


@pytest.mark.req("A3", "A6")
def test_token_from_a_retired_key_verifies_until_it_expires(
    keyring: Keyring, clock: FakeClock
) -> None:
    cached = make_codec(keyring, clock)
    fresh = make_codec(keyring, clock, cache_size=0)
    token, body = cached.issue({"sub": "user-1"})
    assert cached.verify(token)
    old_kid = keyring.current.kid
    clock.advance(TTL - 60)
    new_kid = keyring.rotate()
    assert new_kid != old_kid
    assert keyring.current.kid == new_kid
    assert cached.verify(token)
    assert fresh.verify(token)
    clock.now = body["exp"] + SKEW - 1
    assert cached.verify(token)
    assert fresh.verify(token)
    clock.now = body["exp"] + SKEW
    refused(cached, token, "expired")
    refused(fresh, token, "expired")
    # once the window has passed, the retired key leaves the keyring (and a forged long-lived
    # token under its kid has nothing to verify against)
    clock.now = body["exp"] + TTL + SKEW + 5
    keyring.load()
    assert old_kid not in keyring.verifiers
    refused(fresh, token, "unknown signing key")


@pytest.mark.req("A6")
def test_revocation_by_another_process_reaches_this_one_within_the_refresh_interval(
    db: Database, clock: FakeClock
) -> None:
    """No bus message at all (a CLI run next to a server without Redis): the periodic re-read of
    the key rows still kills the revoked key's tokens, cached or not."""
    here = make_keyring(db, clock, "EdDSA")
    elsewhere = make_keyring(db, clock, "EdDSA")
    codec = make_codec(here, clock)
    token, _ = codec.issue({"sub": "user-1"})
    assert codec.verify(token)
    elsewhere.rotate(emergency=True)
    assert codec.verify(token)  # within the interval: this process has not looked yet
    clock.advance(here.refresh_interval)
    refused(codec, token, "revoked")
    assert codec.verify(codec.issue({"sub": "user-1"})[0])


@pytest.mark.req("A3")
def test_refused_tokens_are_not_cached(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    cached = make_codec(keyring, clock)
    token = signed_by(keyring, claims(clock(), aud="other"))
    for _ in range(3):
        refused(cached, token, "wrong audience")
    assert not cached._cache


@pytest.mark.req("A2")
def test_issue_cannot_be_talked_into_other_registered_claims(
    codec: TokenCodec, clock: FakeClock
) -> None:
    token, body = codec.issue(
        {"sub": "user-1", "iss": "evil", "aud": "evil", "exp": 4_000_000_000, "jti": "fixed"}
    )
    assert body["iss"] == ISSUER
    assert body["aud"] == AUDIENCE
    assert body["exp"] == int(clock()) + TTL
    assert body["jti"] != "fixed"
    assert codec.verify(token) == body


@pytest.mark.req("A3")
def test_es256_signature_in_der_form_is_refused(db: Database, clock: FakeClock) -> None:
    """JWS ES256 is raw r||s (64 bytes); the DER form an X.509 library would emit is refused."""
    keyring = make_keyring(db, clock, "ES256")
    codec = make_codec(keyring, clock, cache_size=0)
    row_key = _private_key(keyring)
    assert isinstance(row_key, ec.EllipticCurvePrivateKey)
    from cryptography.hazmat.primitives import hashes

    header = {"alg": "ES256", "kid": keyring.current.kid}
    token = jws(header, claims(clock()), lambda d: row_key.sign(d, ec.ECDSA(hashes.SHA256())))
    refused(codec, token, "bad signature")


def _private_key(keyring: Keyring) -> Any:
    import sqlalchemy as sa

    from garrison.keys.sealing import unseal
    from garrison.storage.schema import signing_keys

    kid = keyring.current.kid
    with keyring.db.begin() as conn:
        sealed = conn.execute(
            sa.select(signing_keys.c.private_key).where(signing_keys.c.kid == kid)
        ).scalar_one()
    return algorithms.load_private(unseal(keyring.kek, sealed, kid.encode()))


# -- ES256: one spelling per signature (low S) -------------------------------------------------
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _s_of(token: str) -> int:
    sig = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    return int.from_bytes(sig[32:], "big")


def _high_s_twin(token: str) -> str:
    """The same ECDSA signature spelled with S' = n - S: valid for the same key and message."""
    signing_input, sig_b64 = token.rsplit(".", 1)
    sig = base64.urlsafe_b64decode(sig_b64 + "==")
    s = int.from_bytes(sig[32:], "big")
    twin = sig[:32] + (_P256_N - s).to_bytes(32, "big")
    return f"{signing_input}.{b64url(twin)}"


@pytest.mark.req("A3", "A2")
def test_garrison_signs_es256_with_low_s_only(db: Database, clock: FakeClock) -> None:
    """An ECDSA signature (r, s) is also valid as (r, n - s): a second spelling of every token.
    Garrison now signs the low one; of 64 tokens about half had a high S before."""
    keyring = make_keyring(db, clock, "ES256")
    tokens = [signed_by(keyring, claims(clock(), jti=f"j{i}")) for i in range(64)]
    assert all(_s_of(t) <= _P256_N // 2 for t in tokens)


@pytest.mark.req("A3")
def test_a_high_s_spelling_of_a_valid_es256_token_is_refused(
    db: Database, clock: FakeClock
) -> None:
    keyring = make_keyring(db, clock, "ES256")
    codec = make_codec(keyring, clock, cache_size=0)
    token = signed_by(keyring, claims(clock()))
    twin = _high_s_twin(token)
    assert algorithms.verifier(  # the twin is a mathematically valid signature ...
        _private_key(keyring).public_key()
    )(twin.rsplit(".", 1)[0].encode(), base64.urlsafe_b64decode(twin.rsplit(".", 1)[1] + "=="))
    assert codec.verify(token)
    refused(codec, twin, "signature")  # ... that Garrison's own tokens never carry


@pytest.mark.req("A3", "A10")
def test_an_external_issuers_high_s_es256_signature_still_verifies() -> None:
    """RFC 7518 does not ask for low S and common signers (OpenSSL, Java, Go) emit either: an IdP's
    or OIDC provider's token is not refused for it (RFC 7515 A.3's own vector has a high S)."""
    from garrison.keys.jwk import KeyEntry
    from garrison.tokens.jws import JwsDecoder, keyset_policy

    key = ec.generate_private_key(ec.SECP256R1())
    entry: KeyEntry = ("ES256", algorithms.verifier(key.public_key()))
    decoder = JwsDecoder(keyset_policy(ISSUER, AUDIENCE, SKEW), lambda _kid, _alg: entry)
    now = FakeClock()()
    token = jws({"alg": "ES256", "kid": "k"}, claims(now), algorithms.signer(key))
    high = token if _s_of(token) > _P256_N // 2 else _high_s_twin(token)
    assert decoder.decode(high, now)[0]["sub"] == claims(now)["sub"]
