"""Official JOSE test vectors (RFC 7515 A.2/A.3, RFC 8037 A.4/A.5) against ``keys.algorithms``, and a
two-way cross-check with joserfc: Garrison's tokens verify there with Garrison's published JWKS, and
tokens joserfc signs with a key from Garrison's keyring verify in Garrison (A2, A3, A6)."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from garrison.keys import algorithms
from garrison.keys.algorithms import ALGORITHMS, b64url
from garrison.keys.keyring import Keyring
from garrison.keys.sealing import unseal
from garrison.storage.db import Database
from garrison.storage.schema import signing_keys
from garrison.tokens.jwt import TokenCodec, TokenError
from tests.jose import AUDIENCE, ISSUER, FakeClock, make_codec, make_keyring, open_db

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(text: str) -> int:
    return int.from_bytes(_b64(text), "big")


# RFC 7515 appendix A.2: RS256. Signing input = protected header {"alg":"RS256"} . payload
# {"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}
RFC7515_PAYLOAD = (
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
)
RFC7515_A2_N = (
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4Q"
    "lL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBY"
    "UsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNm"
    "oudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
)
RFC7515_A2_E = "AQAB"
RFC7515_A2_INPUT = "eyJhbGciOiJSUzI1NiJ9." + RFC7515_PAYLOAD
RFC7515_A2_SIG = (
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5j"
    "ujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L0"
    "7Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipU"
    "TI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
)

# RFC 7515 appendix A.3: ES256 over the same payload with {"alg":"ES256"}.
RFC7515_A3_X = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
RFC7515_A3_Y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
RFC7515_A3_INPUT = "eyJhbGciOiJFUzI1NiJ9." + RFC7515_PAYLOAD
RFC7515_A3_SIG = (
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)

# RFC 8037 appendix A.1 (key), A.4 (signature), A.5 (verification): Ed25519, {"alg":"EdDSA"},
# payload "Example of Ed25519 signing".
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_INPUT = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIG = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


def _rfc_public(alg: str) -> algorithms.PublicKey:
    if alg in algorithms.RSA_ALGS:
        return rsa.RSAPublicNumbers(_int(RFC7515_A2_E), _int(RFC7515_A2_N)).public_key()
    if alg == "ES256":
        numbers = ec.EllipticCurvePublicNumbers(
            _int(RFC7515_A3_X), _int(RFC7515_A3_Y), ec.SECP256R1()
        )
        return numbers.public_key()
    return ed25519.Ed25519PublicKey.from_public_bytes(_b64(RFC8037_X))


VECTORS = {
    "RS256": (RFC7515_A2_INPUT, RFC7515_A2_SIG),
    "ES256": (RFC7515_A3_INPUT, RFC7515_A3_SIG),
    "EdDSA": (RFC8037_INPUT, RFC8037_SIG),
}
VECTOR_IDS = {"RS256": "rfc7515-A.2", "ES256": "rfc7515-A.3", "EdDSA": "rfc8037-A.4-A.5"}


#: PS256 signatures are randomised (PSS salt) and no RFC prints a PS256 vector: joserfc is its oracle
#: below (the keyring fixtures run every algorithm, PS256 included).
VECTOR_ALGS = list(VECTORS)


@pytest.mark.req("A2", "A3")
@pytest.mark.parametrize("alg", VECTOR_ALGS, ids=[VECTOR_IDS[a] for a in VECTOR_ALGS])
def test_rfc_signature_verifies(alg: str) -> None:
    signing_input, signature = VECTORS[alg]
    verify = algorithms.verifier(_rfc_public(alg), alg)
    assert verify(signing_input.encode(), _b64(signature))


@pytest.mark.req("A3")
@pytest.mark.parametrize("alg", VECTOR_ALGS, ids=[VECTOR_IDS[a] for a in VECTOR_ALGS])
@pytest.mark.parametrize("target", ["signature", "input"])
def test_rfc_vector_with_a_flipped_bit_is_refused(alg: str, target: str) -> None:
    signing_input, signature = VECTORS[alg]
    data, sig = bytearray(signing_input.encode()), bytearray(_b64(signature))
    buf = sig if target == "signature" else data
    verify = algorithms.verifier(_rfc_public(alg), alg)
    for index in range(0, len(buf), max(1, len(buf) // 7)):
        buf[index] ^= 0x01
        assert not verify(bytes(data), bytes(sig)), f"bit flip at byte {index} accepted"
        buf[index] ^= 0x01
    assert verify(bytes(data), bytes(sig))  # the restored vector still verifies


@pytest.mark.req("A2")
def test_rfc8037_signing_reproduces_the_published_signature() -> None:
    """Ed25519 is deterministic: Garrison's signer on the RFC key gives the RFC's bytes (A.4)."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(_b64(RFC8037_D))
    assert algorithms.public_jwk(key, "EdDSA", "k")["x"] == RFC8037_X
    assert b64url(algorithms.signer(key)(RFC8037_INPUT.encode())) == RFC8037_SIG


@pytest.mark.req("A3")
def test_rfc_signatures_do_not_cross_verify() -> None:
    """Each vector verifies only under its own key and algorithm: the RS256 vector fails as PS256
    under its own RSA key too."""
    for alg, (signing_input, signature) in VECTORS.items():
        for other in ALGORITHMS:
            if other != alg:
                verify = algorithms.verifier(_rfc_public(other), other)
                assert not verify(signing_input.encode(), _b64(signature))


# -- cross-check with joserfc ----------------------------------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    # joserfc validates exp/nbf against the real time: run the keyring on the real clock's "now"
    import time

    return FakeClock(time.time())


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_db(f"sqlite:///{tmp_path / 'keys.db'}")
    yield database
    database.dispose()


@pytest.fixture(params=ALGORITHMS)
def keyring(request: pytest.FixtureRequest, db: Database, clock: FakeClock) -> Keyring:
    return make_keyring(db, clock, request.param)


@pytest.fixture
def codec(keyring: Keyring, clock: FakeClock) -> TokenCodec:
    return make_codec(keyring, clock, cache_size=0)


def _joserfc_private(keyring: Keyring) -> Any:
    """The current private key, unsealed from the database, as a joserfc key with its kid."""
    kid = keyring.current.kid
    with keyring.db.begin() as conn:
        sealed = conn.execute(
            sa.select(signing_keys.c.private_key).where(signing_keys.c.kid == kid)
        ).scalar_one()
    key = algorithms.load_private(unseal(keyring.kek, sealed, kid.encode()))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if keyring.alg in algorithms.RSA_ALGS:
        return RSAKey.import_key(pem, {"kid": kid})
    if keyring.alg == "ES256":
        return ECKey.import_key(pem, {"kid": kid})
    return OKPKey.import_key(pem, {"kid": kid})


def _joserfc_claims_check(claims: dict[str, Any]) -> None:
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
        sub={"essential": True},
    )
    registry.validate(claims)


@pytest.mark.req("A2", "A6")
def test_garrison_tokens_verify_in_joserfc_with_the_published_jwks(
    codec: TokenCodec, keyring: Keyring
) -> None:
    token, body = codec.issue({"sub": "user-1", "roles": ["admin"]})
    key_set = KeySet.import_key_set(keyring.jwks())  # type: ignore[arg-type]
    decoded = jwt.decode(token, key_set, algorithms=[keyring.alg])
    assert decoded.header["kid"] == keyring.current.kid
    assert decoded.claims == body
    _joserfc_claims_check(decoded.claims)


@pytest.mark.req("A3", "A6")
def test_joserfc_refuses_a_garrison_token_after_emergency_rotation(
    codec: TokenCodec, keyring: Keyring
) -> None:
    token, _ = codec.issue({"sub": "user-1"})
    keyring.rotate(emergency=True)
    key_set = KeySet.import_key_set(keyring.jwks())  # type: ignore[arg-type]
    with pytest.raises((JoseError, ValueError)):
        jwt.decode(token, key_set, algorithms=[keyring.alg])


@pytest.mark.req("A2", "A3")
def test_joserfc_tokens_signed_with_a_published_key_verify_in_garrison(
    codec: TokenCodec, keyring: Keyring, clock: FakeClock
) -> None:
    key = _joserfc_private(keyring)
    now = int(clock())
    claims = {"sub": "user-9", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60}
    claims["jti"] = "j-1"
    header = {"alg": keyring.alg, "kid": keyring.current.kid}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = jwt.encode(header, claims, key, algorithms=[keyring.alg])
    if keyring.alg == "ES256":  # joserfc emits either S; Garrison's own tokens carry the low one
        token, high = _es256_spellings(token)
        with pytest.raises(TokenError, match="high S"):
            codec.verify(high)
    assert codec.verify(token) == claims
    # joserfc's own tokens get no pass on the checks: a wrong audience is still refused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = jwt.encode(header, {**claims, "aud": "other"}, key, algorithms=[keyring.alg])
    if keyring.alg == "ES256":  # the low spelling, so the audience is what is judged
        bad, _ = _es256_spellings(bad)
    with pytest.raises(TokenError, match="wrong audience"):
        codec.verify(bad)


def _es256_spellings(token: str) -> tuple[str, str]:
    """(low-S, high-S) spellings of one ES256 token's signature."""
    signing_input, sig_b64 = token.rsplit(".", 1)
    sig = _b64(sig_b64)
    s = int.from_bytes(sig[32:], "big")
    low, high = sorted((s, algorithms.P256_ORDER - s))
    spell = [f"{signing_input}.{b64url(sig[:32] + v.to_bytes(32, 'big'))}" for v in (low, high)]
    return spell[0], spell[1]


@pytest.mark.req("A6")
def test_published_jwks_matches_the_private_keys(keyring: Keyring) -> None:
    """The JWK Garrison publishes is the public half of the key it signs with (joserfc agrees)."""
    private = _joserfc_private(keyring)
    published = keyring.jwks()["keys"][0]
    public = private.as_dict(private=False)
    for field in ("kty", "n", "e", "crv", "x", "y"):
        assert published.get(field) == public.get(field)
    assert published["kid"] == keyring.current.kid
    assert published["use"] == "sig"
    assert published["alg"] == keyring.alg
    assert "d" not in published
    assert "p" not in published
