"""The failure throttle's own API (A13), as refresh and MFA will use it, on both stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from garrison.errors import ThrottledError
from garrison.ratelimit.failures import (
    FailurePolicy,
    FailureStore,
    FailureThrottle,
    MemoryFailureStore,
    RedisFailureStore,
    address_key,
)
from tests.support import redis_client, redis_prefix

POLICY = FailurePolicy(
    per_pair=2, per_account=5, per_ip=50, window=60, backoff_base=0.5, backoff_max=4
)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[FailureStore]:
    if request.param == "memory":
        yield MemoryFailureStore()
        return
    client = redis_client()
    prefix = redis_prefix()
    yield RedisFailureStore(client, prefix)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.req("A13")
def test_scopes_do_not_share_budgets(store: FailureStore) -> None:
    clock = Clock()
    login = FailureThrottle(store, POLICY, scope="login", clock=clock)
    mfa = FailureThrottle(store, POLICY, scope="mfa", clock=clock)
    for _ in range(2):
        assert login.begin("alice", "192.0.2.1").failed() is None
    with pytest.raises(ThrottledError) as caught:
        login.begin("alice", "192.0.2.1")
    assert (caught.value.budget, caught.value.retry_after) == ("pair", 1)  # 0.5 s, rounded up
    mfa.begin("alice", "192.0.2.1").succeeded()  # another endpoint's budget is untouched


@pytest.mark.req("A13")
def test_the_ceiling_is_reported_when_reached_and_again_next_window(store: FailureStore) -> None:
    clock = Clock()
    throttle = FailureThrottle(store, POLICY, scope="login", clock=clock)
    lockouts = [throttle.begin("alice", f"192.0.2.{i}").failed() for i in range(5)]
    assert lockouts[:4] == [None] * 4
    assert lockouts[4] is not None
    assert (lockouts[4].account, lockouts[4].failures, lockouts[4].window) == ("alice", 5, 60)
    with pytest.raises(ThrottledError) as caught:
        throttle.begin("alice", "198.51.100.1")
    assert caught.value.budget == "account"
    assert caught.value.retry_after == 60
    clock.now += 61
    assert [throttle.begin("alice", f"192.0.2.{i}").failed() for i in range(5)][4] is not None


@pytest.mark.req("A13")
def test_a_success_gives_its_slots_back(store: FailureStore) -> None:
    clock = Clock()
    throttle = FailureThrottle(store, POLICY, scope="login", clock=clock)
    for _ in range(20):
        throttle.begin("alice", "192.0.2.1").succeeded()
    for i in range(4):
        assert throttle.begin("alice", f"192.0.2.{10 + i}").failed() is None  # 4 of 5 left


@pytest.mark.req("A13")
def test_an_abandoned_attempt_takes_nothing_and_keeps_earlier_failures(
    store: FailureStore,
) -> None:
    """Logins the database could not check (503) must not lock the user out once it is back,
    nor wipe a guesser's earlier failures as a success would."""
    clock = Clock()
    throttle = FailureThrottle(store, POLICY, scope="login", clock=clock)
    for _ in range(20):  # an outage's worth of unchecked attempts: none of them counts
        throttle.begin("alice", "192.0.2.1").abandoned()
    assert throttle.begin("alice", "192.0.2.1").failed() is None  # the pair's first failure
    throttle.begin("alice", "192.0.2.1").abandoned()  # keeps it (a success would forget it)
    clock.now += 1
    assert throttle.begin("alice", "192.0.2.1").failed() is None  # its second: now locked
    with pytest.raises(ThrottledError) as caught:
        throttle.begin("alice", "192.0.2.1")
    assert caught.value.budget == "pair"


@pytest.mark.req("A13")
@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        (None, "-"),
        ("testclient", "testclient"),
    ],
)
def test_address_keys(ip: str | None, key: str) -> None:
    assert address_key(ip) == key
