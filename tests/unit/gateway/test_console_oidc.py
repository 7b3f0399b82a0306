"""OIDC providers on the console's sign-in page (U1, A11), in process against the live test
provider: the page links each provider's login with the console as its continuation, the
continuation is only ever a console path (no open redirect) and is kept in the server-side login
state (the callback's query cannot choose it), and the browser lands in the console signed in.

The client talks to ``https://127.0.0.1`` so its cookie jar keeps the ``__Host-`` cookies.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from tests.conftest import MakeSettings
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider

ORIGIN = "https://127.0.0.1"
BINDING = "__Host-garrison_oidc"
SESSION = "__Host-garrison_session"
_LINK = re.compile(r'<a class="button secondary" href="([^"]+)">([^<]+)</a>')


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with TestProvider() as running:
        yield running


@pytest.fixture
def make_browser(
    make_settings: MakeSettings, provider: TestProvider, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[TestClient, Services]]]:
    monkeypatch.setenv("GARRISON_TEST_OIDC_SECRET", CLIENT_SECRET)
    opened: list[tuple[TestClient, Services]] = []

    def make(names: tuple[str, ...] = ("test",)) -> tuple[TestClient, Services]:
        oidc: dict[str, Any] = {
            name: {
                "issuer": provider.url,
                "client_id": CLIENT_ID,
                "client_secret_env": "GARRISON_TEST_OIDC_SECRET",
                "redirect_uri": f"{ORIGIN}/auth/oidc/{name}/callback",
                "post_login_url": "/app",
            }
            for name in names
        }
        svc = build_services(make_settings(oidc=oidc))
        client = TestClient(create_app(svc), base_url=ORIGIN, follow_redirects=False)
        client.__enter__()
        opened.append((client, svc))
        return client, svc

    yield make
    for client, svc in opened:
        client.__exit__(None, None, None)
        svc.close()


@pytest.fixture
def browser(make_browser: Callable[..., tuple[TestClient, Services]]) -> TestClient:
    return make_browser()[0]


def provider_links(page: str) -> dict[str, str]:
    """The sign-in page's provider buttons: their text -> their (unescaped) href."""
    return {text: html.unescape(href) for href, text in _LINK.findall(page)}


def through_provider(browser: TestClient, start: str, *, extra: str = "") -> httpx2.Response:
    """Follow a login link: Garrison -> the provider (auto-approves) -> Garrison's callback."""
    began = browser.get(start)
    assert began.status_code == 302, began.text
    approved = httpx.get(began.headers["location"], follow_redirects=False, timeout=5)
    assert approved.status_code == 302, approved.text
    callback = urlsplit(approved.headers["location"])
    assert f"{callback.scheme}://{callback.netloc}" == ORIGIN
    answer: httpx2.Response = browser.get(f"{callback.path}?{callback.query}{extra}")
    return answer


# -- the page --------------------------------------------------------------------------------------
@pytest.mark.req("U1", "A11")
def test_the_sign_in_page_links_every_configured_provider(
    make_browser: Callable[..., tuple[TestClient, Services]],
) -> None:
    browser, _svc = make_browser(("test", "corp-sso"))
    page = browser.get("/console")
    assert page.status_code == 200
    links = provider_links(page.text)
    assert set(links) == {"Sign in with test", "Sign in with corp-sso"}
    for name in ("test", "corp-sso"):
        target = urlsplit(links[f"Sign in with {name}"])
        assert (target.scheme, target.netloc) == ("", "")  # our own origin
        assert target.path == f"/auth/oidc/{name}/login"
        assert parse_qs(target.query) == {"return_to": ["/console/home"]}
    # a labelled group, no inline script or style (the CSP allows neither)
    assert 'aria-labelledby="sso-title"' in page.text
    assert 'id="sso-title"' in page.text
    assert "<script" not in page.text
    assert "style=" not in page.text
    # the password form stays, and a failed password sign-in keeps the buttons
    again = browser.post("/console/login", data={"username": "nobody", "password": "wrong"})
    assert again.status_code == 401
    assert set(provider_links(again.text)) == set(links)


@pytest.mark.req("U1")
def test_without_providers_the_page_has_no_provider_section(
    make_browser: Callable[..., tuple[TestClient, Services]],
) -> None:
    plain, _svc = make_browser(())
    page = plain.get("/console")
    assert page.status_code == 200
    assert provider_links(page.text) == {}
    assert "sso-title" not in page.text
    assert 'name="password"' in page.text


# -- where the browser lands -------------------------------------------------------------------------
@pytest.mark.req("U1", "A11", "A9")
def test_a_login_from_the_console_lands_in_the_console_signed_in(browser: TestClient) -> None:
    page = browser.get("/console")
    done = through_provider(browser, provider_links(page.text)["Sign in with test"])
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console/home"
    assert SESSION in browser.cookies
    assert BINDING not in browser.cookies  # the one-time binding is cleared
    landing = browser.get("/console/home")  # the first OIDC user is the first admin
    assert landing.status_code == 303, landing.text
    assert landing.headers["location"] == "/console/users"
    users = browser.get("/console/users")
    assert users.status_code == 200, users.text
    assert "test.user-1" in users.text  # signed in as the provider's user
    assert 'action="/console/logout"' in users.text


@pytest.mark.req("A11")
def test_without_return_to_the_provider_post_login_url_still_applies(browser: TestClient) -> None:
    done = through_provider(browser, "/auth/oidc/test/login")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/app"


# -- open redirects ------------------------------------------------------------------------------------
ATTACKS = [
    "//evil.example",
    "//evil.example/console",
    "https://evil.example",
    "https://evil.example/console/home",
    "http:evil.example",
    "/\\evil.example",
    "/console\\..\\evil",
    "/\\/evil.example",
    "/console@evil.example",
    "/console.evil.example",
    "/consoles",
    "/console/../auth/me",
    "/console/%2e%2e/auth/me",
    "/console//evil.example",
    "/console/%2F%2Fevil.example",
    "/console/\t/evil",
    "/console/home\r\nSet-Cookie: x=1",
    "/console/home#frag",
    "/console/home?x=https://evil.example",
    " /console/home",
    "console/home",
    "",
    "/console/" + "a" * 600,
]


@pytest.mark.req("A11", "U1")
def test_a_return_to_outside_the_console_is_refused(browser: TestClient) -> None:
    """Every spelling is refused before a login starts (one app for all: each costs a request)."""
    for target in ATTACKS:
        refused = browser.get("/auth/oidc/test/login", params={"return_to": target})
        assert refused.status_code == 400, (target, refused.status_code, refused.headers)
        assert refused.headers["content-type"].startswith("application/problem+json"), target
        assert "location" not in refused.headers, target
        assert BINDING not in browser.cookies, target  # no login was started
        assert "return_to" in refused.json()["detail"], target


@pytest.mark.req("A11", "U1")
def test_a_repeated_return_to_is_refused(browser: TestClient) -> None:
    refused = browser.get("/auth/oidc/test/login?return_to=/console/home&return_to=//evil.example")
    assert refused.status_code == 400
    assert "location" not in refused.headers


@pytest.mark.req("A11", "U1")
def test_the_callback_query_cannot_choose_where_the_browser_goes(browser: TestClient) -> None:
    """The continuation is read from the server-side state only: a ``return_to`` (or any other
    spelling) added to the callback URL is ignored, whether or not the login named one."""
    planted = "&return_to=%2F%2Fevil.example&post_login_url=https%3A%2F%2Fevil.example"
    done = through_provider(browser, "/auth/oidc/test/login", extra=planted)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/app"
    browser.cookies.clear()
    done = through_provider(browser, "/auth/oidc/test/login?return_to=/console/home", extra=planted)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console/home"


@pytest.mark.req("A11", "U1")
def test_a_console_path_is_kept_as_given(browser: TestClient) -> None:
    done = through_provider(browser, "/auth/oidc/test/login?return_to=/console/account")
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console/account"
