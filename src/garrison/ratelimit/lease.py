"""Request-path limiters: ``hit`` is awaited once per request and costs no I/O on most requests.

``LocalLimiter`` is the in-memory limiter as is (a dict update). ``LeasedLimiter`` fronts a shared
backend (Redis): it *takes* a batch of units from the shared window in one atomic call and spends them
locally, so one Redis round trip (~100 µs of Python CPU) serves a whole batch of requests.

Lease sizing rule (why the shared limit still holds within 2 %):

    lease = clamp(floor((limit - count) * LEASE_FRACTION), 1, MAX_LEASE)

where ``count`` is the shared window's count the last grant reported. Redis never grants more than
what is left, so the global count can never pass the limit (no over-admission, by construction). The
only error is *under*-admission: units one node leased but had not spent when another node found the
window empty. A node fetches its next lease ahead, once half of the current one is spent
(so a hot key's requests never wait for the round trip), and so strands at most two leases;
a lease is at most ``LEASE_FRACTION`` (1/256) of what was left when it was taken, so N nodes strand
at most 2N/256 of the limit: 1.6 % for two nodes, and the lease shrinks to single units as the
window nears its limit (a lease of one unit is not fetched ahead). Leases end with the shared
window (``ttl`` from Redis): unspent units are not returned, because the window they belong to has
expired with them. A full window is remembered locally until it ends, so a flood of refused
requests costs no Redis calls either. Concurrent requests for one key share a single refill in
flight, and the next refill also asks for the requests queued behind it (real demand, spent at
once, so it strands nothing).

When the backend fails the limiter raises ``UnavailableError`` and stays "open circuit" for
``RETRY_AFTER_ERROR`` seconds, so an unreachable Redis costs one timeout per second, not one per
request; the caller decides to fail open or closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Protocol

import anyio.to_thread

from garrison.clock import Clock, system_clock
from garrison.errors import UnavailableError
from garrison.ratelimit.limiter import Decision, Grant, Limiter

log = logging.getLogger("garrison.ratelimit")

LEASE_FRACTION = 1 / 256
MAX_LEASE = 256
RETRY_AFTER_ERROR = 1.0
_MAX_LEASES = 200_000


class RequestLimiter(Protocol):
    async def hit(self, key: str, limit: int, window: int) -> Decision: ...


def lease_size(limit: int, count: int) -> int:
    """How many units to ask for when ``count`` of ``limit`` are already spent (see module doc)."""
    return max(1, min(MAX_LEASE, math.floor((limit - count) * LEASE_FRACTION)))


class LocalLimiter:
    """One node's counters: the backend's ``hit`` is already a cheap in-memory operation."""

    def __init__(self, backend: Limiter) -> None:
        self._backend = backend

    async def hit(self, key: str, limit: int, window: int) -> Decision:
        return self._backend.hit(key, limit, window)


@dataclass(slots=True)
class _Lease:
    left: int  # units still to spend locally
    count: int  # the shared count the last grant reported
    ends: float  # when the shared window (and this lease) ends
    ahead: int = 0  # with this many units left, the next lease is fetched ahead (0: never)


class LeasedLimiter:
    """A shared backend spent in leases; see the module docstring for the sizing rule."""

    def __init__(self, backend: Limiter, *, clock: Clock = system_clock) -> None:
        self._backend = backend
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._refills: dict[str, asyncio.Event] = {}  # one refill in flight per key
        self._waiting: dict[str, int] = {}  # requests queued behind that refill
        self._down_until = 0.0
        self._ahead: set[asyncio.Task[None]] = set()  # leases being fetched ahead (kept alive)

    async def hit(self, key: str, limit: int, window: int) -> Decision:
        now = self._clock()
        lease = self._leases.get(key)
        if lease is not None and lease.ends > now:
            if lease.left > 0:
                lease.left -= 1
                if lease.left <= lease.ahead and key not in self._refills:
                    self._fetch_ahead(key, limit, window)
                return Decision(True, lease.count - lease.left, limit, 0)
            if lease.count >= limit:  # the shared window is full until it ends
                return _refused(lease, limit, now)
        pending = self._refills.get(key)
        if pending is not None:  # another request is refilling this key: spend what it brings
            self._waiting[key] = self._waiting.get(key, 0) + 1
            try:
                await pending.wait()
            finally:
                left = self._waiting.pop(key) - 1
                if left:
                    self._waiting[key] = left
            return await self.hit(key, limit, window)
        done = self._refills[key] = asyncio.Event()
        try:
            return await self._refill(key, limit, window, now)
        finally:
            del self._refills[key]
            done.set()

    async def _refill(self, key: str, limit: int, window: int, now: float) -> Decision:
        # requests already queued are demand, not a guess: asking for them strands nothing
        grant = await self._take(key, limit, window, now, extra=self._waiting.get(key, 0))
        lease = self._store(key, grant, self._clock())
        if grant.granted == 0:
            return _refused(lease, limit, now)
        lease.left -= 1
        return Decision(True, grant.count - lease.left, limit, 0)

    def _fetch_ahead(self, key: str, limit: int, window: int) -> None:
        """Start taking the next lease of ``key`` while this one is still being spent; requests
        that run out before it arrives wait for it as for any refill in flight."""
        done = self._refills[key] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._take_ahead(key, limit, window, done))
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)

    async def _take_ahead(self, key: str, limit: int, window: int, done: asyncio.Event) -> None:
        try:
            grant = await self._take(key, limit, window, self._clock())
            self._store(key, grant, self._clock())
        except UnavailableError:  # the request that runs out next refills and is refused
            pass
        finally:
            del self._refills[key]
            done.set()

    async def _take(
        self, key: str, limit: int, window: int, now: float, *, extra: int = 0
    ) -> Grant:
        """One lease (sized by the count the last grant reported, plus ``extra`` units) from the
        shared window; ``UnavailableError`` opens the circuit for ``RETRY_AFTER_ERROR`` s."""
        if now < self._down_until:
            raise UnavailableError("rate limiter unavailable (circuit open)", dependency="redis")
        current = self._leases.get(key)
        seen = current.count if current is not None and current.ends > now else 0
        try:
            grant: Grant = await anyio.to_thread.run_sync(
                self._backend.take, key, lease_size(limit, seen) + extra, limit, window
            )
        except UnavailableError:
            self._down_until = self._clock() + RETRY_AFTER_ERROR
            raise
        return grant

    def _store(self, key: str, grant: Grant, now: float) -> _Lease:
        lease = self._leases.get(key)
        ends = now + grant.ttl
        if lease is not None and lease.ends > now and abs(lease.ends - ends) < 1.0:
            # the same window: add to what is left of it
            lease.left += grant.granted
            lease.count = max(lease.count, grant.count)
            lease.ahead = grant.granted // 2
            return lease
        if len(self._leases) >= _MAX_LEASES:
            self._sweep(now)
        lease = _Lease(grant.granted, grant.count, ends, grant.granted // 2)
        self._leases[key] = lease
        return lease

    def _sweep(self, now: float) -> None:
        for stale in [k for k, lease in self._leases.items() if lease.ends <= now]:
            del self._leases[stale]
        if len(self._leases) >= _MAX_LEASES:
            self._leases.clear()


def _refused(lease: _Lease, limit: int, now: float) -> Decision:
    return Decision(False, max(lease.count, limit) + 1, limit, max(1, math.ceil(lease.ends - now)))
