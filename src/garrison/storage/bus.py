"""Cache invalidation across replicas (A4): Redis pub/sub, or in-process only.

A message is ``"<kind>:<id>"`` (``user:42``, ``family:ab12``, ``apikey:9``, ``keys:*``, ``policy:*``).
Every replica subscribes; a lost connection drops every cache at once and again on reconnect
(``reset``), so a message missed while disconnected can never leave a stale entry behind. While a
replica is disconnected, ``live`` is False and its caches keep entries one second at most (as
without Redis), so a user disabled during a Redis outage is refused within a second even then
(A4). Reconnection is retried every ``RECONNECT_MAX`` seconds at most: the caches are trusted again
within a second of Redis coming back.

With a Sentinel set (``redis+sentinel://``) a failover is one more way to lose messages: a primary
demoted by ``SENTINEL FAILOVER`` keeps serving the clients already connected to it until Sentinel
reconfigures it (about ten seconds later), so for that long a replica that still publishes to it
and one already subscribed to the new primary do not hear each other. So the bus asks the
Sentinels where the primary is every ``PRIMARY_POLL`` seconds; when it moved, it closes every
connection of the shared client (the limiter's, the throttles', its own publisher's: each next
command goes to the new primary), re-subscribes at the new primary, dropping the caches, and keeps
``live`` False for ``SWITCH_SETTLE`` seconds more, the time every other replica needs to notice
the move too: a message one of them still sent to the old primary can leave no entry older than
a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from garrison.storage import redis_client
from garrison.storage.redis_client import RedisTarget

log = logging.getLogger("garrison.bus")

Listener = Callable[[str, str], None]  # (kind, id); kind "reset" means drop everything

#: The longest wait between two reconnection attempts (seconds).
RECONNECT_MAX = 0.5
#: The longest a cache may keep an entry while no message from other processes can arrive.
UNCONNECTED_TTL = 1.0
#: How often a bus on a Sentinel set asks where the primary is (seconds).
PRIMARY_POLL = 0.5
#: How long after re-subscribing at a new primary the caches stay short (seconds): every other
#: replica's bus has noticed the move by then (``PRIMARY_POLL``, and a Sentinel's answer).
SWITCH_SETTLE = 1.0


class PrimaryMoved(Exception):
    """The Sentinel set's primary is no longer the server this subscription is connected to."""


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

    def __init__(self, target: RedisTarget, prefix: str, client: redis.Redis | None = None) -> None:
        """``client``: the process's shared client (its connections are closed when the primary
        moves); without one the bus makes its own."""
        super().__init__()
        self.target = target
        self.channel = f"{prefix}:invalidate"
        self._owns_sync = client is None
        self._sync = target.client() if client is None else client
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
        if self._owns_sync:
            redis_client.close(self._sync)

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            client = self.target.async_client(read_timeout=None)
            try:
                await self._subscription(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost or primary moved: caches may be stale
                self.connected.clear()
                self._deliver("reset", "*")
                if isinstance(exc, PrimaryMoved):
                    log.warning("Redis primary moved (%s); re-subscribing", exc)
                    delay = 0.0
                else:
                    log.warning("invalidation bus disconnected (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(max(delay, 0.05) * 2, RECONNECT_MAX)
            finally:
                await redis_client.aclose(client)

    async def _subscription(self, client: aioredis.Redis) -> None:
        """Deliver messages until the connection fails or (Sentinel) the primary moves."""
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            self._deliver("reset", "*")
            reader = asyncio.create_task(self._read(pubsub))
            tasks = {reader}
            if self.target.is_sentinel:
                connection = pubsub.connection
                at = (connection.host, connection.port) if connection is not None else None
                tasks.add(asyncio.create_task(self._watch(client, at)))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            for task in done:
                task.result()  # the reader's error, or PrimaryMoved
            raise ConnectionError("subscription ended")

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        if self._switched:
            await asyncio.sleep(SWITCH_SETTLE)  # let every replica find the new primary first
            self._switched = False
        self.connected.set()
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            data = message["data"]
            text = data.decode() if isinstance(data, bytes) else str(data)
            kind, _, ident = text.partition(":")
            self._deliver(kind, ident)

    _switched = False

    async def _watch(self, client: aioredis.Redis, at: tuple[str, int] | None) -> None:
        """Return (raising ``PrimaryMoved``) once the Sentinels name another primary than ``at``;
        close the shared client's connections first, so its next commands follow."""
        while True:
            await asyncio.sleep(PRIMARY_POLL)
            now = await redis_client.primary_address(client)
            if now is not None and at is not None and now != at:
                redis_client.drop_connections(self._sync)
                self._switched = True
                raise PrimaryMoved(f"{at[0]}:{at[1]} -> {now[0]}:{now[1]}")
