"""Fixed-window counters: in memory for one node, in Redis (one atomic Lua call) across replicas.

``hit`` counts and decides in one step; ``peek`` decides without counting (the login throttle counts
only failures, A13); ``take`` grants up to N units of a window's budget at once, never more than
what is left, so a node can spend a lease locally (``ratelimit.lease``) while the shared window still
never admits more than its limit. A Redis error raises ``UnavailableError``: the caller chooses to
fail closed (auth endpoints) or open (a setting), never silently.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis

from garrison.clock import Clock, system_clock
from garrison.errors import UnavailableError


@contextmanager
def redis_unavailable() -> Iterator[None]:
    """A Redis error inside, as the 503 of an unavailable rate limiter (never a stack trace)."""
    try:
        yield
    except redis.RedisError as exc:
        raise UnavailableError(
            f"rate limiter unavailable: {type(exc).__name__}", dependency="redis"
        ) from None


@dataclass(slots=True)
class Decision:
    """One limiter answer; treat it as read-only. Not ``frozen``: it is built on every request of
    the hot path, and a frozen dataclass's ``__init__`` costs several times a plain one's."""

    allowed: bool
    count: int
    limit: int
    retry_after: int  # whole seconds until the window resets; 0 while allowed

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``take`` handed out: ``granted`` units (0..want) of a window that ends in ``ttl`` s."""

    granted: int
    count: int  # the window's count after the grant
    ttl: float


class Limiter(Protocol):
    def hit(self, key: str, limit: int, window: int, cost: int = 1) -> Decision: ...

    def take(self, key: str, want: int, limit: int, window: int) -> Grant: ...

    def peek(self, key: str, limit: int, window: int) -> Decision: ...

    def reset(self, key: str) -> None: ...


def _decide(count: int, limit: int, ttl_seconds: float) -> Decision:
    allowed = count <= limit
    retry = 0 if allowed else max(1, math.ceil(ttl_seconds))
    return Decision(allowed, count, limit, retry)


def _peeked(count: int, limit: int, ttl_seconds: float) -> Decision:
    """Would one more hit be allowed? (``count`` is what the window holds now.)"""
    allowed = count < limit
    return Decision(allowed, count, limit, 0 if allowed else max(1, math.ceil(ttl_seconds)))


class MemoryLimiter:
    def __init__(self, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._ops = 0

    def _current(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._windows.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry

    def hit(self, key: str, limit: int, window: int, cost: int = 1) -> Decision:
        now = self._clock()
        with self._lock:
            entry = self._current(key, now)
            count, reset_at = (entry[0] + cost, entry[1]) if entry else (cost, now + window)
            self._windows[key] = (count, reset_at)
            self._ops += 1
            if self._ops % 4096 == 0:
                self._sweep(now)
        return _decide(count, limit, reset_at - now)

    def take(self, key: str, want: int, limit: int, window: int) -> Grant:
        now = self._clock()
        with self._lock:
            entry = self._current(key, now)
            count, reset_at = entry if entry else (0, now + window)
            granted = max(0, min(want, limit - count))
            self._windows[key] = (count + granted, reset_at)
        return Grant(granted, count + granted, reset_at - now)

    def peek(self, key: str, limit: int, window: int) -> Decision:
        now = self._clock()
        with self._lock:
            entry = self._current(key, now)
        if entry is None:
            return Decision(True, 0, limit, 0)
        count, reset_at = entry
        return _peeked(count, limit, reset_at - now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, (_, r) in self._windows.items() if r <= now]:
            del self._windows[key]


_HIT = """
local c = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {c, ttl}
"""


# Grant min(want, limit - count) units and count them, in one atomic step; the window starts on the
# first grant. Returns {granted, count, ttl_ms}.
_TAKE = """
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
local g = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - c)
if g < 0 then g = 0 end
if g > 0 then c = redis.call('INCRBY', KEYS[1], g) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 and c > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  ttl = tonumber(ARGV[3])
end
if ttl < 0 then ttl = tonumber(ARGV[3]) end
return {g, c, ttl}
"""


class RedisLimiter:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}:rl:"
        self._hit = client.register_script(_HIT)
        self._take = client.register_script(_TAKE)

    def take(self, key: str, want: int, limit: int, window: int) -> Grant:
        with redis_unavailable():
            granted, count, ttl_ms = self._take(
                keys=[self._prefix + key], args=[want, limit, window * 1000]
            )
        return Grant(int(granted), int(count), int(ttl_ms) / 1000)

    def hit(self, key: str, limit: int, window: int, cost: int = 1) -> Decision:
        with redis_unavailable():
            count, ttl_ms = self._hit(keys=[self._prefix + key], args=[cost, window * 1000])
        return _decide(int(count), limit, int(ttl_ms) / 1000)

    def peek(self, key: str, limit: int, window: int) -> Decision:
        with redis_unavailable():
            pipe = self._client.pipeline(transaction=False)
            pipe.get(self._prefix + key)
            pipe.pttl(self._prefix + key)
            raw, ttl_ms = pipe.execute()
        count = int(raw or 0)
        if count == 0:
            return Decision(True, 0, limit, 0)
        return _peeked(count, limit, max(int(ttl_ms), 1000) / 1000)

    def reset(self, key: str) -> None:
        with redis_unavailable():
            self._client.delete(self._prefix + key)
