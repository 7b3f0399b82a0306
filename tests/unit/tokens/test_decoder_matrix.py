"""One hostile-token matrix, run against each use of the JWS decoder (A3, A10, A11).

Four uses, one decoder: Garrison's own access tokens (``TokenCodec``, ES256 from the keyring), an
external IdP with a shared secret (Supabase GoTrue, HS256), an external IdP with a JWKS URL and an
OIDC provider's id_tokens (both RS256 from a live test provider's JWKS). Every case is built for
each use with that use's own legitimate key, so a refusal is about the attack and never about a key
the use does not know; each case names the refusal reason, and every use must give it.

The key model differs in exactly one place, and the matrix says so: a shared secret is one key, so
there is no other key a ``kid`` could name, and a token of an attacker's key is a "bad signature"
there where a keyset says "unknown signing key".

joserfc is the oracle: it accepts the genuine token of every use (with keys it builds itself from
the same JWKs), and refuses the cases marked ``oracle``: they are real attacks on any verifier,
not artefacts of how the matrix forges its tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey, import_key

from garrison.app import Services, build_services
from garrison.config import load_settings
from garrison.errors import AuthenticationError
from garrison.keys import algorithms
from garrison.keys.algorithms import b64url
from garrison.tokens.jws import (
    ASYMMETRIC_ALGS,
    MAX_TOKEN_BYTES,
    Policy,
    own_policy,
    shared_secret_policy,
)
from tests.jose import segment
from tests.oidc_provider import CLIENT_ID, TestProvider, sign_jwt

SECRET = "matrix-shared-secret-with-well-over-thirty-two-characters"
GOTRUE_ISS = "https://project.supabase.co/auth/v1"
NONCE = "matrix-nonce-0123456789"
SHARED = "shared-secret"  # the key model of the GoTrue use


@dataclass
class Use:
    """One use of the decoder: how its legitimate issuer signs, and how it checks a token."""

    name: str
    model: str  # "keyset" (a kid names one of several public keys) or SHARED
    alg: str
    kid: str | None
    sign: Callable[[bytes], bytes]
    issuer: str
    audience: str
    jwk: dict[str, Any]  # the verification key as a JWK, for the oracle
    check: Callable[[str], dict[str, Any]]  # claims, or an AuthenticationError
    extra: dict[str, Any] = field(default_factory=dict)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "matrix-user",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": "matrix-jti",
            "nonce": NONCE,
            **self.extra,
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}

    def header(self, **overrides: Any) -> dict[str, Any]:
        head: dict[str, Any] = {"alg": self.alg, "typ": "JWT"}
        if self.kid is not None:
            head["kid"] = self.kid
        head.update(overrides)
        return {k: v for k, v in head.items() if v is not None}

    def token(self, header: Any = None, claims: Any = None, sign: Any = None) -> str:
        """A compact JWS of these parts (bytes are taken verbatim), signed by this use's issuer
        unless ``sign`` says otherwise."""
        head = self.header() if header is None else header
        body = self.claims() if claims is None else claims
        signing_input = f"{segment(head)}.{segment(body)}"
        return f"{signing_input}.{b64url((sign or self.sign)(signing_input.encode()))}"

    def reason(self, token: Any) -> str | None:
        """None when accepted; else the refusal reason (a 401, never another error)."""
        try:
            self.check(token)
        except AuthenticationError as exc:
            refusal = exc
        else:
            return None
        assert refusal.status == 401
        return refusal.detail.removeprefix("id_token refused: ")


# -- the four uses ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[TestProvider, TestProvider]]:
    with TestProvider() as corp, TestProvider() as oidc:
        yield corp, oidc


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, providers: tuple[TestProvider, TestProvider]
) -> Iterator[Services]:
    corp, oidc = providers
    data: Path = tmp_path_factory.mktemp("matrix")
    env = {
        "GARRISON_DATA_DIR": str(data),
        "GARRISON_DOTENV": "/nonexistent",
        "GARRISON_SIGNING_ALG": "ES256",
        "SUPABASE_JWT_SECRET": SECRET,
        "SUPABASE_JWT_ISSUER": GOTRUE_ISS,
        "GARRISON_JWKS_REFETCH_INTERVAL": "3600",  # no refetch storm from unknown kids
    }
    overrides = {
        "external_idps": {
            "corp": {
                "issuer": corp.url,
                "audience": "api://garrison",
                "jwks_url": f"{corp.url}/jwks",
            }
        },
        "oidc": {
            "test": {
                "issuer": oidc.url,
                "client_id": CLIENT_ID,
                "redirect_uri": "http://127.0.0.1/auth/oidc/test/callback",
            }
        },
    }
    svc = build_services(load_settings(env, overrides=overrides))
    svc.keyring.load()
    yield svc
    svc.close()


def _hs256(secret: str) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret.encode(), data, hashlib.sha256).digest()


def _own(svc: Services) -> Use:
    current = svc.keyring.current
    jwk = next(k for k in svc.keyring.jwks()["keys"] if k["kid"] == current.kid)
    return Use(
        "garrison", "keyset", current.alg, current.kid, current.sign,
        svc.settings.issuer, svc.settings.audience, jwk, svc.codec.verify,
    )  # fmt: skip


def _external(svc: Services, issuer: str) -> Callable[[str], dict[str, Any]]:
    external = svc.authenticator.external
    assert external is not None
    idp = external.by_issuer[issuer]
    return lambda token: external.verify(token, idp)


def _gotrue(svc: Services) -> Use:
    jwk = {"kty": "oct", "k": b64url(SECRET.encode()), "alg": "HS256"}
    return Use(
        "gotrue", SHARED, "HS256", None, _hs256(SECRET),
        GOTRUE_ISS, "authenticated", jwk, _external(svc, GOTRUE_ISS),
    )  # fmt: skip


def _corp(svc: Services, corp: TestProvider) -> Use:
    return Use(
        "jwks-idp", "keyset", "RS256", corp.kid, algorithms.signer(corp.key, "RS256"),
        corp.url, "api://garrison", corp.jwks()["keys"][0], _external(svc, corp.url),
    )  # fmt: skip


def _oidc(svc: Services, provider: TestProvider) -> Use:
    def check(token: str) -> dict[str, Any]:
        return svc.oidc.verify_id_token("test", token, NONCE)

    return Use(
        "oidc", "keyset", "RS256", provider.kid, algorithms.signer(provider.key, "RS256"),
        provider.url, CLIENT_ID, provider.jwks()["keys"][0], check,
        extra={"azp": CLIENT_ID},  # OIDC's own rule: an audience list needs azp = client_id
    )  # fmt: skip


@pytest.fixture(scope="module", params=["garrison", "gotrue", "jwks-idp", "oidc"])
def use(
    request: pytest.FixtureRequest,
    services: Services,
    providers: tuple[TestProvider, TestProvider],
) -> Use:
    corp, oidc = providers
    build: dict[str, Callable[[], Use]] = {
        "garrison": lambda: _own(services),
        "gotrue": lambda: _gotrue(services),
        "jwks-idp": lambda: _corp(services, corp),
        "oidc": lambda: _oidc(services, oidc),
    }
    return build[request.param]()


# -- forging helpers -------------------------------------------------------------------------
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())


def _attacker(u: Use) -> Callable[[bytes], bytes]:
    """A key of the use's algorithm that the use does not know."""
    if u.alg == "HS256":
        return _hs256("an-attacker-secret-that-is-also-long-enough-to-pass")
    return algorithms.signer(_ATTACKER_EC if u.alg == "ES256" else _ATTACKER_RSA, "RS256")


def _other_family(u: Use) -> str:
    """HS/RS confusion: HMAC keyed with the use's published key (PEM, as a naive library takes
    it); for the shared-secret use, the converse: an RS256 token of some RSA key."""
    if u.alg == "HS256":
        return sign_jwt(_ATTACKER_RSA, {"alg": "RS256", "typ": "JWT"}, u.claims())
    public = import_key(u.jwk)
    assert isinstance(public, RSAKey | ECKey)
    pem = public.as_pem(private=False)
    return u.token(u.header(alg="HS256"), sign=lambda d: hmac.new(pem, d, hashlib.sha256).digest())


def _tampered(u: Use) -> str:
    """Claims changed under the original signature."""
    head, _, sig = u.token().split(".")
    return f"{head}.{segment(u.claims(sub='admin'))}.{sig}"


def _swapped_alg(u: Use) -> str:
    """The header names another allowed algorithm than the key's; signed with the real key."""
    return u.token(u.header(alg="RS256" if u.alg == "ES256" else "ES256"))


def _mangle(part: str, how: str) -> str:
    if how == "pad":
        return part + "=" * (-len(part) % 4 or 4)
    if how == "std-alphabet":
        return part.replace("-", "+").replace("_", "/") + ("" if {"-", "_"} & set(part) else "+")
    assert how == "stray-bits"  # the same bytes, non-zero unused bits in the last character
    if len(part) % 4 == 0:
        return part + "Q"
    return part[:-1] + _ALPHABET[_ALPHABET.index(part[-1]) + 1]


def _non_canonical(where: int, how: str) -> Callable[[Use], str]:
    """A non-canonical spelling of one segment. The header and payload are mangled *before*
    signing, so the token is genuinely signed by the use's issuer and only strictness stops it."""

    def build(u: Use) -> str:
        head, body = segment(u.header()), segment(u.claims())
        if where == 2:
            signing_input = f"{head}.{body}"
            sig = b64url(u.sign(signing_input.encode()))
            return f"{signing_input}.{_mangle(sig, how)}"
        parts = [head, body]
        parts[where] = _mangle(parts[where], how)
        signing_input = ".".join(parts)
        return f"{signing_input}.{b64url(u.sign(signing_input.encode()))}"

    return build


def _raw_claims(u: Use, extra: str) -> bytes:
    """The use's claims as raw JSON with ``extra`` members appended (duplicates, literals)."""
    text = json.dumps(u.claims())
    return (text[:-1] + ", " + extra + "}").encode()


def _raw_date(name: str, literal: str) -> Callable[[Use], str]:
    def build(u: Use) -> str:
        claims = {k: v for k, v in u.claims().items() if k != name}
        text = json.dumps(claims)[:-1] + f', "{name}": {literal}}}'
        return u.token(claims=text.encode())

    return build


def _claims(**overrides: Any) -> Callable[[Use], str]:
    return lambda u: u.token(claims=u.claims(**overrides))


def _header(**overrides: Any) -> Callable[[Use], str]:
    return lambda u: u.token(u.header(**overrides))


def _now(offset: int) -> int:
    return int(time.time()) + offset


@dataclass(frozen=True)
class Case:
    build: Callable[[Use], str]
    reason: str | None  # None: accepted; else a fragment of the refusal reason
    shared: str | None = "same"  # the reason under a shared secret, when the key model differs
    oracle: bool = False  # joserfc refuses it too


MALFORMED = "malformed token"
NOT_ALLOWED = "algorithm not allowed"
HEADER = "token header not allowed"
DATES = "token lacks valid exp, nbf or iat"
CONTROL = "control character"


def _raw_text(**extra: Any) -> Callable[[Use], str]:
    """Claims serialised without escaping (UTF-8 as it is): a control character raw in the text."""
    return lambda u: u.token(
        claims=json.dumps({**u.claims(), **extra}, ensure_ascii=False).encode()
    )


CASES: dict[str, Case] = {
    # positive controls: the matrix's own tokens are acceptable
    "genuine": Case(lambda u: u.token(), None),
    "genuine-aud-list": Case(lambda u: u.token(claims=u.claims(aud=["other", u.audience])), None),
    # algorithm allow-list
    "alg-none": Case(lambda u: u.token(u.header(alg="none"), sign=lambda _d: b""), NOT_ALLOWED, oracle=True),
    "alg-None": Case(_header(alg="None"), NOT_ALLOWED, oracle=True),
    "alg-empty": Case(_header(alg=""), NOT_ALLOWED, oracle=True),
    "alg-missing": Case(lambda u: u.token({k: v for k, v in u.header().items() if k != "alg"}), NOT_ALLOWED, oracle=True),
    "alg-list": Case(_header(alg=["RS256"]), NOT_ALLOWED),
    "alg-HS512": Case(_header(alg="HS512"), NOT_ALLOWED, oracle=True),
    # PS256 is allowed (the default of Garrison's own keys), but never on a key of another algorithm
    "alg-PS256": Case(_header(alg="PS256"), "algorithm does not match the key", shared=NOT_ALLOWED, oracle=True),
    "hs-rs-confusion": Case(_other_family, NOT_ALLOWED, oracle=True),
    "alg-swapped-for-the-key": Case(_swapped_alg, "algorithm does not match the key", shared=NOT_ALLOWED, oracle=True),
    # keys
    "attacker-key-under-our-kid": Case(lambda u: u.token(sign=_attacker(u)), "bad signature", oracle=True),
    "attacker-key-unknown-kid": Case(lambda u: u.token(u.header(kid="attacker-1"), sign=_attacker(u)), "unknown signing key", shared="bad signature", oracle=True),
    "kid-number": Case(_header(kid=7), "unknown signing key"),
    "kid-list": Case(_header(kid=["x"]), "unknown signing key"),
    "tampered-claims": Case(_tampered, "bad signature", oracle=True),
    "signature-stripped": Case(lambda u: u.token().rsplit(".", 1)[0] + ".", MALFORMED, oracle=True),
    # headers that point at keys, or that change how a token is processed
    "jku": Case(_header(jku="https://attacker.example/jwks.json"), HEADER),
    "x5u": Case(_header(x5u="https://attacker.example/cert.pem"), HEADER),
    "x5c": Case(_header(x5c=["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]), HEADER),
    "jwk-embedded": Case(lambda u: u.token(u.header(jwk=algorithms.public_jwk(_ATTACKER_RSA, "RS256", "evil")), sign=_attacker(u)), HEADER),
    "crit": Case(_header(crit=["exp"]), HEADER),
    "crit-b64": Case(_header(crit=["b64"], b64=False), HEADER),
    "x5t": Case(_header(x5t="abc"), HEADER),
    # one token, one spelling
    **{
        f"non-canonical-{part}-{how}": Case(_non_canonical(where, how), MALFORMED)
        for where, part in enumerate(("header", "payload", "signature"))
        for how in ("pad", "std-alphabet", "stray-bits")
    },
    "non-ascii": Case(lambda u: u.token()[:5] + "é" + u.token()[5:], MALFORMED),
    "two-segments": Case(lambda u: u.token().rsplit(".", 1)[0], MALFORMED, oracle=True),
    "five-segments": Case(lambda u: u.token() + ".e30.e30", MALFORMED, oracle=True),
    "oversized": Case(_claims(pad="x" * MAX_TOKEN_BYTES), MALFORMED),
    # strict JSON
    "duplicate-header-alg": Case(lambda u: u.token(json.dumps(u.header())[:-1].encode() + b', "alg": "none"}'), MALFORMED),
    "duplicate-header-kid": Case(lambda u: u.token(json.dumps(u.header(kid=u.kid or "k1"))[:-1].encode() + b', "kid": "other"}'), MALFORMED),
    "duplicate-claim-aud": Case(lambda u: u.token(claims=b'{"aud": "someone-else", ' + json.dumps(u.claims())[1:].encode()), MALFORMED),
    "duplicate-claim-sub": Case(lambda u: u.token(claims=_raw_claims(u, '"sub": "admin"')), MALFORMED),
    "header-not-an-object": Case(lambda u: u.token(["alg", u.alg]), MALFORMED),
    "payload-not-an-object": Case(lambda u: u.token(claims=["sub"]), MALFORMED),
    "payload-deep-nesting": Case(lambda u: u.token(claims=b"[" * 6000), MALFORMED),
    "payload-utf16": Case(lambda u: u.token(claims=json.dumps(u.claims()).encode("utf-16")), MALFORMED),
    # numeric dates: finite numbers, required, in range
    "exp-NaN": Case(_raw_date("exp", "NaN"), MALFORMED),
    "exp-Infinity": Case(_raw_date("exp", "Infinity"), MALFORMED),
    "nbf-minus-Infinity": Case(_raw_date("nbf", "-Infinity"), MALFORMED),
    "exp-1e999": Case(_raw_date("exp", "1e999"), DATES),
    "iat-1e999": Case(_raw_date("iat", "-1e999"), DATES),
    "exp-huge-integer": Case(_raw_date("exp", "1" + "0" * 400), DATES),
    "exp-missing": Case(_claims(exp=None), DATES, oracle=True),
    "iat-missing": Case(_claims(iat=None), DATES),
    "exp-string": Case(_claims(exp=str(_now(300))), DATES, oracle=True),
    "exp-true": Case(_claims(exp=True), DATES),
    "iat-string": Case(_claims(iat=str(_now(0))), DATES, oracle=True),
    "nbf-string": Case(_claims(nbf=str(_now(0))), DATES, oracle=True),
    "expired": Case(_claims(iat=_now(-7200), nbf=_now(-7200), exp=_now(-3600)), "token expired", oracle=True),
    "nbf-in-the-future": Case(_claims(nbf=_now(3600)), "token not yet valid", oracle=True),
    "iat-in-the-future": Case(_claims(iat=_now(3600)), "token not yet valid", oracle=True),
    # issuer, audience, subject
    "iss-wrong": Case(_claims(iss="https://evil.example"), "wrong issuer", oracle=True),
    "iss-missing": Case(_claims(iss=None), "wrong issuer", oracle=True),
    "iss-list": Case(lambda u: u.token(claims=u.claims(iss=[u.issuer])), "wrong issuer"),
    "aud-wrong": Case(_claims(aud="someone-else"), "wrong audience", oracle=True),
    "aud-missing": Case(_claims(aud=None), "wrong audience", oracle=True),
    "aud-list-without-ours": Case(_claims(aud=["a", "b"]), "wrong audience", oracle=True),
    "aud-case": Case(lambda u: u.token(claims=u.claims(aud=u.audience.upper())), "wrong audience", oracle=True),
    "sub-missing": Case(_claims(sub=None), "token lacks sub"),
    "sub-empty": Case(_claims(sub=""), "token lacks sub"),
    "sub-number": Case(_claims(sub=42), "token lacks sub"),
    # control characters (E7) in every spelling JSON has: escaped, raw, in a list, in a name
    "claim-control-escaped-nul": Case(_claims(email="a\x00b@example.test"), CONTROL),
    "claim-control-escaped-newline": Case(_claims(preferred_username="sam\nadmin"), CONTROL),
    "claim-control-raw-u2028": Case(_raw_text(name="a\u2028b"), CONTROL),
    "claim-control-raw-c1": Case(_raw_text(name="a\x85b"), CONTROL),
    "claim-control-raw-del": Case(_raw_text(name="a\x7fb"), CONTROL),
    "claim-control-in-a-list": Case(_claims(roles=["reader", "a\x1bb"]), CONTROL),
    "claim-control-in-a-name": Case(_raw_text(**{"x\x85y": "v"}), CONTROL),
    "claim-lone-surrogate-escaped": Case(lambda u: u.token(claims=json.dumps(u.claims())[:-1].encode() + b', "name": "\\ud800"}'), CONTROL),
    # positive controls for the one-scan shortcut: JSON whitespace and harmless escapes
    "genuine-pretty-printed": Case(lambda u: u.token(claims=json.dumps(u.claims(), indent=2).encode()), None),
    "genuine-escaped-accent": Case(_claims(name="caf\u00e9 \u4e2d"), None),
    "genuine-raw-utf8": Case(_raw_text(name="caf\u00e9 \u4e2d"), None),
}  # fmt: skip


def _expected(case: Case, u: Use) -> str | None:
    return case.shared if u.model == SHARED and case.shared != "same" else case.reason


@pytest.mark.req("A3", "A10", "A11")
@pytest.mark.parametrize("name", list(CASES))
def test_every_use_gives_the_same_answer(use: Use, name: str) -> None:
    case = CASES[name]
    expected = _expected(case, use)
    got = use.reason(case.build(use))
    if expected is None:
        assert got is None, f"{use.name} refused a genuine token: {got}"
    else:
        assert got is not None, f"{use.name} accepted {name}"
        assert expected in got, f"{use.name}: {name} refused as {got!r}, not {expected!r}"


def _oracle_accepts(u: Use, token: str) -> bool:
    """joserfc's verdict with the use's key (imported by joserfc from the JWK) and claims."""
    registry = jwt.JWTClaimsRegistry(
        leeway=30,
        iss={"essential": True, "value": u.issuer},
        aud={"essential": True, "value": u.audience},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded = jwt.decode(token, import_key(u.jwk), algorithms=[u.alg])
        registry.validate(decoded.claims)
    except (JoseError, ValueError, TypeError, KeyError):
        return False
    return True


@pytest.mark.req("A3", "A10", "A11")
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.oracle or c.reason is None])
def test_the_oracle_agrees(use: Use, name: str) -> None:
    """joserfc accepts what the matrix calls genuine and refuses what it calls an attack."""
    case = CASES[name]
    assert _oracle_accepts(use, case.build(use)) is (_expected(case, use) is None)


# -- the policies themselves -----------------------------------------------------------------
@pytest.mark.req("A3", "A10")
def test_hs256_is_never_allowed_next_to_another_algorithm() -> None:
    """One allow-list never holds HS256 and an asymmetric algorithm: with both, a public key
    could be fed an HMAC token keyed with itself."""
    with pytest.raises(ValueError, match="HS256"):
        Policy(frozenset({"HS256", "RS256"}), "https://iss.example", "aud")
    with pytest.raises(ValueError, match="unsupported"):
        Policy(frozenset({"none"}), "https://iss.example", "aud")
    with pytest.raises(ValueError, match="unsupported"):
        Policy(frozenset(), "https://iss.example", "aud")
    assert shared_secret_policy("https://iss.example", "aud", 30).algorithms == {"HS256"}


@pytest.mark.req("A3", "A2")
def test_garrisons_own_policy_is_asymmetric_and_needs_kid_sub_and_jti(services: Services) -> None:
    policy = services.codec._decoder.policy
    assert policy == own_policy(services.settings.issuer, services.settings.audience, 30)
    assert "HS256" not in policy.algorithms
    assert policy.algorithms == ASYMMETRIC_ALGS
    assert policy.require_kid
    assert policy.required == ("sub", "jti")
    external = services.authenticator.external
    assert external is not None
    algs = {idp.name: idp.decoder.policy.algorithms for idp in external.by_issuer.values()}
    assert algs == {"supabase": {"HS256"}, "corp": ASYMMETRIC_ALGS}  # HS256: the secret's IdP only


@pytest.mark.req("A3")
def test_garrisons_tokens_without_a_jti_or_kid_are_refused(services: Services) -> None:
    """The parts of the matrix only Garrison's own policy asks for."""
    own = _own(services)
    assert own.reason(own.token(claims=own.claims(jti=None))) == "token lacks sub or jti"
    assert own.reason(own.token(own.header(kid=None))) == "unknown signing key"
    gotrue = _gotrue(services)  # GoTrue tokens carry a jti, but nothing requires one of an IdP
    assert gotrue.reason(gotrue.token(claims=gotrue.claims(jti=None))) is None
