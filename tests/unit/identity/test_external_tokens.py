"""Tokens from an external IdP (A10): Supabase GoTrue HS256 with audience, and an IdP with a JWKS
URL (served by the test provider), mapped to local roles; forged and confused tokens refused (A3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from garrison.app import Services, build_services, external_idp_config
from garrison.config import load_settings
from garrison.errors import ConfigError
from garrison.gateway.asgi import create_app
from garrison.identity.external import build_idps
from tests.conftest import MakeSettings, bearer
from tests.jose import jws, segment
from tests.oidc_provider import TestProvider, sign_jwt

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
GOTRUE_ISS = "https://project.supabase.co/auth/v1"


def hs256(claims: dict[str, Any], secret: str = SECRET, **header: Any) -> str:
    head = {"alg": "HS256", "typ": "JWT", **header}
    data = f"{segment(head)}.{segment(claims)}".encode()
    return jws(head, claims, signature=hmac.new(secret.encode(), data, hashlib.sha256).digest())


def _int(b64: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)), "big")


def gotrue_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": GOTRUE_ISS,
        "aud": "authenticated",
        "sub": "8b0c-user",
        "email": "sam@example.test",
        "role": "authenticated",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def supabase(make_settings: MakeSettings) -> Iterator[tuple[TestClient, Services]]:
    svc = build_services(
        make_settings(
            SUPABASE_JWT_SECRET=SECRET,
            SUPABASE_URL="https://project.supabase.co",
            SUPABASE_ADMIN_ROLES="service_role,admin",
        )
    )
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        yield client, svc
    svc.close()


def _me(client: TestClient, token: str) -> Any:
    return client.get("/auth/me", headers=bearer(token))


# -- Supabase GoTrue (HS256 + audience) -------------------------------------------------------
@pytest.mark.req("A10")
def test_gotrue_token_is_accepted_and_mapped(supabase: tuple[TestClient, Services]) -> None:
    client, svc = supabase
    response = _me(client, hs256(gotrue_claims()))
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["user"]
    assert response.json()["email"] == "sam@example.test"
    assert response.json()["username"] == "supabase.8b0c-user"
    mimic = _me(client, hs256(gotrue_claims(sub="other", preferred_username="admin")))
    assert mimic.json()["username"] == "supabase.other"  # never a name the IdP user chose
    user = svc.users.find_external("supabase:8b0c-user")  # provisioned just in time
    assert user is not None
    assert user.password_hash is None


@pytest.mark.req("A10")
@pytest.mark.parametrize("role", ["service_role", "admin"])
def test_gotrue_admin_roles_map_to_admin(supabase: tuple[TestClient, Services], role: str) -> None:
    client, _ = supabase
    response = _me(client, hs256(gotrue_claims(role=role, sub=f"sub-{role}")))
    assert response.status_code == 200
    assert "admin" in response.json()["roles"]


@pytest.mark.req("A10")
def test_unmapped_roles_grant_nothing(supabase: tuple[TestClient, Services]) -> None:
    client, _ = supabase
    response = _me(client, hs256(gotrue_claims(role="postgres", sub="odd")))
    assert response.status_code == 200
    assert response.json()["roles"] == []


@pytest.mark.req("A10", "A3")
@pytest.mark.parametrize(
    "token_factory",
    [
        pytest.param(lambda: hs256(gotrue_claims(), secret="x" * 40), id="wrong-secret"),
        pytest.param(lambda: hs256(gotrue_claims(aud="anon")), id="wrong-audience"),
        pytest.param(lambda: hs256(gotrue_claims(aud=None)), id="no-audience"),
        pytest.param(
            lambda: hs256(gotrue_claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
            id="expired",
        ),
        pytest.param(lambda: hs256(gotrue_claims(nbf=int(time.time()) + 3600)), id="not-yet-valid"),
        pytest.param(lambda: hs256(gotrue_claims(exp=1e999)), id="infinite-exp"),
        pytest.param(lambda: hs256(gotrue_claims(sub=None)), id="no-sub"),
        pytest.param(lambda: jws({"alg": "none", "typ": "JWT"}, gotrue_claims()), id="alg-none"),
        pytest.param(
            lambda: hs256(gotrue_claims(), jku="https://evil.example/jwks"), id="jku-header"
        ),
        pytest.param(lambda: hs256(gotrue_claims(), crit=["exp"]), id="crit-header"),
    ],
)
def test_bad_gotrue_tokens_are_refused(
    supabase: tuple[TestClient, Services], token_factory: Any
) -> None:
    client, _ = supabase
    response = _me(client, token_factory())
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.req("A10", "A3")
def test_hs256_never_verifies_garrisons_own_tokens(supabase: tuple[TestClient, Services]) -> None:
    """A token naming Garrison's kid, forged with HS256 keyed by Garrison's public key (classic
    key confusion) or even by the IdP's shared secret, is refused either way."""
    client, svc = supabase
    kid = svc.keyring.current.kid
    now = int(time.time())
    own = {"iss": svc.settings.issuer, "aud": svc.settings.audience, "sub": "x", "iat": now,
           "exp": now + 600, "jti": "j", "roles": ["admin"]}  # fmt: skip
    jwk = next(k for k in svc.keyring.jwks()["keys"] if k["kid"] == kid)
    public_pem = (
        rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"]))
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for secret in (public_pem.decode(), SECRET):
        assert _me(client, hs256(own, secret=secret, kid=kid)).status_code == 401
        # claiming the IdP's issuer but naming Garrison's key: still not the IdP's to check
        claimed = {**gotrue_claims(), "roles": ["admin"]}
        assert _me(client, hs256(claimed, secret=secret, kid=kid)).status_code == 401


@pytest.mark.req("A10", "A4", "A12")
def test_disabling_an_external_user_stops_their_tokens(
    supabase: tuple[TestClient, Services],
) -> None:
    client, svc = supabase
    token = hs256(gotrue_claims())
    assert _me(client, token).status_code == 200
    user = svc.users.find_external("supabase:8b0c-user")
    assert user is not None
    time.sleep(1.1)  # iat has whole seconds: revoke in a later second than the token's
    svc.users.revoke_sessions(user.id)
    assert _me(client, token).status_code == 401
    assert _me(client, hs256(gotrue_claims())).status_code == 200  # a newer token works
    svc.users.set_active(user.id, False)
    assert _me(client, hs256(gotrue_claims())).status_code == 401


@pytest.mark.req("A10", "C2")
def test_weak_supabase_secret_is_refused_in_production(tmp_path: Any) -> None:
    import httpx

    settings = load_settings(
        {
            "GARRISON_ENV": "production",
            "GARRISON_DATA_DIR": str(tmp_path),
            "SUPABASE_JWT_SECRET": "changeme",
            "SUPABASE_URL": "https://p.supabase.co",
        },
        check_production=False,
    )
    with httpx.Client() as http, pytest.raises(ConfigError, match="SUPABASE_JWT_SECRET"):
        build_idps(external_idp_config(settings, {}), http)


@pytest.mark.req("A10")
def test_supabase_without_an_issuer_is_a_clear_config_error(tmp_path: Any) -> None:
    import httpx

    settings = load_settings(
        {"GARRISON_DATA_DIR": str(tmp_path), "SUPABASE_JWT_SECRET": SECRET}, check_production=False
    )
    with httpx.Client() as http, pytest.raises(ConfigError, match="SUPABASE_JWT_ISSUER"):
        build_idps(external_idp_config(settings, {}), http)


# -- an IdP with a JWKS URL -------------------------------------------------------------------
@pytest.fixture
def corp(make_settings: MakeSettings) -> Iterator[tuple[TestClient, Services, TestProvider]]:
    with TestProvider() as idp:
        settings = make_settings(
            external_idps={
                "corp": {
                    "issuer": idp.url,
                    "audience": "api://garrison",
                    "jwks_url": f"{idp.url}/jwks",
                    "role_claim": "groups",
                    "admin_roles": ["ops"],
                    "role_map": {"support-team": "support"},
                }
            },
            GARRISON_JWKS_REFETCH_INTERVAL=60,
        )
        svc = build_services(settings)
        with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
            yield client, svc, idp
        svc.close()


def corp_claims(idp: TestProvider, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": idp.url, "aud": ["api://garrison"], "sub": "emp-7", "iat": now,
              "exp": now + 600, "groups": ["support-team"]}  # fmt: skip
    claims.update(overrides)
    return claims


@pytest.mark.req("A10")
def test_jwks_idp_token_is_accepted_and_mapped(
    corp: tuple[TestClient, Services, TestProvider],
) -> None:
    client, _, idp = corp
    response = _me(client, idp.sign(corp_claims(idp)))
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["support", "user"]
    ops = _me(client, idp.sign(corp_claims(idp, sub="emp-8", groups=["ops"])))
    assert "admin" in ops.json()["roles"]


@pytest.mark.req("A10", "A3")
def test_jwks_idp_refuses_unknown_kid_and_refetches_at_most_once(
    corp: tuple[TestClient, Services, TestProvider],
) -> None:
    client, _, idp = corp
    assert _me(client, idp.sign(corp_claims(idp))).status_code == 200
    fetches = idp.jwks_fetches
    for i in range(5):
        assert _me(client, idp.sign(corp_claims(idp), kid=f"made-up-{i}")).status_code == 401
    assert idp.jwks_fetches - fetches <= 1  # a flood of unknown kids is not a flood of fetches


@pytest.mark.req("A10", "A3")
def test_jwks_idp_refuses_confused_and_foreign_tokens(
    corp: tuple[TestClient, Services, TestProvider],
) -> None:
    client, _, idp = corp
    public_pem = idp.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = hs256(corp_claims(idp), secret=public_pem.decode(), kid=idp.kid)
    assert _me(client, confused).status_code == 401  # HS256 keyed with the public key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = sign_jwt(other, {"alg": "RS256", "kid": idp.kid}, corp_claims(idp))
    assert _me(client, forged).status_code == 401  # right kid, wrong key
    assert _me(client, idp.sign(corp_claims(idp, aud="api://other"))).status_code == 401
    assert _me(client, idp.sign(corp_claims(idp), jku=f"{idp.url}/jwks")).status_code == 401
    expired = corp_claims(idp, exp=int(time.time()) - 600)
    assert _me(client, idp.sign(expired)).status_code == 401


@pytest.mark.req("A10", "A7")
def test_external_admins_are_not_api_keys(
    corp: tuple[TestClient, Services, TestProvider],
) -> None:
    client, _, idp = corp
    token = idp.sign(corp_claims(idp, groups=["ops"], sub="emp-9"))
    response = client.get("/admin/users", headers=bearer(token))
    assert response.status_code == 200, response.text
