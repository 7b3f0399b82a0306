"""Clock skew between replicas within ``GARRISON_CLOCK_SKEW`` (A6).

How the skew is made: tokens are issued by this process's ``Services`` built with a shifted clock on
the replicas' own database and keyring, i.e. exactly what a replica whose clock is ``offset`` seconds
off would sign (``iat``/``nbf`` in the future when ahead, ``exp`` already past when behind). No
test-only setting exists in the service. Two real replicas on the true clock verify them under
load: within the leeway no request is refused; beyond it the token is refused (the bound is real).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from garrison.app import build_services
from garrison.config import load_settings
from tests.faults.conftest import MakeEnv
from tests.faults.support import Load, bearer, get, report, seed_users
from tests.support import LiveServer, create_pg_database, drop_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SKEW = 10  # GARRISON_CLOCK_SKEW
TTL = 30  # GARRISON_ACCESS_TTL (its minimum): a behind clock's token nears its exp quickly


@pytest.fixture
def database() -> Iterator[str]:
    url = create_pg_database("garrison_fault")
    yield url
    drop_pg_database(url)


def token_from_a_clock_off_by(env: dict[str, str], offset: float) -> str:
    """A token as a replica whose clock is ``offset`` seconds off would issue it."""
    svc = build_services(
        load_settings(dict(env)), clock=lambda: time.time() + offset, migrate_schema=False
    )
    try:
        svc.keyring.load()
        user = svc.users.find("sam")
        assert user is not None
        return svc.auth.start_session(user).access_token
    finally:
        svc.close()


@pytest.mark.req("A6")
def test_skew_within_the_leeway_refuses_nothing(
    request: pytest.FixtureRequest, make_env: MakeEnv, database: str
) -> None:
    env = make_env(database, GARRISON_CLOCK_SKEW=str(SKEW), GARRISON_ACCESS_TTL=str(TTL))
    seed_users(env, ("sam", ["support"]))
    a, b = LiveServer(env).start(), LiveServer(env).start()
    try:
        ahead = token_from_a_clock_off_by(env, SKEW - 2)  # iat, nbf 8 s in the future
        behind = token_from_a_clock_off_by(env, -(TTL + SKEW - 8))  # exp 2 s past: 8 s left
        beyond = token_from_a_clock_off_by(env, SKEW + 5)  # iat 15 s in the future
        calls = {
            f"{name}-{label}": get(f"{server.url}/auth/me", bearer(token))
            for label, server in (("a", a), ("b", b))
            for name, token in (("ahead", ahead), ("behind", behind))
        }
        with Load(calls, limit=20, pause=0.01) as load:
            time.sleep(3.0)
        samples = load.of()
        refused = [s for s in samples if s.status != 200]
        assert not refused, f"{len(refused)} spurious refusals: {refused[:5]}"
        assert {s.client for s in samples} == set(calls), "every client was served"
        outside = [
            httpx.get(f"{s.url}/auth/me", headers=bearer(beyond)).status_code for s in (a, b)
        ]
        assert outside == [401, 401], "a token from beyond the leeway is refused"
        report(
            request,
            "clock skew",
            leeway_s=SKEW,
            offsets_s=[SKEW - 2, -(TTL + SKEW - 8)],
            requests=len(samples),
            spurious_refusals=len(refused),
            beyond_leeway=outside,
        )
    finally:
        a.stop()
        b.stop()
