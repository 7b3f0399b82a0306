"""The remote JWKS behind JWKS-URL IdPs and OIDC providers (A10, A11, A3): which keys are taken,
caching with a TTL, refetch on rotation, and no refetch storm on made-up ``kid`` values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from garrison.identity.jwks import RemoteJwks
from garrison.keys.algorithms import generate, public_jwk, signer
from garrison.keys.jwk import jwk_verifier
from tests.jose import FakeClock
from tests.oidc_provider import TestProvider


@pytest.mark.req("A10", "A3")
@pytest.mark.parametrize("alg", ["PS256", "RS256", "ES256", "EdDSA"])
def test_asymmetric_jwks_keys_verify_their_own_signatures(alg: str) -> None:
    key = generate(alg)
    parsed = jwk_verifier(public_jwk(key, alg, "k1"))
    assert parsed is not None
    got_alg, verify = parsed
    assert got_alg == alg
    assert verify(b"data", signer(key, alg)(b"data"))
    assert not verify(b"other", signer(key, alg)(b"data"))


def _rsa_jwk(bits: int = 2048, **extra: Any) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**public_jwk(key, "RS256", "k"), **extra}


@pytest.mark.req("A10", "A3")
@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}, id="symmetric"),
        pytest.param(_rsa_jwk(1024), id="rsa-1024"),
        pytest.param(_rsa_jwk(use="enc"), id="encryption-key"),
        pytest.param(_rsa_jwk(alg="RS512"), id="alg-mismatch"),
        pytest.param(_rsa_jwk(d="AQAB"), id="private-key"),
        pytest.param(_rsa_jwk(key_ops=["encrypt"]), id="key-ops-without-verify"),
        pytest.param({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}, id="other-curve"),
        pytest.param({"kty": "OKP", "crv": "X25519", "x": "AA"}, id="x25519"),
        pytest.param({"kty": "RSA", "n": 5, "e": "AQAB"}, id="malformed"),
    ],
)
def test_keys_that_are_not_public_signing_keys_are_ignored(jwk: dict[str, Any]) -> None:
    assert jwk_verifier(jwk) is None


@pytest.fixture
def idp() -> Iterator[TestProvider]:
    with TestProvider() as running:
        yield running


@pytest.mark.req("A10", "A11")
def test_rotation_is_picked_up_by_a_refetch_at_most_every_interval(idp: TestProvider) -> None:
    clock = FakeClock()
    with httpx.Client() as http:
        jwks = RemoteJwks(f"{idp.url}/jwks", http, ttl=3600, min_refetch=30, clock=clock)
        assert jwks.lookup(idp.kid, "RS256") is not None
        assert jwks.lookup(idp.kid, "ES256") is None  # the key's algorithm, no other
        assert idp.jwks_fetches == 1
        idp.key, idp.kid = rsa.generate_private_key(public_exponent=65537, key_size=2048), "k2"
        assert jwks.lookup("k2", "RS256") is None  # too soon after the last fetch
        assert idp.jwks_fetches == 1
        clock.advance(31)
        assert jwks.lookup("k2", "RS256") is not None  # unknown kid: one refetch
        assert idp.jwks_fetches == 2
        for i in range(10):
            assert jwks.lookup(f"bogus-{i}", "RS256") is None
        assert idp.jwks_fetches == 2


@pytest.mark.req("A10")
def test_keys_expire_after_the_ttl(idp: TestProvider) -> None:
    clock = FakeClock()
    with httpx.Client() as http:
        jwks = RemoteJwks(f"{idp.url}/jwks", http, ttl=60, min_refetch=5, clock=clock)
        assert jwks.lookup(idp.kid, "RS256") is not None
        clock.advance(61)
        jwks.lookup(idp.kid, "RS256")
        assert idp.jwks_fetches == 2


@pytest.mark.req("A10")
def test_an_unreachable_jwks_keeps_the_last_good_keys(idp: TestProvider) -> None:
    clock = FakeClock()
    with httpx.Client() as http:
        jwks = RemoteJwks(f"{idp.url}/jwks", http, ttl=60, min_refetch=5, clock=clock)
        assert jwks.lookup(idp.kid, "RS256") is not None
        idp.stop()
        clock.advance(61)
        assert jwks.lookup(idp.kid, "RS256") is not None


@pytest.mark.req("A10", "A3")
def test_a_kidless_token_needs_a_single_candidate_key(idp: TestProvider) -> None:
    with httpx.Client() as http:
        jwks = RemoteJwks(f"{idp.url}/jwks", http)
        assert jwks.lookup(None, "RS256") is not None  # one RSA key: unambiguous
        assert jwks.lookup(None, "EdDSA") is None
