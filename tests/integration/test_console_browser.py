"""The admin console in a real Chromium against ``garrison serve`` (U1, A9, E1, T3).

Debian's ``chromium`` driven by PyPI ``playwright`` (never ``playwright install``). Skipped only when
chromium is absent outside CI. Every page's ``console`` and ``pageerror`` events are collected and
must not mention a Content Security Policy violation; a control page on the test's own origin,
with a CSP of its own that it breaks, proves the collector hears such violations.

With ``GARRISON_CONSOLE_SCREENSHOTS=DIR`` the runs also save the main pages at 1280 and 390 px wide
(``docs/screenshots/`` holds the committed ones).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import IN_CI, LiveServer, base_env, run_cli, unavailable

pytestmark = pytest.mark.timeout(300)

PASSWORD = "correct horse battery staple"
CHROMIUM = shutil.which("chromium")
SHOTS = os.environ.get("GARRISON_CONSOLE_SCREENSHOTS")
WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}


@pytest.fixture(scope="module")
def garrison(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = base_env(tmp_path_factory.mktemp("console"))
    people = [
        ("root", ["admin"], None),
        ("boss", ["admin"], "acme"),
        ("anna", ["user"], "acme"),
        ("gus", ["user"], "globex"),
    ]
    for name, roles, tenant in people:
        args = ["users", "create", "--username", name, "--password-stdin", "--no-password-change"]
        args += [a for r in roles for a in ("--role", r)]
        args += ["--tenant", tenant] if tenant else []
        made = run_cli(*args, env=env, stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
    with LiveServer(env) as server:
        # records of another tenant (gus) exist before the tenant admin looks
        login = httpx.post(
            f"{server.url}/auth/login", json={"username": "gus", "password": PASSWORD}, timeout=10
        )
        assert login.status_code == 200
        yield server


@pytest.fixture(scope="module")
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


class Messages:
    """Everything the browser said on the console, and every uncaught page error."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", lambda message: self.lines.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.lines.append(f"pageerror: {error}"))
        return page

    def csp(self) -> list[str]:
        return [line for line in self.lines if "content security policy" in line.lower()]


@pytest.fixture
def messages() -> Messages:
    return Messages()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    ctx = chromium.new_context(viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


class Elsewhere:
    """A page on another origin (another port): the attacker's form, or the CSP control page."""

    def __init__(self, pages: dict[str, tuple[str, dict[str, str]]]) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, headers = owner.pages.get(self.path, ("not here", {}))
                self.send_response(200 if self.path in owner.pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_args: Any) -> None:
                pass

        self.pages = pages
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Elsewhere:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def shoot(page: Any, name: str) -> None:
    if not SHOTS:
        return
    folder = Path(SHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 860})


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/")  # redirected to the sign-in page
    assert page.url == f"{base}/console"
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")  # the keyboard submits the form
    page.wait_for_url(f"{base}/console/users")


@pytest.mark.req("U1")
def test_the_collector_hears_a_csp_violation(context: Any, messages: Messages) -> None:
    """The control: a page whose own CSP forbids inline style, which it has."""
    control = '<!doctype html><p style="color: red">styled</p><style>p { margin: 0 }</style>'
    with Elsewhere({"/control": (control, {"Content-Security-Policy": "style-src 'none'"})}) as out:
        page = messages.watch(context.new_page())
        page.goto(f"{out.url}/control")
        page.wait_for_timeout(300)
    assert messages.csp(), messages.lines


@pytest.mark.req("U1")
def test_an_admin_runs_the_console(garrison: LiveServer, context: Any, messages: Messages) -> None:
    base = garrison.url
    page = messages.watch(context.new_page())
    page.goto(f"{base}/console")
    shoot(page, "sign-in")
    sign_in(page, base, "root")
    assert "root" in page.locator("header").inner_text()

    # users: create one, then find it by name
    page.get_by_label("Username", exact=True).fill("carol")
    page.get_by_label("Password", exact=True).fill("a long enough password")
    page.get_by_label("Email (optional)").fill("carol@example.org")
    page.get_by_role("button", name="Create user").click()
    assert "User carol created." in page.get_by_role("status").inner_text()
    page.get_by_label("Search by name or email").fill("car")
    page.get_by_label("Search by name or email").press("Enter")
    names = page.locator("tbody td:first-child").all_inner_texts()
    assert names == ["carol"]
    page.get_by_label("Search by name or email").fill("")
    page.get_by_role("button", name="Search").click()
    shoot(page, "users")

    # API keys: create one (shown once), prove it works, revoke it, prove it no longer does
    page.get_by_role("link", name="carol").click()
    page.get_by_label("Scopes (actions, space-separated)").fill("auth.self")
    page.get_by_label("Name (optional)").fill("laptop")
    page.get_by_role("button", name="Create API key").click()
    secret = page.locator("code.key").inner_text().strip()
    assert secret
    me = httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert me.status_code == 200, me.text
    page.get_by_role("button", name=re.compile(r"^Revoke API key ")).click()
    assert "revoked." in page.get_by_role("status").inner_text()
    assert page.locator("code.key").count() == 0  # the secret is never shown again
    me = httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert me.status_code == 401

    # roles and status: set them, disable, enable
    page.get_by_label("admin").check()
    page.get_by_role("button", name="Set roles").click()
    assert "Roles of carol set." in page.get_by_role("status").inner_text()
    page.get_by_role("button", name="Disable carol").click()
    assert "disabled" in page.get_by_role("status").inner_text()
    page.get_by_role("button", name="Enable carol").click()
    assert "carol enabled." in page.get_by_role("status").inner_text()
    shoot(page, "user")

    # audit: filter, then the chain badge
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Action (a prefix ends in .)").fill("admin.")
    page.get_by_label("Outcome").select_option("success")
    page.get_by_label("Since").fill("1h")
    page.get_by_role("button", name="Filter").click()
    actions = page.locator("td.action").all_inner_texts()
    assert "admin.user.create" in actions
    assert "admin.api_key.revoke" in actions
    assert all(a.startswith("admin.") for a in actions)
    shoot(page, "audit")
    page.get_by_role("link", name="Failed logins (24 h)").click()
    assert all(a == "auth.login" for a in page.locator("td.action").all_inner_texts())
    page.get_by_role("link", name="Verify the chain").click()
    assert "Chain verified" in page.get_by_role("status").inner_text()
    shoot(page, "audit-verified")

    # signing keys: rotate, then an emergency rotation behind its confirmation
    page.get_by_role("link", name="Signing keys").click()
    before = page.locator("tbody tr").count()
    page.get_by_role("button", name="Rotate signing key").click()
    assert "Rotated:" in page.get_by_role("status").inner_text()
    assert page.locator("tbody tr").count() == before + 1
    shoot(page, "keys")
    page.get_by_role("link", name="Emergency rotation…").click()
    page.get_by_label("Type EMERGENCY to confirm").fill("yes")
    page.get_by_role("button", name="Revoke every older key now").click()
    assert "type EMERGENCY" in page.get_by_role("alert").inner_text()
    shoot(page, "emergency")
    page.get_by_label("Type EMERGENCY to confirm").fill("EMERGENCY")
    page.get_by_role("button", name="Revoke every older key now").click()
    assert "Emergency rotation done" in page.get_by_role("status").inner_text()
    page.goto(f"{base}/console/users")  # this session's token was signed by a revoked key
    assert page.url == f"{base}/console"

    assert messages.csp() == [], messages.lines


@pytest.mark.req("T3")
def test_a_tenant_admin_sees_only_their_tenant(
    garrison: LiveServer, context: Any, messages: Messages
) -> None:
    base = garrison.url
    page = messages.watch(context.new_page())
    sign_in(page, base, "boss")
    names = set(page.locator("tbody td:first-child").all_inner_texts())
    assert {"anna", "boss"} <= names
    assert not names & {"gus", "root", "carol"}
    assert set(page.locator("td.tenant").all_inner_texts()) == {"acme"}
    page.get_by_role("link", name="Audit").click()
    tenants = set(page.locator("td.tenant").all_inner_texts())
    assert tenants == {"acme"}
    assert page.get_by_role("link", name="Verify the chain").count() == 0
    page.goto(f"{base}/console/audit/verify")
    assert "platform identity required" in page.get_by_role("alert").inner_text()
    page.goto(f"{base}/console/keys")
    assert "platform identity required" in page.get_by_role("alert").inner_text()
    shoot(page, "tenant-refused")
    page.goto(f"{base}/console/users")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/console")
    page.goto(f"{base}/console/users")
    assert page.url == f"{base}/console"  # signed out: back to the sign-in page
    assert messages.csp() == [], messages.lines


@pytest.mark.req("A9")
def test_a_form_posted_from_another_origin_is_refused(
    garrison: LiveServer, context: Any, messages: Messages
) -> None:
    base = garrison.url
    page = messages.watch(context.new_page())
    sign_in(page, base, "root")
    csrf = next(c["value"] for c in context.cookies() if c["name"] == "__Host-garrison_csrf")
    # another port of the same host: same-site, so the browser sends the session cookies, and
    # the attacker even has the CSRF token (say it leaked): the origin alone is refused
    attack = (
        f'<!doctype html><form method="post" action="{base}/console/users">'
        '<input name="username" value="mallory">'
        '<input name="password" value="a long enough password">'
        f'<input name="csrf_token" value="{csrf}">'
        '<button type="submit">win a prize</button></form>'
    )
    with Elsewhere({"/prize": (attack, {})}) as out:
        page.goto(f"{out.url}/prize")
        page.get_by_role("button", name="win a prize").click()
        page.wait_for_url(f"{base}/console/users")
        assert "cross-site request refused" in page.get_by_role("alert").inner_text()
    page.goto(f"{base}/console/users?q=mallory")
    assert "mallory" not in page.locator("tbody").inner_text()
    with contextlib.suppress(Exception):
        page.close()
    assert messages.csp() == [], messages.lines
