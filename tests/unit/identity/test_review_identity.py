"""Attacks from the security review of identity, sessions and the vault (A4, A7, A10, A12, E7, V1).

Each test is the attack a fix stops; each failed before its fix.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from garrison.app import Services, build_services, external_idp_config
from garrison.config import load_settings
from garrison.errors import AuthenticationError, ConfigError, RateLimitedError, ValidationError
from garrison.identity.authn import Authenticator
from garrison.identity.external import build_idps
from garrison.identity.service import Client
from garrison.identity.users import User, validate_tenant
from garrison.policy import Authorizer
from garrison.vault.store import validate_name
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.jose import jws, segment
from tests.support import redis_client, redis_prefix

MakeUser = Callable[..., User]


def _frozen_authenticator(services: Services, *, cache_ttl: float = 30.0) -> Authenticator:
    """An authenticator whose caches never expire by time: only invalidation can empty them.

    It is what a replica on the Redis bus looks like within its 30 s cache window; the frozen
    clock makes "within the window" hold however slow the machine is.
    """
    return Authenticator(
        services.codec,
        services.users,
        services.sessions,
        services.api_keys,
        services.bus,
        cache_ttl=cache_ttl,
        clock=lambda: 1_000.0,
    )


@pytest.mark.req("A4", "A7", "A12")
def test_api_key_of_a_disabled_user_stops_at_once(services: Services, make_user: MakeUser) -> None:
    """Disabling a user must end its API keys too, not just its JWTs: the key's principal was
    cached and the ``user`` invalidation left that cache alone."""
    user = make_user("ops-bot", roles=("user",))
    key, _ = services.api_keys.create(user.id, ("read",), tenant=None)
    authn = _frozen_authenticator(services)
    header = f"Bearer {key}"
    assert authn.authenticate(header).sub == user.id  # now cached

    services.users.set_active(user.id, False)

    assert authn.authenticate_cached(header) is None  # nothing stale served from the cache
    with pytest.raises(AuthenticationError):
        authn.authenticate(header)


@pytest.mark.req("A4", "A7")
def test_api_key_of_a_disabled_user_is_refused_over_http(
    client: TestClient, services: Services, make_user: MakeUser
) -> None:
    make_user("root", roles=("admin",))
    bot = make_user("bot", roles=("user",))
    key, _ = services.api_keys.create(bot.id, ("read",), tenant=None)
    assert client.get("/auth/me", headers=bearer(key)).status_code == 200
    admin = bearer(login(client, "root")["access_token"])
    disabled = client.patch(f"/admin/users/{bot.id}", json={"active": False}, headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert client.get("/auth/me", headers=bearer(key)).status_code == 401


@pytest.mark.req("A7")
def test_expired_api_key_is_not_served_from_the_cache(
    services: Services, make_user: MakeUser
) -> None:
    """``authenticate_cached`` returned a cached key principal without looking at its expiry."""
    user = make_user("ci", roles=("user",))
    key, record = services.api_keys.create(user.id, ("read",), tenant=None, expires_in=1)
    authn = _frozen_authenticator(services)
    header = f"Bearer {key}"
    assert authn.authenticate(header).expires_at == record.expires_at
    assert record.expires_at is not None
    time.sleep(max(0.0, record.expires_at - time.time()) + 0.05)

    assert authn.authenticate_cached(header) is None
    with pytest.raises(AuthenticationError):
        authn.authenticate(header)


@pytest.mark.req("A10", "C2")
@pytest.mark.parametrize("how", ["supabase", "idp"])
def test_empty_hs256_secret_is_refused_in_development_too(tmp_path: Path, how: str) -> None:
    """An empty HS256 key lets anyone mint tokens the gateway accepts (HMAC under b"")."""
    env = {"GARRISON_DATA_DIR": str(tmp_path), "GARRISON_DOTENV": "/nonexistent"}
    overrides = {}
    if how == "supabase":
        env |= {"SUPABASE_JWT_SECRET": "", "SUPABASE_URL": "https://p.supabase.co"}
    else:
        overrides = {
            "external_idps": {
                "corp": {"issuer": "https://corp", "audience": "a", "hs256_secret_env": "CORP_K"}
            }
        }
    settings = load_settings(env, overrides=overrides, check_production=False)
    with httpx.Client() as http, pytest.raises(ConfigError):
        build_idps(external_idp_config(settings, {"CORP_K": ""}), http)


@pytest.mark.req("V1", "E7")
@pytest.mark.parametrize("name", ["db-password\n", "a\n"])
def test_secret_name_with_a_trailing_newline_is_refused(name: str) -> None:
    """``$`` matches before a final newline: ``db-password\\n`` made a second, look-alike secret
    (and put a raw newline into log lines that name it)."""
    with pytest.raises(ValidationError):
        validate_name(name)


@pytest.mark.req("V1", "E7")
def test_secret_name_with_a_newline_is_refused_over_http(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("root", roles=("admin",))
    admin = bearer(login(client, "root")["access_token"])
    response = client.put("/v1/secrets/db-password%0A", json={"value": "x"}, headers=admin)
    assert response.status_code == 422, response.text


@pytest.mark.req("T3", "E7")
def test_tenant_with_a_trailing_newline_is_refused() -> None:
    """A tenant ``acme\\n`` is not ``acme``: a user bound to it would sit in a look-alike tenant."""
    with pytest.raises(ValidationError):
        validate_tenant("acme\n")


@pytest.mark.req("T3", "E7")
def test_admin_cannot_create_a_user_in_a_look_alike_tenant(
    client: TestClient, make_user: MakeUser
) -> None:
    make_user("root", roles=("admin",))
    admin = bearer(login(client, "root")["access_token"])
    body = {"username": "eve", "password": "long enough pw", "tenant": "acme\n"}
    assert client.post("/admin/users", json=body, headers=admin).status_code == 422


@pytest.mark.req("A7", "E7")
@pytest.mark.parametrize("scope", ["read\n", "admin\n"])
def test_api_key_scope_with_a_trailing_newline_is_refused(
    services: Services, make_user: MakeUser, scope: str
) -> None:
    user = make_user("bot")
    with pytest.raises(ValidationError):
        services.api_keys.create(user.id, (scope,), tenant=None)


@pytest.mark.req("Z1", "E7")
def test_role_with_a_trailing_newline_is_refused(services: Services) -> None:
    """``admin\\n`` is not ``admin``; a look-alike role in the table only misleads operators."""
    with pytest.raises(ValidationError):
        services.users.create("eve", "long enough pw", roles=("admin\n",))


# -- login throttle (A13) ---------------------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
def throttled(request: pytest.FixtureRequest, make_settings: MakeSettings) -> Iterator[Services]:
    """Services allowing 3 failures per (account, address) and 4 per account, on the memory or
    the Redis limiter, with a clock that stands still (a lock never runs out during a test)."""
    extra: dict[str, object] = {}
    if request.param == "redis":
        redis_client()
        extra = {
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "USE_REDIS_LIMITER": True,
            "GARRISON_REDIS_PREFIX": redis_prefix(),
        }
    now = time.time()
    svc = build_services(
        make_settings(
            GARRISON_LOGIN_MAX_FAILURES=3,
            GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT=4,
            GARRISON_LOGIN_MAX_FAILURES_PER_IP=1000,
            **extra,
        ),
        clock=lambda: now,
    )
    svc.keyring.load()
    yield svc
    svc.close()


def _guess_concurrently(
    services: Services, username: str, n: int, *, spread: bool = True
) -> list[object]:
    """``n`` wrong-password logins released at the same instant, as a guessing script would,
    from ``n`` addresses (``spread``) or all from one."""
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def guess(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            ip = f"198.51.100.{i if spread else 0}"
            services.auth.login(username, f"guess-{i:04d}", Client(ip=ip))
        except Exception as exc:  # 401 or 429: what is counted
            outcomes[i] = exc

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.req("A13")
@pytest.mark.parametrize(
    ("spread", "budget"), [(False, 3), (True, 4)], ids=["pair-budget", "account-ceiling"]
)
def test_concurrent_guesses_cannot_exceed_the_account_throttle(
    throttled: Services, spread: bool, budget: int
) -> None:
    """The throttle was peeked before the password check and counted after it, so guesses sent
    in parallel all passed the peek: many more than the limit were checked per window. From one
    address the pair's budget (3) holds; from many, the account-wide ceiling (4)."""
    throttled.users.create("alice", PASSWORD)
    outcomes = _guess_concurrently(throttled, "alice", 16, spread=spread)
    checked = [o for o in outcomes if isinstance(o, AuthenticationError)]
    refused = [o for o in outcomes if isinstance(o, RateLimitedError)]
    assert len(checked) + len(refused) == 16, outcomes
    assert len(checked) <= budget, f"{len(checked)} passwords were tried against {budget}"
    with pytest.raises(RateLimitedError):  # and the right password now waits too
        throttled.auth.login("alice", PASSWORD, Client(ip=f"198.51.100.{200 if spread else 0}"))


@pytest.mark.req("A13")
def test_successes_still_do_not_count_toward_the_throttle(throttled: Services) -> None:
    throttled.users.create("alice", PASSWORD)
    for _ in range(6):
        throttled.auth.login("alice", PASSWORD, Client(ip="198.51.100.1"))
    with pytest.raises(AuthenticationError):
        throttled.auth.login("alice", "wrong-pass", Client(ip="198.51.100.1"))
    throttled.auth.login("alice", PASSWORD, Client(ip="198.51.100.1"))


@pytest.mark.req("A13")
@pytest.mark.parametrize("variant", ["Alice", "alice ", " ALICE", "alice\t", "ALICE\n"])
def test_case_and_space_variants_share_the_account_throttle(
    throttled: Services, variant: str
) -> None:
    """Spelling the name differently must not buy a fresh set of guesses: not from the same
    address (the pair), nor from a fresh one once the account-wide ceiling is reached."""
    throttled.users.create("alice", PASSWORD)
    for i in range(3):
        with pytest.raises(AuthenticationError):
            throttled.auth.login("alice", f"wrong-{i}", Client(ip="198.51.100.1"))
    with pytest.raises(RateLimitedError):
        throttled.auth.login(variant, PASSWORD, Client(ip="198.51.100.1"))
    with pytest.raises(AuthenticationError):
        throttled.auth.login(variant, "wrong-3", Client(ip="198.51.100.2"))  # the 4th: ceiling
    with pytest.raises(RateLimitedError):
        throttled.auth.login("alice", PASSWORD, Client(ip="198.51.100.3"))


@pytest.mark.req("A13", "A1")
def test_the_throttle_does_not_tell_whether_an_account_exists(throttled: Services) -> None:
    throttled.users.create("alice", PASSWORD)
    answers = []
    for name in ("alice", "nobody"):
        for i in range(3):
            with pytest.raises(AuthenticationError):
                throttled.auth.login(name, f"wrong-{i}", Client(ip="198.51.100.1"))
        with pytest.raises(RateLimitedError) as caught:
            throttled.auth.login(name, "wrong-x", Client(ip="198.51.100.1"))
        answers.append((caught.value.status, caught.value.detail))
    assert answers[0] == answers[1]


# -- A7: with REQUIRE_JWT_FOR_ADMIN an API key alone is never admin --------------------------
@pytest.fixture
def jwt_for_admin(make_settings: MakeSettings) -> Iterator[tuple[TestClient, Services]]:
    from garrison.gateway.asgi import create_app

    svc = build_services(make_settings(REQUIRE_JWT_FOR_ADMIN=True))
    svc.keyring.load()
    with TestClient(create_app(svc), base_url="http://127.0.0.1") as client:
        yield client, svc
    svc.close()


@pytest.mark.req("A7", "T1", "V1")
def test_an_admins_api_key_cannot_read_any_tenants_secrets(
    jwt_for_admin: tuple[TestClient, Services],
) -> None:
    """A platform admin's API key (scope ``*``) was refused on /admin but still acted as admin
    everywhere else: it named any tenant in X-Tenant-ID and read that tenant's vault."""
    client, svc = jwt_for_admin
    root = svc.users.create("root", PASSWORD, roles=("admin",))
    svc.users.create("ada", PASSWORD, roles=("admin",), tenant="acme")
    ada = bearer(login(client, "ada")["access_token"]) | {"X-Tenant-ID": "acme"}
    assert client.put("/v1/secrets/db", json={"value": "hunter22"}, headers=ada).status_code == 201
    key, _ = svc.api_keys.create(root.id, ("*",), tenant=None)

    stolen = client.get(
        "/v1/secrets/db",
        headers=bearer(key) | {"X-Tenant-ID": "acme", "X-Justification": "exfiltration"},
    )
    assert stolen.status_code == 403, stolen.text
    assert "hunter22" not in stolen.text
    own = client.get("/v1/secrets/db", headers=bearer(key) | {"X-Justification": "x"})
    assert own.status_code == 403, own.text  # vault access needs the admin role: a JWT
    root_jwt = bearer(login(client, "root")["access_token"]) | {"X-Tenant-ID": "acme"}
    by_jwt = client.get("/v1/secrets/db", headers=root_jwt | {"X-Justification": "INC-1"})
    assert by_jwt.status_code == 200  # the same admin with a JWT still can


@pytest.mark.req("A7")
def test_an_admins_api_key_carries_no_admin_role(services: Services) -> None:
    """Under REQUIRE_JWT_FOR_ADMIN the policy withholds ``admin`` from a key, and that one
    answer is what every consumer sees (decisions, and X-Auth-Roles at /verify and the proxy)."""
    root = services.users.create("root", PASSWORD, roles=("admin", "support"))
    key, _ = services.api_keys.create(root.id, ("*",), tenant=None)
    who = services.authenticator.authenticate(f"Bearer {key}")
    strict = Authorizer(services.authorizer.registry, services.authorizer.policy_dir)
    assert strict.granted_roles(who) == frozenset({"support"})
    decision = strict.decide(who, "admin.users.create")
    assert decision.reasons == ("admin requires a JWT",)


@pytest.mark.req("A7", "Z5", "E8")
def test_forward_auth_does_not_admit_an_admins_api_key_to_admin_routes(
    jwt_for_admin: tuple[TestClient, Services],
) -> None:
    client, svc = jwt_for_admin
    root = svc.users.create("root", PASSWORD, roles=("admin",))
    key, _ = svc.api_keys.create(root.id, ("*",), tenant=None)
    answer = client.get(
        "/verify",
        headers=bearer(key) | {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/system/nodes"},
    )
    assert answer.status_code == 403, answer.headers


# -- V4 + A10: an erased external identity is provisioned afresh, on every replica alike -------
_GOTRUE_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
_GOTRUE_ISS = "https://project.supabase.co/auth/v1"


def _gotrue_token(sub: str, iat: int) -> str:
    """A GoTrue access token for ``sub``, HS256 under the project's shared secret."""
    claims = {
        "iss": _GOTRUE_ISS,
        "aud": "authenticated",
        "sub": sub,
        "role": "authenticated",
        "iat": iat,
        "exp": iat + 3600,
    }
    head = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{segment(head)}.{segment(claims)}".encode()
    mac = hmac.new(_GOTRUE_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return jws(head, claims, signature=mac)


@pytest.mark.req("V4", "A10")
def test_an_erased_external_user_is_not_locked_out_by_a_stale_mapping(
    make_settings: MakeSettings,
) -> None:
    """The IdP-subject -> local-id map outlived the erased row: this replica answered "account
    disabled or deleted" for good, while a replica that had not cached it provisioned a new row."""
    from garrison.privacy.subject import erase_user

    svc = build_services(
        make_settings(SUPABASE_JWT_SECRET=_GOTRUE_SECRET, SUPABASE_JWT_ISSUER=_GOTRUE_ISS)
    )
    svc.keyring.load()
    try:
        now = int(time.time())
        first = svc.authenticator.authenticate(f"Bearer {_gotrue_token('u-1', now)}")
        erase_user(svc.db, svc.bus, first.sub)
        again = svc.authenticator.authenticate(f"Bearer {_gotrue_token('u-1', now + 1)}")
        assert again.sub != first.sub
        assert svc.users.get(again.sub).active  # a fresh row, as any other replica would make
    finally:
        svc.close()
