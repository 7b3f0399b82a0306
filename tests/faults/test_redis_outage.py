"""Redis stopped and restarted under load, two replicas sharing it (E3, A4, L8).

What the replicas promise (docs/operations.md): the rate limiter fails closed unless
``GARRISON_REDIS_FAIL_OPEN`` (503 with ``Retry-After``, counted in
``garrison_rate_limiter_errors_total``), login always fails closed, no other 5xx; service is back
within 2 s of Redis; and a user disabled while Redis was away is refused on every replica within
a second, since a replica whose invalidation bus is disconnected keeps its caches for one second
at most and drops them all when the bus reconnects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from garrison.app import build_services
from garrison.config import load_settings
from tests.faults.conftest import MakeEnv
from tests.faults.support import (
    Load,
    PrivateRedis,
    get,
    login_call,
    metric,
    private_redis,
    report,
    seed_users,
    verify_headers,
)
from tests.faults.support import login as login_token
from tests.support import LiveServer, create_pg_database, drop_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

OUTAGE = 5.0  # seconds Redis stays down
DISABLE_AT = 3.2  # seconds into the outage: well after the bus noticed it
RECOVERY_BOUND = 2.0  # seconds after Redis is back within which every client is served again
DISABLE_BOUND = 1.0  # A4


@pytest.fixture
def database() -> Iterator[str]:
    url = create_pg_database("garrison_fault")
    yield url
    drop_pg_database(url)


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


@pytest.mark.req("E3", "A4", "L8")
@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_redis_restart_mid_load(
    request: pytest.FixtureRequest,
    make_env: MakeEnv,
    database: str,
    redis_server: PrivateRedis,
    tmp_path: Path,
    fail_open: bool,
) -> None:
    env = make_env(
        database,
        REDIS_URL=redis_server.url,
        USE_REDIS_LIMITER="true",
        GARRISON_REDIS_FAIL_OPEN="true" if fail_open else "false",
        GARRISON_USER_CACHE_TTL="300",  # only the bus (or its absence) can end a cached status
    )
    users = seed_users(env, ("sam", ["support"]), ("bob", ["support"]))
    a, b = LiveServer(env).start(), LiveServer(env).start()
    try:
        sam, bob = login_token(a.url, "sam"), login_token(b.url, "bob")

        calls = {
            "verify-a": get(f"{a.url}/verify", verify_headers(sam)),
            "verify-b": get(f"{b.url}/verify", verify_headers(sam)),
            "bob-b": get(f"{b.url}/verify", verify_headers(bob)),
            "login-b": login_call(b.url, "sam"),
        }
        with Load(calls, limit=40, pause=0.02) as load:
            time.sleep(1.5)
            assert {s.status for s in load.of("bob-b")} == {200}, "bob must be served first"
            down = time.monotonic()
            redis_server.stop()
            time.sleep(DISABLE_AT)
            # a user disabled while Redis is down (as `garrison users disable` would): the
            # invalidation message is lost, the replicas' caches must not outlive the bound
            admin = build_services(load_settings(env), migrate_schema=False)
            try:
                admin.users.set_active(users["bob"].id, False)
            finally:
                admin.close()
            disabled = time.monotonic()
            time.sleep(max(0.0, OUTAGE - (disabled - down)))
            redis_server.start()
            up = time.monotonic()
            time.sleep(RECOVERY_BOUND + 1.5)
        samples = load.of()

        # no 5xx storm: 503 with Retry-After only, never 500 or an unanswered request
        bad = [s for s in samples if s.status not in (200, 401, 503)]
        assert not bad, f"unexpected answers: {bad[:5]}"
        no_retry = [s for s in samples if s.status == 503 and not (s.retry_after or "").isdigit()]
        assert not no_retry, f"503 without Retry-After: {no_retry[:3]}"
        during = [s for s in samples if down + 1.5 <= s.at <= up]
        refused = sum(s.status == 503 for s in samples)
        logins_during = [s.status for s in during if s.client == "login-b"]
        assert logins_during, "no login attempted while Redis was down"
        assert set(logins_during) == {503}, "login fails closed without Redis"
        verifies_during = [s.status for s in during if s.client.startswith("verify")]
        if fail_open:
            assert set(verifies_during) == {200}, "GARRISON_REDIS_FAIL_OPEN=true serves /verify"
        else:
            tail = [s.status for s in during if s.client.startswith("verify") and s.at > up - 1]
            assert tail, "no /verify answered in the outage's last second"
            assert set(tail) == {503}, "the limiter fails closed by default"

        # recovery within 2 s of Redis coming back, on every client of both replicas
        recovery = {}
        for client in ("verify-a", "verify-b", "login-b"):
            back = load.first_ok_streak(client, up)
            assert back is not None, f"{client} never recovered"
            recovery[client] = round(back - up, 3)
        assert max(recovery.values()) <= RECOVERY_BOUND, recovery

        # bob, disabled while Redis was down, is refused within the bound on the other replica,
        # however his status was cached before
        late = [s for s in load.of("bob-b", disabled + DISABLE_BOUND) if s.status == 200]
        assert not late, f"bob still served {late[-1].at - disabled:.2f} s after being disabled"
        first_401 = next(s.at for s in load.of("bob-b", disabled) if s.status == 401)

        errors = [metric(httpx.get(f"{s.url}/metrics").text, "garrison_rate_limiter_errors_total")
                  for s in (a, b)]  # fmt: skip
        assert min(errors) > 0, f"limiter errors not counted: {errors}"
        report(
            request,
            f"redis restart ({'fail-open' if fail_open else 'fail-closed'})",
            requests=len(samples),
            refused_503=refused,
            http_500=sum(s.status >= 500 and s.status != 503 for s in samples),
            recovery_s=recovery,
            disabled_user_refused_after_s=round(first_401 - disabled, 3),
            limiter_errors_counted=errors,
        )
    finally:
        a.stop()
        b.stop()
