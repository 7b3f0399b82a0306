"""The admin console (U1) in process: sign-in, CSRF on form posts, tenant scope, errors as pages.

The browser runs of the same pages are in ``tests/integration/test_console_browser.py``; these pin
the rules without one. The client talks to ``https://127.0.0.1`` so its cookie jar keeps the
``__Host-`` (``Secure``) cookies, as a browser does on a secure origin.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from garrison.storage.schema import audit_log
from tests.conftest import PASSWORD

CSRF = "__Host-garrison_csrf"
SESSION = "__Host-garrison_session"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_HIDDEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def browser(services: Services) -> Iterator[TestClient]:
    app = create_app(services)
    with TestClient(app, base_url="https://127.0.0.1", follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the console's form; returns the CSRF token the pages echo."""
    answer = client.post("/console/login", data={"username": username, "password": password})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/home"
    assert SESSION in client.cookies
    landing = client.get("/console/home")  # an admin lands on the users page
    assert landing.status_code == 303, landing.text
    assert landing.headers["location"] == "/console/users"
    assert CSRF in client.cookies
    page = client.get("/console/users")
    assert page.status_code == 200, page.text
    found = _HIDDEN.search(page.text)
    assert found is not None, "every form carries the CSRF token"
    assert found.group(1) == client.cookies[CSRF]
    return found.group(1)


def users_created(services: Services) -> set[str]:
    return {u.username for u in services.users.list(None, all_tenants=True, limit=1000)}


@pytest.mark.req("U1")
def test_root_redirects_to_the_sign_in_page_with_username_and_password(
    browser: TestClient,
) -> None:
    root = browser.get("/", headers={"Accept": "text/html"})
    assert root.status_code in (302, 303, 307)
    assert root.headers["location"] == "/console"
    page = browser.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'name="username"' in page.text
    assert 'name="password"' in page.text
    assert '<label for="username"' in page.text
    assert '<label for="password"' in page.text
    assert "<script" not in page.text
    assert "style=" not in page.text
    csp = page.headers["content-security-policy"]  # the default one, unchanged (E1)
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    # a form post from these pages names our origin (no-referrer would make it Origin: null)
    assert page.headers["referrer-policy"] == "same-origin"
    css = browser.get("/console/static/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "@media" in css.text  # readable on a phone


@pytest.mark.req("U1")
def test_a_bad_password_shows_the_reason_on_the_page(
    browser: TestClient, make_user: Callable[..., User]
) -> None:
    make_user("root", roles=("admin",))
    answer = browser.post("/console/login", data={"username": "root", "password": "wrong"})
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert "invalid username or password" in answer.text.lower()
    assert SESSION not in browser.cookies
    assert "Traceback" not in answer.text


@pytest.mark.req("U1")
def test_pages_need_a_session(browser: TestClient) -> None:
    for path in ("/console/users", "/console/keys", "/console/audit"):
        answer = browser.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console", path


@pytest.mark.req("A9")
def test_a_console_form_post_without_the_csrf_field_is_refused(
    browser: TestClient, services: Services, make_user: Callable[..., User]
) -> None:
    make_user("root", roles=("admin",))
    token = sign_in(browser, "root")
    form = {"username": "mallory", "password": "a long enough password", "roles": "user"}
    refused = browser.post("/console/users", data=form)
    assert refused.status_code == 403
    assert "csrf token missing or invalid" in refused.text
    forged = browser.post("/console/users", data={**form, "csrf_token": token[:-2] + "00"})
    assert forged.status_code == 403
    cross = browser.post(
        "/console/users",
        data={**form, "csrf_token": token},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert "cross-site request refused" in cross.text
    assert "mallory" not in users_created(services)
    made = browser.post("/console/users", data={**form, "csrf_token": token})
    assert made.status_code == 201, made.text
    assert "mallory" in users_created(services)


@pytest.mark.req("A9")
def test_the_csrf_form_field_counts_only_for_console_form_posts(
    browser: TestClient, services: Services, make_user: Callable[..., User]
) -> None:
    """A JSON API takes ``X-CSRF-Token`` only: a ``csrf_token`` form field is not evidence there."""
    make_user("root", roles=("admin",))
    token = sign_in(browser, "root")
    refused = browser.post(
        "/admin/keys/rotate", content=f"csrf_token={token}".encode(), headers=FORM
    )
    assert refused.status_code == 403
    assert "csrf token missing or invalid" in refused.json()["reasons"]
    # a console post in another content type does not have its field read either
    multipart = browser.post(
        "/console/users",
        files={"csrf_token": (None, token), "username": (None, "eve")},
    )
    assert multipart.status_code in (403, 415)
    assert "eve" not in users_created(services)


@pytest.mark.req("T3")
def test_a_tenant_admin_sees_only_their_tenant(
    browser: TestClient, services: Services, make_user: Callable[..., User]
) -> None:
    make_user("boss", roles=("admin",), tenant="acme")
    make_user("anna", tenant="acme")
    other = make_user("gus", tenant="globex")
    make_user("root", roles=("admin",))
    for who in ("root", "gus"):  # records of the platform and of another tenant, to hide
        assert browser.post("/auth/login", json={"username": who, "password": PASSWORD}).is_success
    token = sign_in(browser, "boss")
    page = browser.get("/console/users").text
    assert "anna" in page
    assert "boss" in page
    assert "gus" not in page
    assert "root" not in page
    # another tenant's user, by id: refused with the policy's reason, shown on the page
    foreign = browser.get(f"/console/users/{other.id}")
    assert foreign.status_code == 403
    assert "tenant mismatch" in foreign.text
    assert foreign.headers["content-type"].startswith("text/html")
    disable = browser.post(
        f"/console/users/{other.id}/active", data={"active": "false", "csrf_token": token}
    )
    assert disable.status_code == 403
    assert "tenant mismatch" in disable.text
    assert services.users.get(other.id).active
    # a user made by the tenant admin lands in its tenant, whatever the form says
    made = browser.post(
        "/console/users",
        data={
            "username": "newbie",
            "password": "a long enough password",
            "roles": "user",
            "tenant": "globex",
            "csrf_token": token,
        },
    )
    assert made.status_code == 403
    assert "tenant mismatch" in made.text
    # audit: only acme's records, and the chain (platform-wide) is not for a tenant admin
    with services.db.begin() as conn:
        tenants = {r.tenant for r in conn.execute(sa.select(audit_log.c.tenant))}
    assert {None, "globex"} <= tenants  # there are records to hide
    audit = browser.get("/console/audit")
    assert audit.status_code == 200
    shown = set(re.findall(r'<td class="tenant">([^<]*)</td>', audit.text))
    assert shown
    assert shown <= {"acme"}
    verify = browser.get("/console/audit/verify")
    assert verify.status_code == 403
    assert "platform identity required" in verify.text


@pytest.mark.req("U1")
def test_use_case_errors_are_pages_with_reasons(
    browser: TestClient, services: Services, make_user: Callable[..., User]
) -> None:
    root = make_user("root", roles=("admin",))
    token = sign_in(browser, "root")
    unknown = browser.post(
        "/console/users",
        data={
            "username": "x1",
            "password": "a long enough pw",
            "roles": "wizard",
            "csrf_token": token,
        },
    )
    assert unknown.status_code == 422
    assert "&#39;wizard&#39; is not a defined role" in unknown.text
    last = browser.post(
        f"/console/users/{root.id}/active", data={"active": "false", "csrf_token": token}
    )
    assert last.status_code == 409
    assert services.users.get(root.id).active
    for answer in (unknown, last):
        assert answer.headers["content-type"].startswith("text/html")
        assert "Traceback" not in answer.text
    bad_since = browser.get("/console/audit", params={"since": "yesterday-ish"})
    assert bad_since.status_code == 422
    assert "since: use 24h" in bad_since.text


@pytest.mark.req("A6")
def test_emergency_rotation_needs_the_confirmation(
    browser: TestClient, services: Services, make_user: Callable[..., User]
) -> None:
    make_user("root", roles=("admin",))
    token = sign_in(browser, "root")
    before = {k.kid for k in services.keyring.list()}
    confirm = browser.get("/console/keys/emergency")
    assert confirm.status_code == 200
    assert 'name="confirm"' in confirm.text
    skipped = browser.post(
        "/console/keys/rotate", data={"emergency": "true", "confirm": "", "csrf_token": token}
    )
    assert skipped.status_code == 422
    assert {k.kid for k in services.keyring.list()} == before
    done = browser.post(
        "/console/keys/rotate",
        data={"emergency": "true", "confirm": "EMERGENCY", "csrf_token": token},
    )
    assert done.status_code == 200, done.text
    keys = services.keyring.list()
    assert len(keys) == len(before) + 1
    assert all(k.status == "revoked" for k in keys if k.kid in before)


def _sign_in_as(client: TestClient, username: str) -> str:
    """Sign in a user who is no admin: the landing page sends them to their own account."""
    answer = client.post("/console/login", data={"username": username, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    landing = client.get(answer.headers["location"])
    assert landing.status_code == 303
    assert landing.headers["location"] == "/console/account"
    page = client.get("/console/account")
    assert page.status_code == 200, page.text
    found = _HIDDEN.search(page.text)
    assert found is not None
    return found.group(1)


@pytest.mark.req("U1")
@pytest.mark.req("Z3")
def test_own_api_keys_are_their_owners_only(
    browser: TestClient, services: Services, make_user: Callable[..., User]
) -> None:
    """Revoking another user's key through the self-service form is the policy's owner deny;
    a caller whose role holds no keys cannot make one."""
    anna = make_user("anna", roles=("user",), tenant="acme")
    make_user("ben", roles=("user",), tenant="acme")
    make_user("nobody", roles=(), tenant="acme")
    token = _sign_in_as(browser, "anna")
    made = browser.post(
        "/console/account/api-keys", data={"scopes": "ticket.read", "csrf_token": token}
    )
    assert made.status_code == 201, made.text
    (key,) = services.api_keys.list_for(anna.id)
    browser.cookies.clear()
    token = _sign_in_as(browser, "ben")
    stolen = browser.post(f"/console/account/api-keys/{key.id}/revoke", data={"csrf_token": token})
    assert stolen.status_code == 403
    assert "owner mismatch: auth.api_keys is limited to your own resources" in stolen.text
    assert services.api_keys.get(key.id).revoked_at is None
    browser.cookies.clear()
    token = _sign_in_as(browser, "nobody")
    assert "Your API keys" not in browser.get("/console/account").text
    refused = browser.post(
        "/console/account/api-keys", data={"scopes": "ticket.read", "csrf_token": token}
    )
    assert refused.status_code == 403
    assert "role mismatch: auth.api_keys requires user" in refused.text


@pytest.mark.req("A14")
def test_a_forged_second_step_gets_no_session(browser: TestClient) -> None:
    answer = browser.post("/console/login/code", data={"mfa_token": "forged", "code": "123456"})
    assert answer.status_code == 401
    assert "sign in again" in answer.text
    assert SESSION not in browser.cookies
    cross = browser.post(
        "/console/login/code",
        data={"mfa_token": "forged", "code": "123456"},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403  # no login CSRF through the second step either


@pytest.mark.req("U1", "A8")
@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("POST", "/console/account/api-keys", {"scopes": "ticket.read admin.api"}),
        ("POST", "/console/account/api-keys/{key}/revoke", {}),
        ("POST", "/console/account/mfa", {}),
        (
            "POST",
            "/console/account/password",
            {
                "current_password": PASSWORD,
                "new_password": "a key holder's own new passphrase",
                "repeat_password": "a key holder's own new passphrase",
            },
        ),
        ("GET", "/console/policies", {}),
        ("GET", "/console/vault", {}),
        ("GET", "/console/doctor", {}),
    ],
)
def test_a_narrow_api_key_does_nothing_on_the_console_beyond_its_scope(
    browser: TestClient,
    services: Services,
    make_user: Callable[..., User],
    method: str,
    path: str,
    form: dict[str, str],
) -> None:
    """The seam: the console's self-service and operator pages are the API's actions, so a key
    scoped to ``ticket.read`` (its owner an admin) gets no more there than at the API: it mints
    no wider key, revokes nothing, enrols no factor, changes no password, reads no operator page."""
    root = make_user("keyowner", roles=("admin", "user"))
    secret, key = services.api_keys.create(root.id, ("ticket.read",), tenant=None)
    before = {k.id for k in services.api_keys.list_for(root.id)}
    answer = browser.request(
        method,
        path.format(key=key.id),
        data=form or None,
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code in (401, 403), answer.text
    assert {k.id for k in services.api_keys.list_for(root.id)} == before
    assert services.api_keys.get(key.id).revoked_at is None


@pytest.mark.req("A15", "A8")
@pytest.mark.asvs("V6.2.2", "V6.2.3")
def test_an_api_key_cannot_change_its_owners_password_at_the_api_either(
    browser: TestClient, services: Services, make_user: Callable[..., User]
) -> None:
    """The same action through the API: a key (even one of every scope) with its owner's current
    password does not set a new one; a password is changed from a password sign-in."""
    owner = make_user("keyowner2", roles=("user",))
    secret, _ = services.api_keys.create(owner.id, ("*",), tenant=None)
    answer = browser.post(
        "/auth/password",
        json={"current_password": PASSWORD, "new_password": "a key holder's own new passphrase"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 403, answer.text
    assert "password sign-in required: auth.password" in answer.json()["reasons"]
    signed_in = browser.post("/auth/login", json={"username": "keyowner2", "password": PASSWORD})
    assert signed_in.status_code == 200, "the password is unchanged"
