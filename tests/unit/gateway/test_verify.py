"""``/verify`` in process: every answer of the forward-auth contract (E8, with Z2, T1, E3, A8)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.admission import Attempt
from garrison.app import Services, build_services
from garrison.config.settings import RateLimitDef, RouteDef
from garrison.errors import GarrisonError
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from tests.conftest import PASSWORD, MakeSettings, login
from tests.support import free_port

ROUTES = (
    RouteDef(prefix="/api/tickets", action="ticket.comment"),
    RouteDef(prefix="/api/limited", action="ticket.read", rate_limit_group="tight"),
    RouteDef(prefix="/public", action="health.read"),
)


@pytest.fixture
def svc(make_settings: MakeSettings) -> Iterator[Services]:
    settings = make_settings(
        routes=ROUTES,
        rate_limits={"tight": RateLimitDef(rate_limit_window_sec=60, rate_limit_per_window=3)},
        GARRISON_TRUSTED_PROXIES="127.0.0.0/8",
    )
    services = build_services(settings)
    services.keyring.load()
    yield services
    services.close()


@pytest.fixture
def http(svc: Services) -> Iterator[TestClient]:
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture
def user(svc: Services) -> Callable[..., User]:
    def make(name: str, **kwargs: Any) -> User:
        return svc.users.create(name, PASSWORD, **kwargs)

    return make


def verify(
    http: TestClient, uri: str, token: str | None = None, method: str = "GET", **headers: str
) -> Any:
    sent = {"X-Original-Method": method, "X-Original-URI": uri, **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return http.get("/verify", headers=sent)


@pytest.mark.req("E8", "A8")
def test_no_credentials_is_401_with_challenge(http: TestClient) -> None:
    response = verify(http, "/api/tickets/1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.req("E8", "A3")
def test_forged_token_is_401(http: TestClient) -> None:
    response = verify(http, "/api/tickets/1", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
    assert response.status_code == 401


@pytest.mark.req("E8")
def test_allowed_request_gets_identity_headers(http: TestClient, user: Callable[..., User]) -> None:
    bob = user("bob", roles=("support",), tenant="acme")
    token = login(http, "bob")["access_token"]
    for headers in (
        {"X-Original-Method": "POST", "X-Original-URI": "/api/tickets/7?x=1"},
        {"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/api/tickets/7"},
    ):
        response = http.get("/verify", headers={**headers, "Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.headers["x-auth-user"] == "bob"
        assert response.headers["x-auth-subject"] == bob.id
        assert response.headers["x-auth-tenant"] == "acme"
        assert response.headers["x-auth-roles"] == "support"


@pytest.mark.req("E8", "Z1")
def test_role_mismatch_is_403_with_reasons(http: TestClient, user: Callable[..., User]) -> None:
    user("carol", roles=("user",))
    token = login(http, "carol")["access_token"]
    response = verify(http, "/api/tickets/7", token)
    assert response.status_code == 403
    reasons = response.json()["reasons"]
    assert reasons
    assert reasons[0].startswith("role mismatch")
    assert response.headers["x-auth-deny-reason"] == reasons[0]
    assert "x-auth-user" not in response.headers


@pytest.mark.req("E8", "Z2")
def test_unregistered_route_is_denied(http: TestClient, user: Callable[..., User]) -> None:
    user("dave", roles=("admin",))
    token = login(http, "dave")["access_token"]
    response = verify(http, "/nowhere", token)
    assert response.status_code == 403
    assert response.json()["reasons"][0].startswith("unknown action")


@pytest.mark.req("E8", "T1")
def test_tenant_mismatch_is_403(http: TestClient, user: Callable[..., User]) -> None:
    user("erin", roles=("support",), tenant="acme")
    token = login(http, "erin")["access_token"]
    response = verify(http, "/api/tickets/7", token, **{"X-Tenant-ID": "globex"})
    assert response.status_code == 403
    assert "tenant mismatch" in response.json()["reasons"]


@pytest.mark.req("E8")
def test_public_action_needs_no_credentials(http: TestClient) -> None:
    response = verify(http, "/public/status")
    assert response.status_code == 200
    assert response.headers["x-auth-user"] == ""  # named, empty: a proxy overwrites a client's


@pytest.mark.req("E8", "Z2")
def test_dot_segments_cannot_borrow_a_public_prefix(http: TestClient) -> None:
    for uri in ("/public/../api/tickets/1", "/public/%2e%2e/api/tickets/1"):
        assert verify(http, uri).status_code == 400, uri  # no single reading is safe
    for uri in ("//api/tickets/1", "/./api/tickets/1", "/api/%74ickets/1"):
        assert verify(http, uri).status_code == 401, uri


@pytest.mark.req("E8")
def test_missing_original_request_is_400(http: TestClient) -> None:
    response = http.get("/verify")
    assert response.status_code == 400
    assert "X-Original-URI" in response.json()["detail"]


@pytest.mark.req("E8", "E3")
def test_rate_limit_is_429_with_retry_after(http: TestClient, user: Callable[..., User]) -> None:
    user("fred", roles=("user",))
    token = login(http, "fred")["access_token"]
    codes = [verify(http, "/api/limited/1", token).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    response = verify(http, "/api/limited/1", token)
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.req("E8", "A7", "L3")
def test_api_key_is_accepted_and_its_use_audited(
    http: TestClient, svc: Services, user: Callable[..., User]
) -> None:
    owner = user("gina", roles=("support",))
    key, record = svc.api_keys.create(owner.id, ("ticket.comment",), tenant=None)
    response = verify(http, "/api/tickets/9", key)
    assert response.status_code == 200
    assert response.headers["x-auth-subject"] == owner.id
    deadline = time.monotonic() + 5  # the second's count is written once the second is over
    found: set[tuple[Any, ...]] = set()
    # one shape on every path: the actor is the user, the key is named apart
    while ("auth.api_key", owner.id) not in found and time.monotonic() < deadline:
        http.get("/healthz")
        with svc.db.engine.connect() as conn:
            found = {tuple(r) for r in conn.execute(sa.text("select action, actor from audit_log"))}
    assert ("auth.api_key", owner.id) in found
    with svc.db.engine.connect() as conn:
        details = conn.execute(
            sa.text("select details from audit_log where action = 'auth.api_key'")
        ).scalar_one()
    parsed = json.loads(details) if isinstance(details, str) else details
    assert parsed["authenticated_by"] == {"type": "api_key", "id": record.id}
    assert parsed["count"] == 1
    assert parsed["path"] == "/api/tickets/9"


@pytest.mark.req("E8", "A4", "A12")
def test_remembered_admission_ends_when_the_user_is_disabled(
    http: TestClient, svc: Services, user: Callable[..., User]
) -> None:
    hank = user("hank", roles=("support",))
    token = login(http, "hank")["access_token"]
    assert verify(http, "/api/tickets/1", token).status_code == 200
    assert verify(http, "/api/tickets/1", token).status_code == 200  # served from memory
    svc.users.set_active(hank.id, False)
    assert verify(http, "/api/tickets/1", token).status_code == 401


@pytest.mark.req("E8", "A4")
def test_remembered_admission_ends_when_sessions_are_revoked(
    http: TestClient, svc: Services, user: Callable[..., User]
) -> None:
    ivy = user("ivy", roles=("support",))
    token = login(http, "ivy")["access_token"]
    assert verify(http, "/api/tickets/1", token).status_code == 200
    svc.users.revoke_sessions(ivy.id)
    assert verify(http, "/api/tickets/1", token).status_code == 401


@pytest.mark.req("E8", "E3")
def test_remembered_admission_still_spends_rate_limits(
    http: TestClient, user: Callable[..., User]
) -> None:
    user("jack", roles=("user",))
    token = login(http, "jack")["access_token"]
    codes = [verify(http, "/api/limited/1", token).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.req("E2", "E8")
def test_preflight_is_answered_by_the_origin_allow_list(make_settings: MakeSettings) -> None:
    settings = make_settings(routes=ROUTES, GARRISON_CORS_ORIGINS="https://app.example.com")
    services = build_services(settings)
    preflight = {
        "X-Forwarded-Method": "OPTIONS",
        "X-Forwarded-Uri": "/api/tickets/1",
        "Access-Control-Request-Method": "DELETE",
    }
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        allowed = client.get("/verify", headers={**preflight, "Origin": "https://app.example.com"})
        foreign = client.get("/verify", headers={**preflight, "Origin": "https://evil.example"})
        plain_options = client.get("/verify", headers={**preflight, "Origin": ""})
    services.close()
    assert allowed.status_code == 200
    assert foreign.status_code == 403
    assert foreign.json()["reasons"] == ["origin not allowed"]
    assert plain_options.status_code in {401, 403}


@pytest.mark.req("E3", "E8")
def test_unreachable_redis_fails_closed_at_verify(
    make_settings: MakeSettings, user: Callable[..., User]
) -> None:
    settings = make_settings(
        routes=ROUTES,
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        USE_REDIS_LIMITER="true",
    )
    services = build_services(settings)
    services.users.create("kim", PASSWORD, roles=("support",))
    token = services.codec.issue({"sub": services.users.find("kim").id, "roles": ["support"]})[0]  # type: ignore[union-attr]
    with TestClient(create_app(services), base_url="http://127.0.0.1") as client:
        response = verify(client, "/api/tickets/1", token)
    services.close()
    assert response.status_code == 503
    assert services.metrics.limiter_errors._value.get() >= 1


@pytest.mark.req("E8")
def test_concurrent_misses_share_one_lookup(
    svc: Services, user: Callable[..., User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a credential is not cached, one worker-thread lookup serves every waiting request."""
    owner = user("lena", roles=("support",))
    key, _ = svc.api_keys.create(owner.id, ("ticket.comment",), tenant=None)
    calls = 0
    real = svc.authenticator.authenticate

    def counting(authorization: str | None) -> Any:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        return real(authorization)

    monkeypatch.setattr(svc.authenticator, "authenticate", counting)
    gate = svc.admission
    request = Attempt("POST", "/api/tickets/1", f"Bearer {key}", None, "127.0.0.1")

    async def main() -> list[str | None]:
        admitted: list[str | None] = []

        async def one() -> None:
            admission = await gate.admit(request)
            admitted.append(admission.principal.sub if admission.principal else None)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(one)
        await gate.drain()
        return admitted

    assert anyio.run(main) == [owner.id] * 20
    assert calls == 1


def _session_tokens(svc: Services, owner: User, count: int) -> list[str]:
    """``count`` access tokens of one login of ``owner``: one user, one session, each token new."""
    from garrison.identity.service import Client

    pair = svc.auth.login(owner.username, PASSWORD, Client(ip="127.0.0.1"))
    claims = {
        k: v for k, v in pair.claims.items() if k not in {"iss", "aud", "iat", "nbf", "exp", "jti"}
    }
    return [svc.codec.issue(claims)[0] for _ in range(count)]


def _admit_all(svc: Services, tokens: list[str], *, cookies: int = 0) -> list[object]:
    """Admit one request per token at once, each on a token seen for the first time; what each
    ended in (its subject, or the error it raised). The first ``cookies`` tokens come as the
    session cookie of a GET (a browser's), the rest as ``Authorization: Bearer``."""
    gate = svc.admission

    async def main() -> list[object]:
        ended: list[object] = []

        async def one(token: str) -> None:
            if tokens.index(token) < cookies:
                attempt = Attempt("GET", "/api/tickets/1", None, None, "127.0.0.1", session=token)
            else:
                attempt = Attempt("POST", "/api/tickets/1", f"Bearer {token}", None, "127.0.0.1")
            try:
                admission = await gate.admit(attempt)
            except GarrisonError as exc:
                ended.append(exc.code)
            else:
                ended.append(admission.principal.sub if admission.principal else None)

        async with anyio.create_task_group() as tg:
            for token in tokens:
                tg.start_soon(one, token)
        await gate.drain()
        return ended

    return anyio.run(main)


def _counting_user_reads(svc: Services, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every user-row read the authenticator makes, by user id (each one slowed to 50 ms, as a
    busy database would: requests arrive while it is under way)."""
    reads: list[str] = []
    real = svc.authenticator.users.get

    def counting(user_id: str) -> User:
        reads.append(user_id)
        time.sleep(0.05)
        return real(user_id)

    monkeypatch.setattr(svc.authenticator.users, "get", counting)
    return reads


@pytest.mark.req("E8", "A4")
def test_first_sights_of_one_sessions_tokens_share_one_user_read(
    svc: Services, user: Callable[..., User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user-status cache expires (every second without a cross-process bus) while 20 tokens
    of one session arrive, each for the first time: one read of the user serves them all, where
    a lookup per token would start a worker thread and a database read for each (a herd every
    second under a token storm)."""
    owner = user("mira", roles=("support",))
    tokens = _session_tokens(svc, owner, 20)
    reads = _counting_user_reads(svc, monkeypatch)
    svc.bus.publish("reset", "")  # every cache cold, as after an expiry
    assert _admit_all(svc, tokens) == [owner.id] * 20
    assert reads == [owner.id]


@pytest.mark.req("E8", "A4", "A9")
def test_cookie_and_bearer_requests_of_one_session_share_one_user_read(
    svc: Services, user: Callable[..., User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same session as a browser's cookie and as Bearer tokens, all at once, caches cold: one
    read, and each request admitted on its own credential. A revoked session then refuses both
    kinds, again on one read."""
    owner = user("odile", roles=("support",))
    tokens = _session_tokens(svc, owner, 12)
    reads = _counting_user_reads(svc, monkeypatch)
    svc.bus.publish("reset", "")
    assert _admit_all(svc, tokens, cookies=6) == [owner.id] * 12
    assert reads == [owner.id]
    svc.users.revoke_sessions(owner.id)
    reads.clear()
    svc.bus.publish("reset", "")
    assert set(_admit_all(svc, tokens, cookies=6)) == {"session_revoked"}
    assert reads == [owner.id]


@pytest.mark.req("E8", "A4")
def test_a_shared_read_still_checks_each_token_on_its_own(
    svc: Services, user: Callable[..., User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting on another token's read never hands over its answer: each token is checked with
    its own claims against what was read. Tokens of a user whose sessions were revoked after
    they were issued are refused, every one, on one read."""
    owner = user("noor", roles=("support",))
    tokens = _session_tokens(svc, owner, 10)
    time.sleep(1.1)  # tokens_valid_after is compared with iat, in whole seconds
    svc.users.revoke_sessions(owner.id)
    reads = _counting_user_reads(svc, monkeypatch)
    svc.bus.publish("reset", "")
    assert _admit_all(svc, tokens) == ["session_revoked"] * 10
    assert reads == [owner.id]
