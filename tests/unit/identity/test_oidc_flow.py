"""OIDC login against a real (test) provider over HTTP, and the attacks each check stops (A11, A13,
A9). Garrison runs in process; the provider is a live server on a loopback port."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from tests.conftest import MakeSettings
from tests.jose import jws, segment
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider, s256
from tests.unit.identity.browser import (
    BINDING,
    CSRF,
    REFRESH,
    SESSION,
    Browser,
    audit_rows,
    path_of,
    query_of,
    set_cookies,
)

CALLBACK = "http://127.0.0.1/auth/oidc/test/callback"


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with TestProvider() as running:
        yield running


@dataclass
class Env:
    client: TestClient
    services: Services
    provider: TestProvider

    def browser(self) -> Browser:
        return Browser(self.client)


def _settings(make_settings: MakeSettings, provider: TestProvider, **extra: Any) -> Any:
    return make_settings(
        oidc={
            "test": {
                "issuer": provider.url,
                "client_id": CLIENT_ID,
                "client_secret_env": "GARRISON_TEST_OIDC_SECRET",
                "redirect_uri": CALLBACK,
                "post_login_url": "/app",
            }
        },
        **extra,
    )


@pytest.fixture
def make_env(
    make_settings: MakeSettings, provider: TestProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Env]]:
    monkeypatch.setenv("GARRISON_TEST_OIDC_SECRET", CLIENT_SECRET)
    opened: list[tuple[TestClient, Services]] = []

    def make(**extra: Any) -> Env:
        svc = build_services(_settings(make_settings, provider, **extra))
        client = TestClient(create_app(svc), base_url="http://127.0.0.1")
        client.__enter__()
        opened.append((client, svc))
        return Env(client, svc, provider)

    yield make
    for client, svc in opened:
        client.__exit__(None, None, None)
        svc.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    return make_env()


def begin(browser: Browser) -> str:
    """GET /auth/oidc/test/login; returns the provider URL Garrison redirected to."""
    response = browser.request("GET", "/auth/oidc/test/login")
    assert response.status_code == 302, response.text
    return response.headers["location"]


def authorize(url: str) -> str:
    """The provider auto-approves; returns the callback URL it redirects back to."""
    response = httpx.get(url, follow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK)
    return location


def finish(browser: Browser, callback_url: str) -> httpx2.Response:
    return browser.request("GET", path_of(callback_url))


def full_login(env: Env, browser: Browser | None = None) -> tuple[Browser, httpx2.Response]:
    browser = browser or env.browser()
    response = finish(browser, authorize(begin(browser)))
    return browser, response


# -- the happy path ---------------------------------------------------------------------------
@pytest.mark.req("A11", "A9")
def test_login_sets_a_cookie_session_and_redirects(env: Env) -> None:
    browser, response = full_login(env)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/app"
    assert "no-store" in response.headers["cache-control"]
    cookies = set_cookies(response)
    assert {SESSION, REFRESH, CSRF} <= set(cookies)
    assert cookies[BINDING].attrs["max-age"] == "0"  # the one-time binding is cleared
    assert "access_token" not in response.text
    assert "code=" not in response.headers["location"]
    me = browser.request("GET", "/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "test.user-1"
    assert me.json()["email"] == "alice@example.test"


@pytest.mark.req("A11")
def test_authorization_request_uses_pkce_s256_state_nonce_and_minimal_scopes(env: Env) -> None:
    browser = env.browser()
    url = begin(browser)
    q = query_of(url)
    assert url.startswith(f"{env.provider.url}/authorize?")
    assert q["scope"] == "openid email"
    assert q["response_type"] == "code"
    assert q["code_challenge_method"] == "S256"
    assert len(q["state"]) >= 43
    assert len(q["nonce"]) >= 43
    assert q["state"] != q["nonce"]
    binding = set_cookies(browser.client.get("/auth/oidc/test/login", follow_redirects=False))
    cookie = binding[BINDING]
    assert {"httponly", "secure"} <= cookie.flags
    assert cookie.attrs["samesite"] == "Lax"
    assert cookie.attrs["path"] == "/"
    assert "domain" not in cookie.attrs
    finish(browser, authorize(url))
    sent = env.provider.token_requests[-1]
    assert s256(sent["code_verifier"]) == q["code_challenge"]  # the verifier never left before
    assert "client_secret" not in sent  # sent as client_secret_basic, not in the form


@pytest.mark.req("A11")
def test_first_login_becomes_admin_and_the_second_user_does_not(env: Env) -> None:
    first, _ = full_login(env)
    assert first.request("GET", "/auth/me").json()["roles"] == ["admin", "user"]
    env.provider.subject, env.provider.email = "user-2", "bob@example.test"
    second, _ = full_login(env)
    assert second.request("GET", "/auth/me").json()["roles"] == ["user"]
    # and the first user logging in again stays who they were
    env.provider.subject = "user-1"
    again, _ = full_login(env)
    assert again.request("GET", "/auth/me").json()["roles"] == ["admin", "user"]


@pytest.mark.req("A11", "A1")
def test_no_oidc_admin_when_an_operator_already_exists(env: Env) -> None:
    env.services.users.create("operator", "a long admin password", roles=("admin",))
    browser, _ = full_login(env)
    assert browser.request("GET", "/auth/me").json()["roles"] == ["user"]


@pytest.mark.req("A11", "A4")
def test_a_disabled_oidc_user_cannot_log_in_again(env: Env) -> None:
    browser, _ = full_login(env)
    user = env.services.users.find_external("test:user-1")
    assert user is not None
    env.services.users.set_active(user.id, False)
    assert browser.request("GET", "/auth/me").status_code == 401
    _, again = full_login(env)
    assert again.status_code == 401
    assert SESSION not in set_cookies(again)


@pytest.mark.req("A11")
def test_unverified_email_is_not_taken(env: Env) -> None:
    env.provider.id_token_claims = lambda c: {**c, "email_verified": False}
    browser, _ = full_login(env)
    assert browser.request("GET", "/auth/me").json()["email"] is None


# -- state ------------------------------------------------------------------------------------
@pytest.mark.req("A11")
def test_callback_without_state_is_refused(env: Env) -> None:
    browser = env.browser()
    url = authorize(begin(browser))
    q = query_of(url)
    response = browser.request("GET", f"/auth/oidc/test/callback?code={q['code']}")
    assert response.status_code == 401
    assert response.json()["type"].endswith("oidc_state")


@pytest.mark.req("A11")
def test_callback_with_a_forged_state_is_refused(env: Env) -> None:
    browser = env.browser()
    q = query_of(authorize(begin(browser)))
    response = browser.request("GET", f"/auth/oidc/test/callback?code={q['code']}&state=forged")
    assert response.status_code == 401


@pytest.mark.req("A11")
def test_a_replayed_callback_is_refused(env: Env) -> None:
    browser = env.browser()
    callback = authorize(begin(browser))
    binding = browser.jar[BINDING]
    assert finish(browser, callback).status_code == 303
    browser.jar[BINDING] = binding  # the attacker even has the binding cookie
    replay = finish(browser, callback)
    assert replay.status_code == 401
    assert replay.json()["type"].endswith("oidc_state")


@pytest.mark.req("A11")
def test_a_callback_from_another_browser_is_refused(env: Env) -> None:
    """Login CSRF / stolen callback URL: the state is bound to the browser that started."""
    victim, attacker = env.browser(), env.browser()
    callback = authorize(begin(attacker))
    begin(victim)  # the victim has a binding cookie of their own, for another state
    response = finish(victim, callback)
    assert response.status_code == 401
    assert SESSION not in set_cookies(response)
    no_cookie = env.browser()
    assert finish(no_cookie, authorize(begin(env.browser()))).status_code == 401


@pytest.mark.req("A11")
def test_an_expired_state_is_refused(make_env: Callable[..., Env]) -> None:
    env = make_env(GARRISON_OIDC_STATE_TTL=30)
    browser = env.browser()
    callback = authorize(begin(browser))
    store = env.services.oidc.store
    store.clock = lambda: time.time() + 31  # type: ignore[attr-defined]
    assert finish(browser, callback).status_code == 401


@pytest.mark.req("A11")
def test_repeated_callback_parameters_are_refused(env: Env) -> None:
    browser = env.browser()
    callback = authorize(begin(browser))
    response = browser.request("GET", path_of(callback) + "&state=other")
    assert response.status_code == 400


@pytest.mark.req("A11")
def test_provider_error_is_a_refusal(env: Env) -> None:
    browser = env.browser()
    state = query_of(begin(browser))["state"]
    response = browser.request("GET", f"/auth/oidc/test/callback?error=access_denied&state={state}")
    assert response.status_code == 401
    assert "access_denied" in response.json()["detail"]


# -- PKCE -------------------------------------------------------------------------------------
@pytest.mark.req("A11")
def test_an_injected_code_fails_pkce(env: Env) -> None:
    """A code issued for the attacker's login, injected into the victim's (own state, own
    binding): Garrison sends the victim's verifier, which does not match the code's challenge."""
    attacker, victim = env.browser(), env.browser()
    stolen_code = query_of(authorize(begin(attacker)))["code"]
    victim_state = query_of(authorize(begin(victim)))["state"]
    response = victim.request(
        "GET", f"/auth/oidc/test/callback?code={stolen_code}&state={victim_state}"
    )
    assert response.status_code == 401
    assert env.provider.token_requests[-1]["code_verifier"]  # it was sent, and was wrong


# -- the id_token -----------------------------------------------------------------------------
def _refused_with(env: Env, fragment: str) -> None:
    _, response = full_login(env)
    assert response.status_code == 401, response.text
    assert response.json()["type"].endswith("oidc_id_token")
    assert fragment in response.json()["detail"]
    assert SESSION not in set_cookies(response)


@pytest.mark.req("A11")
def test_nonce_mismatch_is_refused(env: Env) -> None:
    env.provider.id_token_claims = lambda c: {**c, "nonce": "not-the-nonce"}
    _refused_with(env, "nonce")


@pytest.mark.req("A11")
def test_missing_nonce_is_refused(env: Env) -> None:
    env.provider.id_token_claims = lambda c: {k: v for k, v in c.items() if k != "nonce"}
    _refused_with(env, "nonce")


@pytest.mark.req("A11")
def test_wrong_audience_is_refused(env: Env) -> None:
    env.provider.id_token_claims = lambda c: {**c, "aud": "another-client"}
    _refused_with(env, "audience")


@pytest.mark.req("A11")
def test_foreign_authorized_party_is_refused(env: Env) -> None:
    env.provider.id_token_claims = lambda c: {**c, "aud": [CLIENT_ID, "other"], "azp": "other"}
    _refused_with(env, "authorized party")


@pytest.mark.req("A11")
def test_wrong_issuer_is_refused(env: Env) -> None:
    env.provider.id_token_claims = lambda c: {**c, "iss": "https://evil.example"}
    _refused_with(env, "issuer")


@pytest.mark.req("A11")
def test_expired_id_token_is_refused(env: Env) -> None:
    env.provider.id_token_claims = lambda c: {**c, "iat": c["iat"] - 3600, "exp": c["iat"] - 600}
    _refused_with(env, "expired")


@pytest.mark.req("E7", "A11")
@pytest.mark.parametrize("claim", ["sub", "email", "preferred_username"])
@pytest.mark.parametrize("bad", ["\x00", "\n", "\x7f", "\u2028"])
def test_id_token_with_a_control_character_is_refused_on_both_databases(
    make_env: Callable[..., Env], backend_url: str, claim: str, bad: str
) -> None:
    """A NUL in the id_token's ``sub`` or ``email`` reached the user row: a 500 on PostgreSQL. A
    control character in any claim now refuses the id_token, and no user is provisioned."""
    env = make_env(DATABASE_URL=backend_url)
    env.provider.id_token_claims = lambda c: {**c, claim: f"{c.get(claim, 'sam')}{bad}x"}
    _refused_with(env, claim)
    assert env.services.users.count_admins() == 0
    assert env.services.users.list(None, all_tenants=True) == []


@pytest.mark.req("A11", "A3")
def test_id_token_signed_by_another_key_is_refused(env: Env) -> None:
    env.provider.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _refused_with(env, "bad signature")


@pytest.mark.req("A11", "A3")
def test_id_token_with_unknown_kid_is_refused(env: Env) -> None:
    env.provider.id_token_header = lambda h: {**h, "kid": "nobody"}
    _refused_with(env, "unknown signing key")


@pytest.mark.req("A11", "A3")
def test_id_token_with_embedded_jwk_header_is_refused(env: Env) -> None:
    env.provider.id_token_header = lambda h: {**h, "jwk": env.provider.jwks()["keys"][0]}
    _refused_with(env, "header not allowed")


@pytest.mark.req("A11", "A3")
def test_alg_none_id_token_is_refused(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsigned(grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {"iss": env.provider.url, "sub": "user-1", "aud": CLIENT_ID, "iat": now,
                  "exp": now + 300, "nonce": grant["nonce"]}  # fmt: skip
        return jws({"alg": "none", "typ": "JWT"}, claims)

    monkeypatch.setattr(env.provider, "_id_token", unsigned)
    _refused_with(env, "algorithm not allowed")


@pytest.mark.req("A11", "A3")
def test_hs256_id_token_keyed_with_the_client_secret_is_refused(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OIDC allows HS256 keyed with the client secret; Garrison does not (asymmetric only)."""
    import hashlib
    import hmac

    def hmac_signed(grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {"iss": env.provider.url, "sub": "user-1", "aud": CLIENT_ID, "iat": now,
                  "exp": now + 300, "nonce": grant["nonce"]}  # fmt: skip
        head = {"alg": "HS256", "typ": "JWT", "kid": env.provider.kid}
        data = f"{segment(head)}.{segment(claims)}".encode()
        return jws(
            head, claims, signature=hmac.new(CLIENT_SECRET.encode(), data, hashlib.sha256).digest()
        )

    monkeypatch.setattr(env.provider, "_id_token", hmac_signed)
    _refused_with(env, "algorithm not allowed")


# -- throttling and audit (A13) ---------------------------------------------------------------
@pytest.mark.req("A13", "A11")
def test_oidc_endpoints_are_rate_limited_per_ip(make_env: Callable[..., Env]) -> None:
    env = make_env(GARRISON_OIDC_MAX_PER_IP=3)
    browser = env.browser()
    codes = [browser.request("GET", "/auth/oidc/test/login").status_code for _ in range(3)]
    assert codes == [302, 302, 302]
    blocked = browser.request("GET", "/auth/oidc/test/callback?code=x&state=y")
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert ("deny", "throttled") in [
        (r.outcome, r.reason) for r in audit_rows(env.services, "auth.oidc")
    ]


@pytest.mark.req("A13", "L2")
def test_every_oidc_attempt_is_audited(env: Env) -> None:
    full_login(env)
    browser = env.browser()
    browser.request("GET", "/auth/oidc/test/callback?code=x&state=forged")
    rows = [(r.outcome, r.details["step"]) for r in audit_rows(env.services, "auth.oidc")]
    assert rows == [
        ("success", "login"),
        ("success", "callback"),
        ("failure", "callback"),
    ]
    assert all("code" not in str(r.details) for r in audit_rows(env.services, "auth.oidc"))


@pytest.mark.req("A11")
def test_unknown_provider_is_404(env: Env) -> None:
    assert env.browser().request("GET", "/auth/oidc/nope/login").status_code == 404


@pytest.mark.req("A11")
def test_unreachable_provider_is_503_not_a_trace(make_settings: MakeSettings) -> None:
    from tests.support import free_port

    settings = make_settings(
        oidc={"gone": {"issuer": f"http://127.0.0.1:{free_port()}", "client_id": "x"}}
    )
    svc = build_services(settings)
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        response = client.get("/auth/oidc/gone/login", follow_redirects=False)
    svc.close()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.req("A11", "C1")
def test_bad_provider_configuration_names_every_problem(make_settings: MakeSettings) -> None:
    from garrison.app import oidc_config
    from garrison.errors import ConfigError
    from garrison.identity.oidc import build_providers

    settings = make_settings(
        oidc={
            "Bad Name": {"issuer": "http://idp.example.com", "client_id": ""},
            "ok": {
                "issuer": "https://idp.example.com",
                "client_id": "x",
                "scopes": ["email"],
                "client_secret_env": "GARRISON_TEST_MISSING_SECRET",
            },
        }
    )
    with pytest.raises(ConfigError) as caught:
        build_providers(oidc_config(settings, {}))
    problems = "\n".join(caught.value.problems)
    for expected in (
        "oidc.Bad Name: a provider name",
        "oidc.Bad Name.issuer: must be an https URL",
        "oidc.Bad Name.client_id: required",
        "oidc.ok.scopes: must include 'openid'",
        "GARRISON_TEST_MISSING_SECRET: missing",
    ):
        assert expected in problems
