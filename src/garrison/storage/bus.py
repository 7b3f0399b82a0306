"""Cache invalidation across replicas (A4): Redis pub/sub, or in-process only.

A message is ``"<kind>:<id>"`` (``user:42``, ``family:ab12``, ``apikey:9``, ``keys:*``, ``policy:*``).
Every replica subscribes; a lost connection drops every cache at once and again on reconnect
(``reset``), so a message missed while disconnected can never leave a stale entry behind. While a
replica is disconnected, ``live`` is False and its caches keep entries one second at most (as
without Redis), so a user disabled during a Redis outage is refused within a second even then
(A4). Reconnection is retried every ``RECONNECT_MAX`` seconds at most: the caches are trusted again
within a second of Redis coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis

from garrison.storage import redis_client
from garrison.storage.redis_client import RedisTarget

log = logging.getLogger("garrison.bus")

Listener = Callable[[str, str], None]  # (kind, id); kind "reset" means drop everything

#: The longest wait between two reconnection attempts (seconds).
RECONNECT_MAX = 0.5
#: The longest a cache may keep an entry while no message from other processes can arrive.
UNCONNECTED_TTL = 1.0


class InvalidationBus:
    """In-process bus; ``RedisBus`` adds fan-out to every replica."""

    #: When False, caches must keep entries short (≤ 1 s): no message reaches other processes.
    cross_process = False

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    @property
    def live(self) -> bool:
        """Whether messages from other processes reach this one now (never, in process only)."""
        return False

    def cache_ttl(self, ttl: float) -> float:
        """How long a cache may keep an entry it takes now: ``ttl`` while the bus is live, at most
        ``UNCONNECTED_TTL`` while another process's invalidation could be missed."""
        return ttl if self.live else min(ttl, UNCONNECTED_TTL)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _deliver(self, kind: str, ident: str) -> None:
        for listener in self._listeners:
            try:
                listener(kind, ident)
            except Exception:
                log.exception("invalidation listener failed")

    def publish(self, kind: str, ident: str) -> None:
        self._deliver(kind, ident)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def close(self) -> None:
        return None


class RedisBus(InvalidationBus):
    cross_process = True

    def __init__(self, target: RedisTarget, prefix: str) -> None:
        super().__init__()
        self.target = target
        self.channel = f"{prefix}:invalidate"
        self._sync = target.client()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._last_warning = 0.0

    @property
    def live(self) -> bool:
        return self.connected.is_set()

    def publish(self, kind: str, ident: str) -> None:
        self._deliver(kind, ident)
        try:
            self._sync.publish(self.channel, f"{kind}:{ident}")
        except redis.RedisError as exc:  # the other replicas keep 1 s caches meanwhile
            now = time.monotonic()
            if now - self._last_warning >= 1.0:
                self._last_warning = now
                log.warning("could not publish invalidation %s:%s (%s)", kind, ident, exc)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="garrison-bus")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def close(self) -> None:
        redis_client.close(self._sync)

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            client = self.target.async_client(read_timeout=None)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._deliver("reset", "*")
                    self.connected.set()
                    delay = 0.1
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        text = data.decode() if isinstance(data, bytes) else str(data)
                        kind, _, ident = text.partition(":")
                        self._deliver(kind, ident)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: caches may be stale, drop them
                self.connected.clear()
                self._deliver("reset", "*")
                log.warning("invalidation bus disconnected (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            finally:
                await redis_client.aclose(client)
