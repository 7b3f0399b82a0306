"""Login lockout without lockout abuse (A13), over HTTP, with an injected clock.

The lock is per (account, address): an attacker's guesses from one address back that pair off
exponentially and leave the real user, at another address, alone. Failures spread over many
addresses meet an account-wide ceiling, much higher than the pair's; reaching it locks the account
for every address, is audited (``auth.lockout``) and counted (``garrison_auth_lockouts_total``).
Each test runs on the memory limiter and on the Redis limiter; on Redis the attempts alternate
between two replicas sharing one PostgreSQL database and one Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx2
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.gateway.asgi import create_app
from garrison.storage.schema import audit_log
from tests.conftest import PASSWORD, MakeSettings
from tests.support import create_pg_database, drop_pg_database, redis_client, redis_prefix

ATTACKER = "203.0.113.66"
VICTIM = "198.51.100.7"
WINDOW = 900


class FakeClock:
    """A clock the test moves by hand; every replica of a test reads the same one."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Stack:
    """One or two replicas behind a trusted proxy, so each request can name its client address."""

    replicas: list[Services]
    clients: list[TestClient]
    clock: FakeClock
    turn: int = 0

    def login(self, username: str, password: str, ip: str) -> httpx2.Response:
        client = self.clients[self.turn % len(self.clients)]  # alternate replicas
        self.turn += 1
        return client.post(
            "/auth/login",
            json={"username": username, "password": password},
            headers={"X-Forwarded-For": ip},
        )

    def code(self, username: str, password: str, ip: str) -> int:
        return self.login(username, password, ip).status_code

    def lockouts(self) -> list[tuple[str | None, str, dict[str, object]]]:
        with self.replicas[0].db.begin() as conn:
            rows = conn.execute(
                sa.select(audit_log.c.actor, audit_log.c.outcome, audit_log.c.details).where(
                    audit_log.c.action == "auth.lockout"
                )
            ).all()
        return [(row.actor, row.outcome, row.details) for row in rows]

    def lockout_count(self) -> float:
        total = 0.0
        for svc in self.replicas:
            value = svc.metrics.registry.get_sample_value(
                "garrison_auth_lockouts_total", {"scope": "login"}
            )
            total += value or 0.0
        return total


@pytest.fixture(params=["memory", "redis"])
def stack(request: pytest.FixtureRequest, make_settings: MakeSettings) -> Iterator[Stack]:
    """Pair limit 3, account-wide ceiling 10, per-IP limit 20, backoff 1 s doubling to 8 s."""
    clock = FakeClock()
    extra: dict[str, object] = {}
    url = None
    if request.param == "redis":
        redis_client()
        url = create_pg_database()
        extra = {
            "DATABASE_URL": url,
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "USE_REDIS_LIMITER": True,
            "GARRISON_REDIS_PREFIX": redis_prefix(),
        }
    settings = make_settings(
        GARRISON_LOGIN_MAX_FAILURES=3,
        GARRISON_LOGIN_MAX_FAILURES_PER_ACCOUNT=10,
        GARRISON_LOGIN_MAX_FAILURES_PER_IP=20,
        GARRISON_LOGIN_FAILURE_WINDOW=WINDOW,
        GARRISON_LOGIN_BACKOFF_BASE=1,
        GARRISON_LOGIN_BACKOFF_MAX=8,
        GARRISON_TRUSTED_PROXIES="127.0.0.1/32",
        **extra,
    )
    count = 2 if request.param == "redis" else 1
    replicas = [build_services(settings, clock=clock) for _ in range(count)]
    replicas[0].users.create("alice", PASSWORD)
    with ExitStack() as stack:
        clients = [
            stack.enter_context(
                TestClient(
                    create_app(svc), base_url="http://127.0.0.1", client=("127.0.0.1", 50000)
                )
            )
            for svc in replicas
        ]
        yield Stack(replicas, clients, clock)
    for svc in replicas:
        svc.close()
    if url:
        drop_pg_database(url)


@pytest.mark.req("A13")
def test_an_attacker_at_one_address_does_not_lock_out_the_user_at_another(stack: Stack) -> None:
    """Five bad passwords from anywhere used to lock the account for everybody."""
    codes = [stack.code("alice", f"guess-{i}", ATTACKER) for i in range(8)]
    assert codes[:3] == [401] * 3
    assert codes[3:] == [429] * 5  # the attacker's pair is locked
    assert stack.code("alice", PASSWORD, VICTIM) == 200
    assert (
        stack.code("alice", PASSWORD, ATTACKER) == 429
    )  # a lock is a lock, even for the right one
    assert stack.lockouts() == []
    assert stack.lockout_count() == 0


@pytest.mark.req("A13")
def test_the_pair_backoff_doubles_up_to_its_cap_and_a_success_resets_it(stack: Stack) -> None:
    for i in range(2):
        assert stack.code("alice", f"guess-{i}", ATTACKER) == 401
    waits = []
    for i in range(5):
        assert stack.code("alice", f"again-{i}", ATTACKER) == 401  # the lock has run out
        refused = stack.login("alice", f"early-{i}", ATTACKER)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        waits.append(int(refused.headers["retry-after"]))
        stack.clock.advance(waits[-1] - 0.5)
        assert stack.code("alice", PASSWORD, ATTACKER) == 429  # not yet
        stack.clock.advance(0.5)
    assert waits == [1, 2, 4, 8, 8]
    assert stack.code("alice", PASSWORD, ATTACKER) == 200  # the user, from the same address
    # a fresh count after the success: a failure no longer locks the pair at once
    assert [stack.code("alice", f"after-{i}", ATTACKER) for i in range(2)] == [401, 401]


@pytest.mark.req("A13")
def test_pair_failures_are_forgotten_after_the_window(stack: Stack) -> None:
    for i in range(3):
        assert stack.code("alice", f"guess-{i}", ATTACKER) == 401
    stack.clock.advance(1 + WINDOW)
    assert [stack.code("alice", f"later-{i}", ATTACKER) for i in range(4)] == [401] * 3 + [429]


@pytest.mark.req("A13")
def test_addresses_within_one_ipv6_64_share_their_pair(stack: Stack) -> None:
    """An IPv6 client owns its whole /64: a fresh address there is not a fresh pair."""
    codes = [stack.code("alice", f"guess-{i}", f"2001:db8:1:2::{i + 1:x}") for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    assert stack.code("alice", PASSWORD, "2001:db8:1:3::1") == 200  # another /64


@pytest.mark.req("A13", "L6")
def test_the_account_wide_ceiling_trips_is_audited_and_counted(stack: Stack) -> None:
    """Failures spread over many addresses still meet a budget; reaching it is an incident."""
    bots = [f"192.0.2.{n}" for n in range(1, 5)]
    codes = [stack.code("alice", f"spray-{i}-secret", bots[i // 3]) for i in range(10)]
    assert codes == [401] * 10  # at most 3 from each address, 10 in all
    refused = stack.login("alice", PASSWORD, VICTIM)
    assert refused.status_code == 429  # the ceiling holds for every address
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW
    assert stack.code("alice", "spray-x", bots[3]) == 429
    assert stack.code("alice", "spray-y", "192.0.2.99") == 429

    [(actor, outcome, details)] = stack.lockouts()  # once per window, however many refusals
    assert actor == "alice"
    assert outcome == "deny"
    assert details["account"] == "alice"
    assert details["failures"] == 10
    assert "secret" not in repr(details)  # the guesses were spray-N-secret: never recorded
    assert PASSWORD not in repr(details)
    assert stack.lockout_count() == 1

    stack.clock.advance(WINDOW + 1)
    assert stack.code("alice", PASSWORD, VICTIM) == 200


@pytest.mark.req("A13", "A1")
def test_the_ceiling_answers_alike_for_a_missing_account(stack: Stack) -> None:
    answers = []
    for name in ("alice", "nobody"):
        for i in range(10):
            assert stack.code(name, f"spray-{i}", f"192.0.2.{i}") == 401
        refused = stack.login(name, "spray-x", VICTIM)
        answers.append((refused.status_code, refused.json(), refused.headers["retry-after"]))
    assert answers[0] == answers[1]
    assert answers[0][0] == 429
    assert [actor for actor, _, _ in stack.lockouts()] == ["alice", "nobody"]


@pytest.mark.req("A13")
def test_the_per_ip_limit_still_stops_spraying_across_accounts(stack: Stack) -> None:
    codes = [stack.code(f"user{i}", "guess-123", ATTACKER) for i in range(22)]
    assert codes[:20] == [401] * 20
    assert codes[20:] == [429, 429]
    assert stack.code("alice", PASSWORD, VICTIM) == 200
