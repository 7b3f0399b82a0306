"""A Redis Sentinel failover under load, two replicas on the set (E3, A4, L8).

A private primary and replica (``redis-server``) and three private Sentinels (``redis-sentinel``,
quorum 2) on loopback ports of their own; two ``garrison serve`` replicas with
``REDIS_URL=redis+sentinel://...`` and the Redis limiter on, under load. The primary is moved
twice ways: ``SENTINEL FAILOVER`` (the old primary stays up and keeps its clients for about ten
seconds, until Sentinel reconfigures it) and SIGKILL (Sentinel must first see it down).

Promised as for a restart (docs/operations.md): no 500, refusals only 503 with ``Retry-After``;
every client served again within ``RECOVERY_BOUND`` of the Sentinels naming the new primary, the
limiter's calls landing there; and a user disabled just after the move is refused on the other
replica within a second (the bus follows the primary, not the connection it already had).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from garrison.app import build_services
from garrison.config import load_settings
from tests.faults.conftest import MakeEnv
from tests.faults.support import (
    Load,
    PrivateRedis,
    PrivateSentinel,
    get,
    login_call,
    report,
    seed_users,
    verify_headers,
    wait_until,
)
from tests.faults.support import login as login_token
from tests.support import LiveServer, create_pg_database, drop_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

SERVICE = "mymaster"
RECOVERY_BOUND = 3.0  # seconds after the Sentinels name the new primary
DISABLE_BOUND = 1.0  # A4
#: Both primaries must be able to serve a fresh replica at once (no 5 s diskless-sync wait).
NODE_OPTIONS = ("--repl-diskless-sync-delay", "0")


@dataclass
class SentinelSet:
    primary: PrivateRedis
    replica: PrivateRedis
    sentinels: list[PrivateSentinel]

    @property
    def url(self) -> str:
        members = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{members}/{SERVICE}/0"

    def named_primary(self) -> int:
        return self.sentinels[0].primary_port()

    def ready(self) -> bool:
        """Every Sentinel knows the other two and the replica (so a failover can proceed)."""
        for sentinel in self.sentinels:
            state = sentinel.master()
            if int(state["num-other-sentinels"]) != 2 or int(state["num-slaves"]) != 1:
                return False
        return True


@pytest.fixture
def database() -> Iterator[str]:
    url = create_pg_database("garrison_fault")
    yield url
    drop_pg_database(url)


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    primary = PrivateRedis(*NODE_OPTIONS)
    replica = PrivateRedis(*NODE_OPTIONS, "--replicaof", "127.0.0.1", str(primary.port))
    sentinels: list[PrivateSentinel] = []
    try:
        primary.start()
        replica.start()
        link = replica.client()
        try:
            wait_until(lambda: link.info("replication")["master_link_status"] == "up", 10)
        finally:
            link.close()
        sentinels = [PrivateSentinel(primary.port, SERVICE) for _ in range(3)]
        for sentinel in sentinels:
            sentinel.start()
        found = SentinelSet(primary, replica, sentinels)
        wait_until(found.ready, 20)
        yield found
    finally:
        for sentinel in sentinels:
            sentinel.close()
        replica.close()
        primary.close()


def _evalsha_calls(server: PrivateRedis) -> int:
    """Lua calls ``server`` has run (the limiter's and the throttles' scripts)."""
    client = server.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.req("E3", "A4", "L8")
@pytest.mark.parametrize("how", ["sentinel-failover", "primary-killed"])
def test_a_failover_under_load_is_survived_like_a_restart(
    request: pytest.FixtureRequest,
    make_env: MakeEnv,
    database: str,
    sentinel_set: SentinelSet,
    how: str,
) -> None:
    env = make_env(
        database,
        REDIS_URL=sentinel_set.url,
        USE_REDIS_LIMITER="true",
        GARRISON_USER_CACHE_TTL="300",  # only the bus can end a cached status within a second
    )
    users = seed_users(env, ("sam", ["support"]), ("bob", ["support"]))
    old, new = sentinel_set.primary, sentinel_set.replica
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
            began = time.monotonic()
            if how == "sentinel-failover":
                with contextlib.closing(sentinel_set.sentinels[0].client()) as sentinel:
                    assert sentinel.sentinel_failover(SERVICE) is True
            else:
                old.stop()
            wait_until(lambda: sentinel_set.named_primary() == new.port, 20, step=0.02)
            switched = time.monotonic()
            # disabled just after the move (as `garrison users disable` would, on replica a's
            # side of things): replica b has bob cached for 300 s and must hear of it anyway
            admin = build_services(load_settings(env), migrate_schema=False)
            try:
                admin.users.set_active(users["bob"].id, False)
            finally:
                admin.close()
            disabled = time.monotonic()
            time.sleep(RECOVERY_BOUND + 1.0)
            # the limiter's calls land on the new primary now, none on the old one
            old_calls = _evalsha_calls(old) if how == "sentinel-failover" else 0
            new_calls = _evalsha_calls(new)
            time.sleep(1.0)
            old_delta = (_evalsha_calls(old) - old_calls) if how == "sentinel-failover" else 0
            new_delta = _evalsha_calls(new) - new_calls
        samples = load.of()

        bad = [s for s in samples if s.status not in (200, 401, 503)]
        assert not bad, f"unexpected answers: {bad[:5]}"
        no_retry = [s for s in samples if s.status == 503 and not (s.retry_after or "").isdigit()]
        assert not no_retry, f"503 without Retry-After: {no_retry[:3]}"
        refused = [s for s in samples if s.status == 503]
        outside = [s for s in refused if not began <= s.at <= switched + RECOVERY_BOUND]
        assert not outside, f"503 outside the switch: {[round(s.at - began, 2) for s in outside]}"

        recovery = {}
        for client in ("verify-a", "verify-b", "login-b"):
            back = load.first_ok_streak(client, switched)
            assert back is not None, f"{client} never recovered"
            recovery[client] = round(max(0.0, back - switched), 3)
        assert max(recovery.values()) <= RECOVERY_BOUND, recovery
        last_refusal = max((s.at for s in refused), default=began)

        assert new_delta > 0, "no limiter call reached the new primary"
        assert old_delta == 0, f"{old_delta} limiter calls still went to the demoted primary"

        late = [s for s in load.of("bob-b", disabled + DISABLE_BOUND) if s.status == 200]
        assert not late, f"bob still served {late[-1].at - disabled:.2f} s after being disabled"
        first_401 = next(s.at for s in load.of("bob-b", disabled) if s.status == 401)
        report(
            request,
            f"redis sentinel ({how})",
            requests=len(samples),
            refused_503=len(refused),
            http_500=sum(s.status >= 500 and s.status != 503 for s in samples),
            sentinels_named_new_primary_after_s=round(switched - began, 3),
            recovery_s=recovery,
            last_503_after_switch_s=round(max(0.0, last_refusal - switched), 3),
            disabled_user_refused_after_s=round(first_401 - disabled, 3),
            limiter_calls_on_new_primary_per_s=new_delta,
        )
    finally:
        a.stop()
        b.stop()
