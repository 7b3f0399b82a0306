"""Every key one Lua call touches hashes to one Redis Cluster slot (E3, A13).

Redis Cluster refuses a script whose keys live in different slots (CROSSSLOT); a hash tag
(``{...}``) in the key names puts them in one. The test runs every script of every Redis store
against the real Redis through a client that records each EVALSHA/EVAL, and computes the slot of
each key with redis-py's own ``key_slot`` (CRC16 of the hash tag, or of the whole key without one).
It also checks that no script goes unexercised, so a new script is covered the day it is added.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from garrison.errors import ThrottledError
from garrison.ratelimit.failures import FailurePolicy, FailureThrottle, RedisFailureStore
from garrison.ratelimit.limiter import RedisLimiter
from tests.support import REDIS_URL, redis_client, redis_prefix

pytestmark = pytest.mark.redis


class Recording(redis.Redis):
    """A real client that remembers the keys of every script call and every script registered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.scripts: set[str] = set()

    def register_script(self, script: Any) -> Any:
        registered = super().register_script(script)
        self.scripts.add(registered.sha)
        return registered

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.calls.append((sha, tuple(str(k) for k in keys_and_args[:numkeys])))
        return super().evalsha(sha, numkeys, *keys_and_args)

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.calls.append(("eval", tuple(str(k) for k in keys_and_args[:numkeys])))
        return super().eval(script, numkeys, *keys_and_args)


@pytest.fixture
def client() -> Iterator[Recording]:
    redis_client().close()  # skips (or fails in CI) when the shared Redis is away
    recording = Recording(
        connection_pool=redis.ConnectionPool.from_url(
            REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    )
    prefix = redis_prefix()
    recording.prefix = prefix  # type: ignore[attr-defined]
    yield recording
    for key in recording.scan_iter(f"{prefix}:*"):
        recording.delete(key)
    recording.close()


def _exercise(client: Recording) -> None:
    prefix: str = client.prefix  # type: ignore[attr-defined]
    limiter = RedisLimiter(client, prefix)
    limiter.hit("verify:10.0.0.1", limit=5, window=60)
    limiter.take("global", want=8, limit=100, window=1)
    limiter.peek("login:10.0.0.1", limit=5, window=60)
    limiter.reset("verify:10.0.0.1")

    policy = FailurePolicy(
        per_pair=1, per_account=3, per_ip=20, window=60, backoff_base=0.5, backoff_max=4
    )
    throttle = FailureThrottle(RedisFailureStore(client, prefix), policy, scope="login")
    for ip in ("192.0.2.7", "2001:db8::1", "198.51.100.9"):
        for account in ("alice", "bob@example.com", "{tag}-looking-name"):
            try:
                attempt = throttle.begin(account, ip)
            except ThrottledError:
                continue
            attempt.failed()
        throttle.begin("carol", ip).succeeded()
        throttle.begin("dave", ip).abandoned()


@pytest.mark.req("E3", "A13")
def test_every_script_call_keeps_its_keys_in_one_cluster_slot(client: Recording) -> None:
    _exercise(client)
    assert client.calls, "no script ran"
    called = {sha for sha, _ in client.calls}
    assert client.scripts <= called, "a registered script was not exercised"
    spread = {
        keys: sorted({key_slot(k.encode()) for k in keys})
        for _, keys in client.calls
        if len({key_slot(k.encode()) for k in keys}) > 1
    }
    assert not spread, f"keys of one call in several slots (CROSSSLOT on Cluster): {spread}"
