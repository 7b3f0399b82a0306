"""Signing-key rotation and emergency rotation under load on two replicas (A6).

What the replicas promise (docs/operations.md): a rotation fails no request, neither for tokens
signed before it nor for tokens the other replica signs with the new key right after it; an
emergency rotation makes both replicas refuse the old tokens within a second.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.faults.conftest import MakeEnv
from tests.faults.support import Call, Load, bearer, get, report, seed_users
from tests.faults.support import login as login_token
from tests.support import (
    REDIS_URL,
    LiveServer,
    create_pg_database,
    drop_pg_database,
    redis_client,
    redis_prefix,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

EMERGENCY_BOUND = 1.0


@pytest.fixture
def database() -> Iterator[str]:
    url = create_pg_database("garrison_fault")
    yield url
    drop_pg_database(url)


def kid(token: str) -> str:
    head = token.split(".", maxsplit=1)[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


@pytest.mark.req("A6")
def test_rotation_and_emergency_rotation_under_load(
    request: pytest.FixtureRequest, make_env: MakeEnv, database: str
) -> None:
    redis_client()  # the shared Redis carries the invalidation bus; it is never stopped here
    env = make_env(
        database,
        REDIS_URL=REDIS_URL,
        GARRISON_REDIS_PREFIX=redis_prefix(),
        GARRISON_USER_CACHE_TTL="300",
    )
    seed_users(env, ("sam", ["support"]), ("root", ["admin"]))
    a, b = LiveServer(env).start(), LiveServer(env).start()
    kids: set[str] = set()
    kids_lock = threading.Lock()
    try:
        old = login_token(a.url, "sam")
        admin = login_token(b.url, "root")

        def fresh(c: httpx.Client, rid: str) -> httpx.Response:
            """A token just signed on A, used at once on B (which must know the new key)."""
            body = {"username": "sam", "password": PASSWORD}
            signed = c.post(f"{a.url}/auth/login", json=body)
            if signed.status_code != 200:
                return signed
            token = signed.json()["access_token"]
            with kids_lock:
                kids.add(kid(token))
            return c.get(f"{b.url}/auth/me", headers=bearer(token))

        calls: dict[str, Call] = {
            "old-a": get(f"{a.url}/auth/me", bearer(old)),
            "old-b": get(f"{b.url}/auth/me", bearer(old)),
            "fresh": fresh,
        }
        with Load(calls, limit=40, pause=0.01) as load:
            time.sleep(1.0)
            rotated = httpx.post(
                f"{a.url}/admin/keys/rotate", json={"emergency": False}, headers=bearer(admin)
            )
            assert rotated.status_code == 200, rotated.text
            new_kid = rotated.json()["kid"]
            time.sleep(2.5)
            calm = load.of()
            sent = time.monotonic()
            emergency = httpx.post(
                f"{b.url}/admin/keys/rotate", json={"emergency": True}, headers=bearer(admin)
            )
            answered = time.monotonic()
            assert emergency.status_code == 200, emergency.text
            time.sleep(2.5)
        samples = load.of()

        # the ordinary rotation: not one request failed, and new-key tokens crossed replicas
        failed = [s for s in calm if s.status != 200]
        assert not failed, f"{len(failed)} requests failed across the rotation: {failed[:5]}"
        assert new_kid in kids, "no token signed with the new key was used on the other replica"
        assert new_kid != kid(old)

        # the emergency rotation: the old token refused on both replicas within a second
        refused_after = {}
        for client in ("old-a", "old-b"):
            after = load.of(client, answered)
            served = [s for s in after if s.status == 200]
            assert not served or served[-1].at - answered <= EMERGENCY_BOUND, (
                f"{client}: old token still served {served[-1].at - answered:.2f} s after"
            )
            first_401 = next((s.at for s in after if s.status == 401), None)
            assert first_401 is not None, f"{client}: the old token was never refused"
            assert first_401 - answered <= EMERGENCY_BOUND
            tail = {s.status for s in after if s.at > answered + EMERGENCY_BOUND}
            assert tail == {401}, f"{client}: {tail}"
            refused_after[client] = round(max(0.0, first_401 - answered), 3)
        fresh_late = [s for s in load.of("fresh", answered + EMERGENCY_BOUND) if s.status != 200]
        assert not fresh_late, f"new tokens refused after the emergency rotation: {fresh_late[:3]}"
        report(
            request,
            "key rotation",
            requests=len(samples),
            failed_during_rotation=len(failed),
            new_key_tokens_used_cross_replica=new_kid in kids,
            emergency_request_s=round(answered - sent, 3),
            old_token_refused_after_s=refused_after,
        )
    finally:
        a.stop()
        b.stop()
