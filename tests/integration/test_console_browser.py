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
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from garrison.identity.totp import code_at
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
        ("mia", ["admin"], None),  # signs in with a second factor
        ("dora", ["user"], "acme"),  # the self-service pages
        ("walt", ["user"], "acme"),  # an administrator chose his password: he must change it
    ]
    for name, roles, tenant in people:
        args = ["users", "create", "--username", name, "--password-stdin"]
        args += [] if name == "walt" else ["--no-password-change"]
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


def sign_in(
    page: Any, base: str, username: str, *, password: str = PASSWORD, lands: str = "/console/users"
) -> None:
    page.goto(f"{base}/")  # redirected to the sign-in page
    assert page.url == f"{base}/console"
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")  # the keyboard submits the form
    page.wait_for_url(f"{base}{lands}")


def unlabelled(page: Any) -> list[str]:
    """Every visible form control without an accessible label (keyboard and screen-reader use)."""
    found: list[str] = page.eval_on_selector_all(
        "input:not([type=hidden]), select, textarea, button",
        """els => els.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                && !e.getAttribute('aria-labelledby') && !(e.tagName === 'BUTTON' && e.innerText.trim()))
               .map(e => e.outerHTML)""",
    )
    return found


def api_login(base: str, username: str, password: str = PASSWORD) -> dict[str, Any]:
    answer = httpx.post(
        f"{base}/auth/login", json={"username": username, "password": password}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def me(base: str, token: str) -> int:
    answer = httpx.get(f"{base}/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return answer.status_code


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


def _next_code(secret: str) -> str:
    """A code of the step after the one just used: each step's code works once (ASVS 6.5.1),
    and the next step is within the drift the server accepts."""
    return code_at(secret, time.time() + 30)


@pytest.mark.req("A14")
@pytest.mark.req("U1")
@pytest.mark.asvs("V6.3.3")
def test_an_admin_signs_in_with_a_second_factor(
    garrison: LiveServer, context: Any, messages: Messages
) -> None:
    base = garrison.url
    # enrol mia's authenticator over the API, as an app would
    token = api_login(base, "mia")["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    enrol = httpx.post(f"{base}/auth/mfa/totp", headers=bearer, timeout=10)
    assert enrol.status_code == 200, enrol.text
    secret = enrol.json()["secret"]
    confirm = httpx.post(
        f"{base}/auth/mfa/totp/confirm",
        headers=bearer,
        json={"code": code_at(secret, time.time())},
        timeout=10,
    )
    assert confirm.status_code == 200, confirm.text

    page = messages.watch(context.new_page())
    page.goto(f"{base}/console")
    page.get_by_label("Username").fill("mia")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("heading", name="Second step").is_visible()
    assert not [c for c in context.cookies() if c["name"] == "__Host-garrison_session"]
    assert unlabelled(page) == []
    shoot(page, "sign-in-code")
    wrong = next(c for c in ("000000", "111111", "222222") if c not in _valid_codes(secret))
    page.get_by_label("Code").fill(wrong)
    page.get_by_label("Code").press("Enter")
    assert "That code is not valid." in page.get_by_role("alert").inner_text()
    page.get_by_label("Code").fill(_next_code(secret))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{base}/console/users")
    assert "mia" in page.locator("header").inner_text()
    page.get_by_role("link", name="Account").click()
    facts = page.locator("dl.facts").inner_text()
    assert "pwd + otp" in facts
    assert "authenticator app on" in page.locator("main").inner_text()
    assert messages.csp() == [], messages.lines


def _valid_codes(secret: str) -> set[str]:
    now = time.time()
    return {code_at(secret, now + d) for d in (-60, -30, 0, 30, 60)}


@pytest.mark.req("A15")
@pytest.mark.req("A16")
@pytest.mark.req("U1")
def test_a_user_changes_their_password_and_ends_a_session(
    garrison: LiveServer, context: Any, messages: Messages
) -> None:
    base = garrison.url
    elsewhere = api_login(base, "dora")  # another device's session
    assert me(base, elsewhere["access_token"]) == 200
    page = messages.watch(context.new_page())
    sign_in(page, base, "dora", lands="/console/account")  # no admin pages: her own account
    nav = page.get_by_role("navigation", name="Sections").inner_text()
    assert "Account" in nav
    assert "Users" not in nav
    rows = page.locator("table.sessions tbody tr")
    assert rows.count() == 2
    assert unlabelled(page) == []
    shoot(page, "account")

    # end the other session: its token stops at once
    other = page.locator("table.sessions tbody tr:not(.current)")
    other.get_by_role("button", name=re.compile(r"^End session ")).click()
    assert page.get_by_role("status").inner_text() == "Session ended."
    assert page.locator("table.sessions tbody tr").count() == 1
    assert me(base, elsewhere["access_token"]) == 401

    # her own API key: created, shown once, working, revoked
    page.get_by_label("Scopes (actions, space-separated)").fill("ticket.read")
    page.get_by_label("Name (optional)").fill("script")
    page.get_by_role("button", name="Create API key").click()
    key = page.locator("code.key").inner_text().strip()
    assert me(base, key) == 200
    page.get_by_role("button", name=re.compile(r"^Revoke API key ")).click()
    assert "API key revoked." in page.get_by_role("status").inner_text()
    assert me(base, key) == 401

    # change the password: every other session ends, this one lives on
    third = api_login(base, "dora")
    page.get_by_role("link", name="Change your password").click()
    new = "violet ledger quarry trombone 7"
    page.get_by_label("Current password").fill("not her password")
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("Repeat the new password").fill(new)
    page.get_by_role("button", name="Change password").click()
    assert "current password does not match" in page.get_by_role("alert").inner_text()
    page.goto(f"{base}/console/account/password")
    assert unlabelled(page) == []
    shoot(page, "password")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("Repeat the new password").fill(new)
    page.get_by_label("Repeat the new password").press("Enter")
    page.wait_for_url(f"{base}/console/account?done=password")
    assert "Password changed." in page.get_by_role("status").inner_text()
    assert me(base, third["access_token"]) == 401
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/console")
    sign_in(page, base, "dora", password=new, lands="/console/account")
    assert messages.csp() == [], messages.lines


@pytest.mark.req("A14")
@pytest.mark.req("U1")
def test_a_user_enrols_and_removes_an_authenticator(
    garrison: LiveServer, context: Any, messages: Messages
) -> None:
    base = garrison.url
    page = messages.watch(context.new_page())
    sign_in(page, base, "anna", lands="/console/account")
    page.get_by_role("button", name="Set up an authenticator app").click()
    qr = page.get_by_role("img", name=re.compile("QR code"))
    assert qr.get_attribute("src").startswith("data:image/svg+xml")  # drawn here, no third party
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
    secret = page.locator("code.key").inner_text().replace(" ", "")
    assert unlabelled(page) == []
    shoot(page, "mfa-setup")
    page.get_by_label("Code from the app").fill("12345")  # not a code at all
    page.get_by_role("button", name="Confirm").click()
    assert "does not match" in page.get_by_role("alert").inner_text()
    assert page.locator("code.key").inner_text().replace(" ", "") == secret  # the same enrolment
    page.get_by_label("Code from the app").fill(code_at(secret, time.time()))
    page.get_by_role("button", name="Confirm").click()
    codes = page.locator("ul.codes li").all_inner_texts()
    assert len(codes) == 10
    shoot(page, "mfa-done")
    page.get_by_role("link", name="Back to your account").click()
    assert "authenticator app on" in page.locator("main").inner_text()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("A current code or a recovery code").fill(codes[0])
    page.get_by_role("button", name="Remove the authenticator").click()
    assert "The authenticator was removed" in page.get_by_role("status").inner_text()
    assert api_login(base, "anna").get("access_token")  # the password alone signs in again
    assert messages.csp() == [], messages.lines


@pytest.mark.req("A15")
@pytest.mark.asvs("V6.4.1")
def test_a_password_set_by_an_admin_leads_to_the_change_page(
    garrison: LiveServer, context: Any, messages: Messages
) -> None:
    base = garrison.url
    page = messages.watch(context.new_page())
    sign_in(page, base, "walt", lands="/console/account/password")
    assert "choose your own" in page.get_by_role("status").inner_text()
    page.goto(f"{base}/console/account")  # anything else leads back here, never a dead end
    assert page.url == f"{base}/console/account/password"
    new = "copper lantern meadow 19 orbit"
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("Repeat the new password").fill(new)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url(f"{base}/console/account?done=password")
    assert "Password changed." in page.get_by_role("status").inner_text()
    assert "walt" in page.locator("dl.facts").inner_text()  # the refreshed session may
    assert messages.csp() == [], messages.lines


@pytest.mark.req("U1")
@pytest.mark.req("Z4")
@pytest.mark.req("O4")
def test_an_admin_reads_policies_doctor_and_vault(
    garrison: LiveServer, context: Any, messages: Messages
) -> None:
    base = garrison.url
    page = messages.watch(context.new_page())
    sign_in(page, base, "root")
    page.get_by_role("link", name="Policies").click()
    assert "Policy tests pass" in page.get_by_role("status").inner_text()
    assert page.locator("table.cases tbody tr").count() > 100
    shoot(page, "policies")

    page.get_by_role("link", name="Why was this denied?").click()
    page.get_by_label("Action").fill("ticket.close")
    page.get_by_label("Id", exact=True).first.fill("sam")
    page.get_by_label("Roles (space-separated)").fill("support")
    page.get_by_role("button", name="Decide").click()
    verdict = page.get_by_role("status").inner_text()
    assert "Denied" in verdict
    assert "missing parameter: reason" in verdict
    page.get_by_label("Parameters (name=value, one a line)").fill("reason=duplicate")
    page.get_by_role("button", name="Decide").click()
    assert "Allowed" in page.get_by_role("status").inner_text()
    assert unlabelled(page) == []
    shoot(page, "decide")

    page.get_by_role("link", name="Doctor").click()
    assert re.search(r"\d+ pass, \d+ warn, \d+ fail, \d+ skip", page.locator("main").inner_text())
    assert page.locator("table.doctor tbody tr").count() > 5
    shoot(page, "doctor")
    page.get_by_role("link", name="Vault").click()
    assert "Current key version" in page.locator("dl.facts").inner_text()
    assert page.locator("table.vault tbody tr").count() >= 1
    shoot(page, "vault")
    assert messages.csp() == [], messages.lines

    # a tenant admin: the policy keeps these platform-wide pages from it
    tenant = messages.watch(context.browser.new_context().new_page())
    sign_in(tenant, base, "boss")
    for path in ("/console/policies", "/console/doctor", "/console/vault"):
        tenant.goto(f"{base}{path}")
        assert "platform identity required" in tenant.get_by_role("alert").inner_text()
    assert messages.csp() == [], messages.lines
