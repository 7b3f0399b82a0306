"""Browser sessions: cookie flags, CSRF on every cookie-authenticated state change, origin checks,
cookie refresh and logout (A9, A5, A8)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from garrison.app import Services
from garrison.identity.cookies import SessionCookies
from garrison.identity.users import User
from tests.conftest import PASSWORD, bearer, login
from tests.unit.identity.browser import (
    CSRF,
    REFRESH,
    SESSION,
    Browser,
    audit_rows,
    set_cookies,
)

MakeUser = Callable[..., User]


def cookie_login(client: TestClient, username: str = "alice") -> Browser:
    browser = Browser(client)
    response = browser.request(
        "POST",
        "/auth/login",
        json={"username": username, "password": PASSWORD, "session": "cookie"},
    )
    assert response.status_code == 200, response.text
    return browser


@pytest.mark.req("A9")
def test_cookie_login_sets_host_only_secure_httponly_samesite_cookies(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    response = client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD, "session": "cookie"}
    )
    assert response.status_code == 200
    body = response.json()
    assert "access_token" not in body
    assert "refresh_token" not in body
    cookies = set_cookies(response)
    for name in (SESSION, REFRESH, CSRF):
        cookie = cookies[name]
        assert name.startswith("__Host-")
        assert "secure" in cookie.flags
        assert cookie.attrs["path"] == "/"
        assert "domain" not in cookie.attrs
        assert cookie.attrs["samesite"] in {"Lax", "Strict"}
    assert "httponly" in cookies[SESSION].flags
    assert "httponly" in cookies[REFRESH].flags
    assert cookies[REFRESH].attrs["samesite"] == "Strict"
    assert "httponly" not in cookies[CSRF].flags  # the page's script must read it to echo it
    assert int(cookies[SESSION].attrs["max-age"]) == 900


@pytest.mark.req("A9", "A2")
def test_default_login_answer_is_unchanged(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice")
    response = client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert set(response.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert "set-cookie" not in response.headers


@pytest.mark.req("A9")
def test_cookie_authenticates_reads_without_csrf(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice")
    browser = cookie_login(client)
    me = browser.request("GET", "/auth/me")
    assert me.status_code == 200
    assert me.json()["username"] == "alice"


@pytest.mark.req("A9")
def test_cookie_post_without_csrf_token_is_403(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    make_user("alice")
    browser = cookie_login(client)
    response = browser.request("POST", "/auth/logout")
    assert response.status_code == 403
    assert response.json()["reasons"] == ["csrf token missing or invalid"]
    assert browser.request("GET", "/auth/me").status_code == 200  # nothing was done
    assert [r.outcome for r in audit_rows(services, "auth.csrf")] == ["deny"]


@pytest.mark.req("A9")
def test_cookie_post_with_wrong_csrf_token_is_403(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice")
    browser = cookie_login(client)
    token = browser.jar[CSRF]
    for wrong in ("x", token[:-1] + ("0" if token[-1] != "0" else "1"), token + "x", ""):
        response = browser.request("POST", "/auth/logout", headers={"X-CSRF-Token": wrong})
        assert response.status_code == 403, wrong
    # an attacker who can plant cookies (not __Host-, e.g. from a sibling subdomain) sets both
    browser.jar[CSRF] = "forged.value"
    response = browser.request("POST", "/auth/logout", headers={"X-CSRF-Token": "forged.value"})
    assert response.status_code == 403


@pytest.mark.req("A9")
def test_csrf_token_of_another_session_is_refused(client: TestClient, make_user: MakeUser) -> None:
    make_user("alice")
    make_user("mallory")
    victim, attacker = cookie_login(client, "alice"), cookie_login(client, "mallory")
    victim.jar[CSRF] = attacker.jar[CSRF]  # a valid token, but minted for mallory's session
    response = victim.request("POST", "/auth/logout", headers=victim.csrf_headers())
    assert response.status_code == 403


@pytest.mark.req("A9", "A5")
def test_cookie_post_with_the_right_token_works_and_logout_clears_cookies(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    browser = cookie_login(client)
    session = browser.jar[SESSION]
    response = browser.request("POST", "/auth/logout", headers=browser.csrf_headers())
    assert response.status_code == 204
    cleared = set_cookies(response)
    assert all(cleared[name].attrs["max-age"] == "0" for name in (SESSION, REFRESH, CSRF))
    # the session is revoked server-side too: a copied cookie is dead
    assert client.get("/auth/me", headers={"cookie": f"{SESSION}={session}"}).status_code == 401


@pytest.mark.req("A9")
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_site_cookie_post_is_403_even_with_the_token(
    client: TestClient, make_user: MakeUser, headers: dict[str, str]
) -> None:
    make_user("alice")
    browser = cookie_login(client)
    response = browser.request(
        "POST", "/auth/logout", headers={**browser.csrf_headers(), **headers}
    )
    assert response.status_code == 403
    assert response.json()["reasons"] == ["cross-site request refused"]


@pytest.mark.req("A9")
def test_same_origin_cookie_post_passes_the_origin_check(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    browser = cookie_login(client)
    headers = {
        **browser.csrf_headers(),
        "Origin": "http://127.0.0.1",
        "Sec-Fetch-Site": "same-origin",
    }
    assert browser.request("POST", "/auth/logout", headers=headers).status_code == 204


@pytest.mark.req("A9")
def test_cross_site_cookie_login_is_refused(client: TestClient, make_user: MakeUser) -> None:
    """Login CSRF: another site must not log a victim's browser into the attacker's account."""
    make_user("alice")
    response = client.post(
        "/auth/login",
        json={"username": "alice", "password": PASSWORD, "session": "cookie"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


@pytest.mark.req("A9", "A8")
def test_bearer_requests_need_no_csrf_and_win_over_the_cookie(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    make_user("bob")
    alice = cookie_login(client, "alice")
    bob = login(client, "bob")
    me = alice.request("GET", "/auth/me", headers=bearer(bob["access_token"]))
    assert me.json()["username"] == "bob"  # the explicit credential, not the ambient cookie
    logout = alice.request("POST", "/auth/logout", headers=bearer(bob["access_token"]))
    assert logout.status_code == 204  # Bearer: no CSRF token needed
    assert alice.request("GET", "/auth/me").status_code == 200  # alice's session untouched


@pytest.mark.req("A9", "A7")
def test_an_api_key_in_the_session_cookie_is_refused(
    client: TestClient, make_user: MakeUser, services: Services
) -> None:
    user = make_user("alice", roles=("admin",))
    key, _ = services.api_keys.create(user.id, ("*",), tenant=None)
    assert client.get("/auth/me", headers=bearer(key)).status_code == 200  # a valid key
    response = client.get("/auth/me", headers={"cookie": f"{SESSION}={key}"})
    assert response.status_code == 401


@pytest.mark.req("A9", "A5")
def test_cookie_refresh_rotates_with_csrf_and_detects_reuse(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("alice")
    browser = cookie_login(client)
    old_refresh = browser.jar[REFRESH]
    assert browser.request("POST", "/auth/refresh").status_code == 403  # no CSRF token
    renewed = browser.request("POST", "/auth/refresh", headers=browser.csrf_headers())
    assert renewed.status_code == 200, renewed.text
    assert browser.jar[REFRESH] != old_refresh
    assert browser.request("GET", "/auth/me").status_code == 200
    # the old refresh cookie, replayed (with a valid CSRF token): reuse revokes the family
    thief = Browser(client, {**browser.jar, REFRESH: old_refresh})
    assert thief.request("POST", "/auth/refresh", headers=thief.csrf_headers()).status_code == 401
    assert (
        browser.request("POST", "/auth/refresh", headers=browser.csrf_headers()).status_code == 401
    )


@pytest.mark.req("A9")
def test_csrf_tokens_are_bound_to_the_session_and_the_key() -> None:
    cookies = SessionCookies(b"k" * 32)
    token = cookies.csrf_token("sid-1")
    cookies.check_csrf("sid-1", token, token)
    for sid, header, cookie in [
        ("sid-2", token, token),
        ("sid-1", token, cookies.csrf_token("sid-1")),
        (None, token, token),
        ("sid-1", None, token),
    ]:
        with pytest.raises(Exception, match="csrf"):
            cookies.check_csrf(sid, header, cookie)
    with pytest.raises(Exception, match="csrf"):
        SessionCookies(b"o" * 32).check_csrf("sid-1", token, token)


@pytest.mark.req("A9")
def test_cookie_value_reads_one_cookie_from_a_raw_header() -> None:
    from garrison.identity.cookies import cookie_value

    header = f"a=1; {SESSION}=tok.en.sig; {SESSION}x=evil; b="
    assert cookie_value(header, SESSION) == "tok.en.sig"
    assert cookie_value(header, "b") is None
    assert cookie_value(None, SESSION) is None
    assert cookie_value("garbage", SESSION) is None


@pytest.mark.req("A9", "A5")
@pytest.mark.asvs("14.3.1")
def test_cookie_logout_tells_the_browser_to_clear_site_data(
    client: TestClient, make_user: MakeUser
) -> None:
    """ASVS 14.3.1: ending a browser session wipes what the browser keeps for Garrison's origin
    (cookies, storage, cache); a Bearer logout leaves the browser's own session alone."""
    make_user("alice")
    browser = cookie_login(client)
    response = browser.request("POST", "/auth/logout", headers=browser.csrf_headers())
    assert response.status_code == 204
    assert response.headers.get("clear-site-data") == '"cache", "cookies", "storage"'
    token = login(client, "alice")["access_token"]
    by_bearer = client.post("/auth/logout", headers=bearer(token))
    assert by_bearer.status_code == 204
    assert "clear-site-data" not in by_bearer.headers
