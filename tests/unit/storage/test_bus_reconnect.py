"""The invalidation bus never reconnects silently (A4).

redis-py's pub/sub re-subscribes by itself after a lost connection when its retry policy allows
(its default does): messages published in the gap are lost and nothing tells the caches. The bus
must see every lost connection and drop its caches (``reset``), whether the connection was cut by
a restart, a network fault, or Sentinel disconnecting the clients of a demoted primary (it sends
``CLIENT KILL TYPE pubsub`` on failover). The server is a private one: killing clients of the
shared Redis would cut other tests' connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from garrison.storage.bus import RedisBus
from garrison.storage.redis_client import redis_target
from tests.faults.support import PrivateRedis, private_redis

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    with private_redis() as running:
        yield running


async def _cut_subscription(url: str) -> tuple[list[str], bool]:
    bus = RedisBus(redis_target(url), "bus-test")
    seen: list[str] = []
    bus.subscribe(lambda kind, ident: seen.append(f"{kind}:{ident}"))
    await bus.start()
    try:
        await asyncio.wait_for(bus.connected.wait(), 5)
        seen.clear()
        admin = redis.Redis.from_url(url)
        try:
            assert admin.client_kill_filter(_type="pubsub") >= 1
        finally:
            admin.close()
        for _ in range(100):  # up to 2 s for the bus to notice, reconnect and say so
            if "reset:*" in seen and bus.live:
                break
            await asyncio.sleep(0.02)
        return seen, bus.live
    finally:
        await bus.stop()
        bus.close()


@pytest.mark.req("A4")
def test_a_cut_subscription_drops_the_caches(server: PrivateRedis) -> None:
    seen, live = asyncio.run(_cut_subscription(server.url))
    assert "reset:*" in seen, f"the bus re-subscribed without dropping the caches: {seen}"
    assert live, "the bus did not come back after the cut"
