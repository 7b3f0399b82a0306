"""Leased budgets: a shared window spent in batches still holds its limit (E3)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from garrison.errors import UnavailableError
from garrison.ratelimit.lease import LEASE_FRACTION, LeasedLimiter, LocalLimiter, lease_size
from garrison.ratelimit.limiter import Limiter, MemoryLimiter, RedisLimiter
from tests.support import free_port, redis_client, redis_prefix


@pytest.fixture
def shared() -> Iterator[RedisLimiter]:
    client = redis_client()
    prefix = redis_prefix()
    yield RedisLimiter(client, prefix)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Limiter:
    if request.param == "memory":
        return MemoryLimiter()
    limiter: Limiter = request.getfixturevalue("shared")
    return limiter


@pytest.mark.req("E3")
def test_take_never_grants_past_the_limit(backend: Limiter) -> None:
    grants = [backend.take("k", 4, 10, 60).granted for _ in range(4)]
    assert grants == [4, 4, 2, 0]
    assert backend.take("k", 1, 10, 60).count == 10
    assert not backend.hit("k", 10, 60).allowed  # hit and take share the window


@pytest.mark.req("E3")
def test_lease_shrinks_as_the_window_fills() -> None:
    assert lease_size(100_000, 0) == 256
    assert lease_size(6000, 0) == int(6000 * LEASE_FRACTION)
    assert lease_size(6000, 5990) == 1
    assert lease_size(100, 0) == 1


async def _spend(limiter: LeasedLimiter, key: str, limit: int, n: int, window: int = 1) -> int:
    allowed = 0
    for _ in range(n):
        if (await limiter.hit(key, limit, window)).allowed:
            allowed += 1
    return allowed


@pytest.mark.req("E3")
def test_two_nodes_hold_one_global_limit(shared: RedisLimiter) -> None:
    """Two leased nodes on one Redis window: never over, under by at most 2 %."""
    limit = 5000
    nodes = [LeasedLimiter(shared), LeasedLimiter(shared)]
    rng = random.Random(7)

    async def main() -> int:
        allowed = 0
        for _ in range(limit * 2 // 50):
            node = nodes[rng.randrange(2)]
            allowed += await _spend(node, "global", limit, 50, 60)
        return allowed

    allowed = anyio.run(main)
    assert allowed <= limit
    assert allowed >= limit * 0.98


@pytest.mark.req("E3")
def test_leases_end_with_the_window(shared: RedisLimiter) -> None:
    limiter = LeasedLimiter(shared)
    assert anyio.run(_spend, limiter, "short", 3, 5) == 3
    time.sleep(1.2)  # the window (1 s) and every lease of it have ended
    assert anyio.run(_spend, limiter, "short", 3, 5) == 3


@pytest.mark.req("E3")
def test_full_window_is_remembered_locally(shared: RedisLimiter) -> None:
    calls = 0
    take = shared.take

    def counting_take(key: str, want: int, limit: int, window: int) -> object:
        nonlocal calls
        calls += 1
        return take(key, want, limit, window)

    shared.take = counting_take  # type: ignore[method-assign,assignment]
    limiter = LeasedLimiter(shared)
    allowed = anyio.run(_spend, limiter, "flood", 2, 100, 60)
    assert allowed == 2
    assert calls <= 3  # refusals after the window filled cost no Redis calls


@pytest.mark.req("E3")
def test_unreachable_redis_raises_and_opens_the_circuit() -> None:
    dead = redis.Redis(
        port=free_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    limiter = LeasedLimiter(RedisLimiter(dead, "x"))

    async def hit() -> None:
        await limiter.hit("k", 10, 60)

    with pytest.raises(UnavailableError):
        anyio.run(hit)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="circuit open"):
        anyio.run(hit)
    assert time.monotonic() - started < 0.1
    dead.close()


@pytest.mark.req("E3")
def test_local_limiter_counts_every_hit() -> None:
    limiter = LocalLimiter(MemoryLimiter())

    async def main() -> list[bool]:
        return [(await limiter.hit("k", 2, 60)).allowed for _ in range(3)]

    assert anyio.run(main) == [True, True, False]


@pytest.mark.req("E3")
def test_concurrent_requests_share_one_refill(shared: RedisLimiter) -> None:
    calls = 0
    take = shared.take

    def counting_take(key: str, want: int, limit: int, window: int) -> object:
        nonlocal calls
        calls += 1
        return take(key, want, limit, window)

    shared.take = counting_take  # type: ignore[method-assign,assignment]
    limiter = LeasedLimiter(shared)
    limit = 300

    async def main() -> int:
        results: list[bool] = []

        async def one() -> None:
            results.append((await limiter.hit("burst", limit, 60)).allowed)

        async with anyio.create_task_group() as tg:
            for _ in range(limit * 2):
                tg.start_soon(one)
        return results.count(True)

    assert anyio.run(main) == limit
    assert calls <= 5  # queued requests ride on one refill instead of one Redis call each


@pytest.mark.req("E3", "E8")
def test_a_hot_key_never_waits_for_its_next_lease(shared: RedisLimiter) -> None:
    """Every request of a key used to wait for the round trip (a worker thread and Redis) when its
    lease ran out: with 64 connections on one identity the whole server stalled once a lease. The
    next lease is now fetched once half of this one is spent: past the first request, none waits
    for the backend (here 10 ms away, while requests come every 0.5 ms: 128 of them span the trip)."""
    take = shared.take

    def slow_take(key: str, want: int, limit: int, window: int) -> object:
        time.sleep(0.01)  # a Redis round trip on a loaded network
        return take(key, want, limit, window)

    shared.take = slow_take  # type: ignore[method-assign,assignment]
    limiter = LeasedLimiter(shared)

    async def main() -> list[float]:
        waits = []
        for _ in range(1200):
            started = time.perf_counter()
            assert (await limiter.hit("hot", 1_000_000_000, 60)).allowed
            waits.append(time.perf_counter() - started)
            await anyio.sleep(0.0005)  # the next request
        return waits

    waits = anyio.run(main)
    stalled = [i for i, wait in enumerate(waits) if wait >= 0.008]
    assert stalled == [0], f"requests that waited for a lease: {stalled[:10]} ({len(stalled)})"


@pytest.mark.req("E3")
def test_two_nodes_fetching_ahead_hold_the_limit_under_concurrency(shared: RedisLimiter) -> None:
    """Fetching ahead takes a second lease before the first is spent: two nodes serving many
    concurrent requests still never pass the limit and strand less than 2 % of it."""
    limit = 20_000
    nodes = [LeasedLimiter(shared), LeasedLimiter(shared)]

    async def main() -> int:
        allowed = 0

        async def client(node: LeasedLimiter, n: int) -> None:
            nonlocal allowed
            for _ in range(n):
                if (await node.hit("global-ahead", limit, 60)).allowed:
                    allowed += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(client, nodes[i % 2], limit * 2 // 32)
        return allowed

    allowed = anyio.run(main)
    assert allowed <= limit
    assert allowed >= limit * 0.98, f"{allowed} of {limit} admitted"
