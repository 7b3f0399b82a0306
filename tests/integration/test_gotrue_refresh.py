"""``POST /auth/refresh`` with a GoTrue refresh token goes to the self-hosted GoTrue named by
``SUPABASE_GOTRUE_URL`` (seed 001; A10, A5), over real HTTP to a stand-in on 127.0.0.1; a Garrison
refresh token (``grt_``) stays with Garrison. GoTrue's refusals become 401, its outages 503 with
Retry-After, never a 500; its redirects are not followed; a token Garrison would not accept is not
passed on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.config.settings import RouteDef
from garrison.errors import ConfigError
from garrison.gateway.asgi import create_app
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.gotrue_standin import GoTrueStandIn
from tests.support import free_port

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SUPABASE_URL = "https://project.example.test"
ISSUER = SUPABASE_URL + "/auth/v1"
ANON = "anon-key-of-the-self-hosted-project"

ROUTES = (RouteDef(prefix="/api/tickets", action="ticket.read"),)
App = tuple[TestClient, Services]
MakeApp = Callable[..., App]


@pytest.fixture
def gotrue() -> Iterator[GoTrueStandIn]:
    standin = GoTrueStandIn(secret=SECRET, issuer=ISSUER).start()
    yield standin
    standin.stop()


@pytest.fixture
def make_app(make_settings: MakeSettings, gotrue: GoTrueStandIn) -> Iterator[MakeApp]:
    opened: list[tuple[TestClient, Services]] = []

    def make(**overrides: Any) -> App:
        env: dict[str, Any] = {
            "SUPABASE_JWT_SECRET": SECRET,
            "SUPABASE_URL": SUPABASE_URL,
            "SUPABASE_GOTRUE_URL": gotrue.url,
            "SUPABASE_ANON_KEY": ANON,
            "SUPABASE_GOTRUE_TIMEOUT": "1",
        }
        env.update(overrides)
        env = {k: v for k, v in env.items() if v is not None}
        svc = build_services(make_settings(routes=ROUTES, **env))
        svc.keyring.load()
        client = TestClient(create_app(svc), base_url="http://127.0.0.1")
        client.__enter__()
        opened.append((client, svc))
        return client, svc

    yield make
    for client, svc in opened:
        client.__exit__(None, None, None)
        svc.close()


def _refresh(client: TestClient, token: str) -> Any:
    return client.post("/auth/refresh", json={"refresh_token": token})


def _verify(client: TestClient, token: str) -> Any:
    return client.get(
        "/verify",
        headers={**bearer(token), "X-Original-Method": "GET", "X-Original-URI": "/api/tickets/1"},
    )


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


@pytest.mark.req("A10")
def test_gotrue_refresh_token_is_exchanged_at_gotrue(
    make_app: MakeApp, gotrue: GoTrueStandIn
) -> None:
    client, _ = make_app()
    token = gotrue.issue("8b0c-user", email="sam@example.test")
    response = _refresh(client, token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"] != token
    assert body["refresh_token"] in gotrue.tokens
    assert response.headers["cache-control"] == "no-store"
    # what GoTrue received: its refresh grant, the JSON body and the project's apikey
    (seen,) = gotrue.seen
    assert (seen.method, seen.path, seen.query) == (
        "POST",
        "/token",
        {"grant_type": ["refresh_token"]},
    )
    assert seen.headers["apikey"] == ANON
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == b'{"refresh_token":"' + token.encode() + b'"}'
    # the access token GoTrue issued authenticates at /verify as a Supabase token
    verified = _verify(client, body["access_token"])
    assert verified.status_code == 200, verified.text
    assert verified.headers["x-auth-user"] == "supabase.8b0c-user"
    me = client.get("/auth/me", headers=bearer(body["access_token"])).json()
    assert me["email"] == "sam@example.test"
    # and the new refresh token refreshes again
    assert _refresh(client, body["refresh_token"]).status_code == 200


@pytest.mark.req("A5", "A10")
def test_a_reused_gotrue_refresh_token_is_401(make_app: MakeApp, gotrue: GoTrueStandIn) -> None:
    client, _ = make_app()
    token = gotrue.issue("reuser")
    successor = _refresh(client, token).json()["refresh_token"]
    replay = _problem(_refresh(client, token), 401)
    assert "gotrue: invalid_grant" in replay["reasons"]
    # GoTrue revoked the family on reuse: the successor is dead too, and that is a 401 as well
    _problem(_refresh(client, successor), 401)
    _problem(_refresh(client, "never-issued"), 401)


@pytest.mark.req("A5")
def test_a_garrison_refresh_token_stays_with_garrison(
    make_app: MakeApp, gotrue: GoTrueStandIn
) -> None:
    client, svc = make_app()
    svc.users.create("alice", PASSWORD)
    first = login(client, "alice")
    assert first["refresh_token"].startswith("grt_")
    second = _refresh(client, first["refresh_token"])
    assert second.status_code == 200, second.text
    assert second.json()["token_type"] == "Bearer"
    assert _problem(_refresh(client, first["refresh_token"]), 401)["type"].endswith("refresh_reuse")
    # a forged grt_ token is Garrison's to refuse too: GoTrue never hears of any of them
    _problem(_refresh(client, "grt_" + "A" * 43), 401)
    assert gotrue.seen == []


@pytest.mark.req("A10")
def test_without_the_setting_nothing_goes_to_gotrue(
    make_app: MakeApp, gotrue: GoTrueStandIn
) -> None:
    client, _ = make_app(SUPABASE_GOTRUE_URL=None)
    _problem(_refresh(client, gotrue.issue("someone")), 401)
    assert gotrue.seen == []


@pytest.mark.req("A10")
def test_no_apikey_header_without_an_anon_key(make_app: MakeApp, gotrue: GoTrueStandIn) -> None:
    client, _ = make_app(SUPABASE_ANON_KEY=None)
    assert _refresh(client, gotrue.issue("anon-less")).status_code == 200
    assert "apikey" not in gotrue.seen[0].headers


@pytest.mark.req("A10")
@pytest.mark.parametrize("mode", ["error", "garbage", "busy"])
def test_gotrue_failures_are_503_with_retry_after(
    make_app: MakeApp, gotrue: GoTrueStandIn, mode: str
) -> None:
    client, _ = make_app()
    gotrue.mode = mode
    response = _refresh(client, gotrue.issue("unlucky"))
    _problem(response, 503)
    assert int(response.headers["retry-after"]) == (7 if mode == "busy" else 5)


@pytest.mark.req("A10")
def test_gotrue_down_is_503_not_500(make_app: MakeApp) -> None:
    client, _ = make_app(SUPABASE_GOTRUE_URL=f"http://127.0.0.1:{free_port()}")
    response = _refresh(client, "a-gotrue-refresh-token")
    assert "unreachable" in _problem(response, 503)["detail"]
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.req("A10")
def test_a_slow_gotrue_is_cut_off_by_the_timeout(make_app: MakeApp, gotrue: GoTrueStandIn) -> None:
    client, _ = make_app(SUPABASE_GOTRUE_TIMEOUT="0.5")
    gotrue.mode, gotrue.slow_seconds = "slow", 3.0
    started = time.monotonic()
    response = _refresh(client, gotrue.issue("patient"))
    assert time.monotonic() - started < 2.5
    assert "in time" in _problem(response, 503)["detail"]
    assert "retry-after" in response.headers


@pytest.mark.req("A10")
def test_a_redirect_from_gotrue_is_not_followed(make_app: MakeApp, gotrue: GoTrueStandIn) -> None:
    elsewhere = GoTrueStandIn(secret=SECRET, issuer=ISSUER).start()
    try:
        client, _ = make_app()
        gotrue.mode, gotrue.redirect_to = (
            "redirect",
            elsewhere.url + "/token?grant_type=refresh_token",
        )
        _problem(_refresh(client, gotrue.issue("redirected")), 503)
        assert elsewhere.seen == []  # the refresh token never travelled to the redirect target
    finally:
        elsewhere.stop()


@pytest.mark.req("A10", "A3")
def test_a_token_garrison_would_not_accept_is_not_passed_on(
    make_app: MakeApp, gotrue: GoTrueStandIn
) -> None:
    client, _ = make_app()
    gotrue.mode = "foreign"  # signed with another project's secret
    response = _refresh(client, gotrue.issue("mixed-up"))
    body = _problem(response, 503)
    assert "access_token" not in body
    assert "SUPABASE_JWT_SECRET" in body["detail"]


@pytest.mark.req("A10", "A12")
def test_a_disabled_user_gets_no_fresh_tokens_through_gotrue(
    make_app: MakeApp, gotrue: GoTrueStandIn
) -> None:
    client, svc = make_app()
    first = _refresh(client, gotrue.issue("leaver")).json()
    user = svc.users.find_external("supabase:leaver")
    assert user is not None
    svc.users.set_active(user.id, False)
    svc.bus.publish("user", user.id)
    body = _problem(_refresh(client, first["refresh_token"]), 401)
    assert "access_token" not in body


@pytest.mark.req("A10")
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"SUPABASE_JWT_SECRET": None}, "SUPABASE_JWT_SECRET"),
        ({"SUPABASE_GOTRUE_URL": "ftp://gotrue.internal"}, "SUPABASE_GOTRUE_URL"),
        ({"SUPABASE_GOTRUE_URL": "https://user:pw@gotrue.internal"}, "SUPABASE_GOTRUE_URL"),
        ({"SUPABASE_GOTRUE_URL": "https://gotrue.internal/?x=1"}, "SUPABASE_GOTRUE_URL"),
        ({"SUPABASE_GOTRUE_TIMEOUT": "0"}, "SUPABASE_GOTRUE_TIMEOUT"),
        ({"SUPABASE_GOTRUE_TIMEOUT": "90"}, "SUPABASE_GOTRUE_TIMEOUT"),
    ],
)
def test_unusable_gotrue_settings_are_named(
    make_app: MakeApp, overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(**overrides)
    assert any(named in problem for problem in caught.value.problems), caught.value.problems
