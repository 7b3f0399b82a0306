"""Verification keys from JWKs (``keys.jwk``), with joserfc as the oracle (A3, A10, A11): keys
joserfc generates, exported as JWKs and imported here, verify the signatures joserfc makes with
them, and only those; symmetric keys are taken only where a caller asks for them."""

from __future__ import annotations

import base64
import warnings
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from garrison.keys.algorithms import b64url
from garrison.keys.jwk import hs256_key, jwk_verifier, jwks_keys

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _joserfc_key(alg: str) -> Any:
    if alg == "RS256":
        return RSAKey.generate_key(2048)
    if alg == "PS256":
        return RSAKey.generate_key(3072, {"alg": "PS256"})
    if alg == "ES256":
        return ECKey.generate_key("P-256")
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519")
    return OctKey.generate_key(256)


def _signed(key: Any, alg: str, payload: bytes = b'{"sub":"x"}') -> tuple[bytes, bytes]:
    """(signing input, signature) of a compact JWS joserfc makes with ``key``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags EdDSA as deprecated (RFC 9864)
        token = jws.serialize_compact({"alg": alg}, payload, key, algorithms=[alg])
    head, body, sig = token.split(".")
    return f"{head}.{body}".encode(), _b64(sig)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.req("A3", "A10", "A11")
@pytest.mark.parametrize("alg", ["PS256", "RS256", "ES256", "EdDSA"])
def test_public_jwks_from_joserfc_verify_joserfc_signatures(alg: str) -> None:
    key = _joserfc_key(alg)
    entry = jwk_verifier(key.as_dict(private=False))
    assert entry is not None
    got_alg, verify = entry
    assert got_alg == alg
    data, signature = _signed(key, alg)
    assert verify(data, signature)
    assert not verify(data + b"x", signature)
    other_data, other_signature = _signed(_joserfc_key(alg), alg)
    assert not verify(other_data, other_signature)  # another key's signature


@pytest.mark.req("A10", "A3")
def test_oct_is_hs256_only_where_the_caller_asks_for_a_shared_secret() -> None:
    key = OctKey.generate_key(256)
    jwk = key.as_dict()
    secret = jwk["k"]
    assert isinstance(secret, str)
    assert jwk_verifier(jwk) is None  # never from a fetched JWKS
    entry = jwk_verifier(jwk, symmetric=True)
    assert entry is not None
    alg, verify = entry
    assert alg == "HS256"
    data, signature = _signed(key, "HS256")
    assert verify(data, signature)
    assert not verify(data, bytes(len(signature)))
    # the configured-secret path builds the same key
    assert hs256_key(_b64(secret))[1](data, signature)


@pytest.mark.req("A10", "A3")
@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param({"kty": "oct", "k": b64url(b"short-secret"), "alg": "HS256"}, id="oct-short"),
        pytest.param({"kty": "oct", "k": b64url(bytes(32)), "alg": "HS512"}, id="oct-other-alg"),
        pytest.param({"kty": "oct", "k": 7}, id="oct-malformed"),
        pytest.param({"kty": "oct", "k": b64url(bytes(32)), "use": "enc"}, id="oct-enc"),
    ],
)
def test_unusable_symmetric_keys_are_none(jwk: dict[str, Any]) -> None:
    assert jwk_verifier(jwk, symmetric=True) is None


@pytest.mark.req("A3")
def test_an_empty_shared_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        hs256_key(b"")


@pytest.mark.req("A3")
@pytest.mark.parametrize("member", ["x", "y"])
def test_non_canonical_base64_in_a_jwk_member_is_refused(member: str) -> None:
    """The same bytes spelt with stray bits: refused, as in a token (one key, one spelling)."""
    jwk = ECKey.generate_key("P-256").as_dict(private=False)
    assert jwk_verifier(jwk) is not None
    value = jwk[member]
    assert isinstance(value, str)
    assert len(value) % 4 == 3  # 32 bytes: the last character carries 2 unused bits
    jwk[member] = value[:-1] + _ALPHABET[_ALPHABET.index(value[-1]) + 1]
    assert jwk_verifier(jwk) is None


@pytest.mark.req("A10", "A11", "A3")
def test_a_jwks_document_yields_its_public_signing_keys_only() -> None:
    rsa_key, ec_key = RSAKey.generate_key(2048), ECKey.generate_key("P-256")
    oct_key = OctKey.generate_key(256)
    document = {
        "keys": [
            {**rsa_key.as_dict(private=False), "kid": "r1"},
            ec_key.as_dict(private=False),  # no kid
            {**oct_key.as_dict(), "kid": "s1", "alg": "HS256"},
            {**rsa_key.as_dict(private=True), "kid": "leaked"},  # a private key: not taken
            "not-a-key",
        ]
    }
    named, unnamed = jwks_keys(document)
    assert set(named) == {"r1"}
    assert named["r1"][0] == "RS256"
    assert [alg for alg, _ in unnamed] == ["ES256"]
    data, signature = _signed(rsa_key, "RS256")
    assert named["r1"][1](data, signature)
    assert jwks_keys({"keys": "nope"}) == ({}, [])
    assert jwks_keys(["keys"]) == ({}, [])


@pytest.mark.req("A2", "A3")
@pytest.mark.asvs("9.1.2", "11.6.1")
def test_an_rsa_jwk_verifies_only_the_padding_its_alg_names() -> None:
    """PS256 and RS256 share a key type: a JWK naming PS256 refuses a PKCS#1 v1.5 signature of the
    same key (and the converse), so a header cannot move a PS256 key back to RS256."""
    key = RSAKey.generate_key(3072)
    public = key.as_dict(private=False)
    ps = jwk_verifier({**public, "alg": "PS256"})
    rs = jwk_verifier(public)  # no alg: RS256, as IdPs publish RSA keys
    assert ps is not None
    assert rs is not None
    assert (ps[0], rs[0]) == ("PS256", "RS256")
    ps_data, ps_sig = _signed(key, "PS256")
    rs_data, rs_sig = _signed(key, "RS256")
    assert ps[1](ps_data, ps_sig)
    assert rs[1](rs_data, rs_sig)
    assert not ps[1](rs_data, rs_sig)
    assert not rs[1](ps_data, ps_sig)
    assert jwk_verifier({**public, "alg": "PS384"}) is None
