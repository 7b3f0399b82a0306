"""Signing in to the console through an OIDC provider, in a real Chromium (U1, A11, A9).

``garrison serve`` with Redis for the login state, the live test provider (``tests.oidc_provider``,
auto-approving) on another loopback port, Debian's ``chromium`` driven by PyPI ``playwright``. The
browser reaches the provider's button from the keyboard, goes through the provider and lands on a
console page signed in; no page breaks the CSP.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_console_browser import Messages, unlabelled
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, TestProvider
from tests.support import (
    IN_CI,
    LiveServer,
    base_env,
    free_port,
    redis_client,
    redis_prefix,
    unavailable,
)

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def chromium() -> Iterator[Any]:
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("chromium is not installed (scripts/test installs it when root)")
        unavailable("chromium", "not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, timeout=60_000)
        yield browser
        browser.close()


@pytest.mark.req("U1", "A11", "A9")
def test_a_console_sign_in_through_an_oidc_provider(tmp_path: Path, chromium: Any) -> None:
    store = redis_client()
    prefix = redis_prefix()
    port = free_port()
    messages = Messages()
    with TestProvider() as provider:
        config = tmp_path / "garrison.toml"
        config.write_text(
            f"""
[oidc.test]
issuer = "{provider.url}"
client_id = "{CLIENT_ID}"
client_secret_env = "GARRISON_TEST_OIDC_SECRET"
redirect_uri = "http://127.0.0.1:{port}/auth/oidc/test/callback"
post_login_url = "/app"
"""
        )
        env = base_env(
            tmp_path / "data",
            REDIS_URL="redis://127.0.0.1:6379/0",
            GARRISON_REDIS_PREFIX=prefix,
            GARRISON_CONFIG=str(config),
            GARRISON_TEST_OIDC_SECRET=CLIENT_SECRET,
            GARRISON_ISSUER=f"http://127.0.0.1:{port}",
        )
        with LiveServer(env, port=port) as server:
            base = server.url
            context = chromium.new_context(viewport={"width": 1280, "height": 860})
            context.set_default_timeout(15_000)
            try:
                page = messages.watch(context.new_page())
                page.goto(f"{base}/")
                assert page.url == f"{base}/console"
                assert unlabelled(page) == []
                button = page.get_by_role("link", name="Sign in with test")
                assert button.is_visible()
                region = page.get_by_role(
                    "region", name="Or sign in through your identity provider"
                )
                assert region.get_by_role("link").count() == 1
                # the keyboard reaches it after the password form's button, and follows it
                page.get_by_label("Password").focus()
                page.keyboard.press("Tab")
                assert page.evaluate("document.activeElement.innerText") == "Sign in"
                page.keyboard.press("Tab")
                focused = page.evaluate("document.activeElement.innerText")
                assert focused == "Sign in with test"
                page.keyboard.press("Enter")
                # -> provider (auto-approves) -> callback -> /console/home -> the users page
                page.wait_for_url(f"{base}/console/users")
                header = page.locator("header").inner_text()
                assert "test.user-1" in header  # the provider's user, the first (so an admin)
                assert "Users" in header
                assert list(store.scan_iter(f"{prefix}:oidc:state:*")) == []  # spent
                names = {c["name"] for c in context.cookies()}
                assert "__Host-garrison_session" in names
                assert "__Host-garrison_oidc" not in names  # the one-time binding is gone
                page.get_by_role("button", name="Sign out").click()
                page.wait_for_url(f"{base}/console")
                page.goto(f"{base}/console/users")
                assert page.url == f"{base}/console"  # the session ended
            finally:
                context.close()
    store.close()
    assert messages.csp() == [], messages.lines
    assert not [line for line in messages.lines if line.startswith("pageerror")], messages.lines
