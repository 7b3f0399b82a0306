"""The one place Redis clients are made: ``REDIS_URL`` names one server or a Sentinel set.

Every user of Redis (the rate limiter, the failure throttles, the OIDC state store, the
invalidation bus and its subscription, ``/readyz`` and ``garrison doctor``) gets its client here,
so a plain server and a Sentinel set behave the same everywhere.

* ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path``: one
  server, as redis-py's ``Redis.from_url`` reads it.
* ``redis+sentinel://[[user]:password@]host[:port][,host2[:port2],...]/service[/db]``, and
  ``rediss+sentinel://...`` (TLS to the data nodes and the Sentinels): the primary of the Sentinel
  ``service`` (``mymaster`` in Redis's own example configuration). The form is the one redis-py
  does not define but its peers share (the Redis-Sentinel-Url package that defined it, RedisVL,
  Prefect/docket). Sentinels listen on 26379 unless a port is given; ``user:password`` authenticate
  to the data nodes; ``?sentinel_username=...&sentinel_password=...`` to the Sentinels, when they
  require it. IPv6 members are written in brackets (``[::1]:26379``).

Every client is made lazily (no connection until the first command) and asks Sentinel for the
primary's address each time it opens a connection, so after a failover the next connection goes to
the new primary; a connection to a primary that was demoted is closed by Sentinel or refused
(``READONLY``) and replaced. A URL that cannot be read is a ``ConfigError`` naming ``REDIS_URL``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.connection
import redis.sentinel

from garrison.errors import ConfigError

#: Seconds a command, or a connection attempt, waits for Redis (or for a Sentinel).
TIMEOUT = 2.0
#: Sentinel's own port unless the URL names another.
SENTINEL_PORT = 26379
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
#: Query options of a Sentinel URL (every other one is refused rather than ignored).
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})

#: redis-py's reading of a ``redis://``, ``rediss://`` or ``unix://`` URL (untyped upstream).
_parse_url: Callable[[str], dict[str, Any]] = redis.connection.parse_url

FORMS = (
    "redis://HOST[:PORT][/DB], rediss://..., unix:///PATH, or "
    "redis+sentinel://HOST[:PORT][,HOST2[:PORT2]...]/SERVICE[/DB]"
)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is: ``url`` as configured; ``sentinels`` empty for a single server."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def describe(self) -> str:
        """Where this points, without credentials (for logs and ``garrison doctor``)."""
        if not self.is_sentinel:
            kwargs = _parse_url(self.url)
            if "path" in kwargs:
                return f"unix:{kwargs['path']}"
            return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{self.db}"
        members = ",".join(_member(host, port) for host, port in self.sentinels)
        return f"sentinel {self.service!r} via {members} (db {self.db})"

    def _connection(self, read_timeout: float | None = TIMEOUT) -> dict[str, Any]:
        return {"socket_timeout": read_timeout, "socket_connect_timeout": TIMEOUT}

    def _sentinel_kwargs(self) -> dict[str, Any]:
        kwargs = self._connection()
        if self.sentinel_username is not None:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password is not None:
            kwargs["password"] = self.sentinel_password
        if self.tls:
            kwargs["ssl"] = True
        return kwargs

    def _node_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"db": self.db, "username": self.username}
        kwargs["password"] = self.password
        if self.tls:
            kwargs["ssl"] = True
        return kwargs

    def client(self) -> redis.Redis:
        """A client of the server, or of the Sentinel set's current primary."""
        if not self.is_sentinel:
            return redis.Redis.from_url(self.url, **self._connection())
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(), **self._connection()
        )
        primary: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            self.service, **self._node_kwargs()
        )
        return primary

    def async_client(self, *, read_timeout: float | None = TIMEOUT) -> aioredis.Redis:
        """The same, for asyncio; ``read_timeout`` None for a subscription, which waits for
        messages as long as the connection lasts."""
        connection = self._connection(read_timeout)
        if not self.is_sentinel:
            return aioredis.Redis.from_url(self.url, **connection)
        sentinel = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(), **connection
        )
        primary: aioredis.Redis = sentinel.master_for(self.service, **self._node_kwargs())
        return primary


def _member(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _problem(url: str, why: str) -> ConfigError:
    return ConfigError([f"REDIS_URL: {why} (in {_redacted(url)!r}; expected {FORMS})"])


def _redacted(url: str) -> str:
    """``url`` without the credentials of its userinfo, if any."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if len(url) <= 80 else url[:77] + "..."
    netloc_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc = rest[:netloc_end]
    if "@" in netloc:
        rest = "***@" + rest[netloc.rindex("@") + 1 :]
    return f"{scheme}://{rest}"


def redis_target(url: str) -> RedisTarget:
    """Read ``REDIS_URL``; ``ConfigError`` naming the setting when it cannot be used."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in SENTINEL_SCHEMES:
        return _sentinel_target(url, rest, tls=SENTINEL_SCHEMES[scheme])
    try:
        kwargs = _parse_url(url)
        # an option redis-py does not know fails only when the first connection is made: now
        redis.Redis.from_url(url).connection_pool.make_connection()
    except (ValueError, TypeError) as exc:
        raise _problem(url, str(exc).rstrip(".")) from None
    if scheme in {"redis", "rediss"}:
        path = rest.partition("?")[0].partition("/")[2].strip("/")
        if path and not path.isdigit():
            raise _problem(url, f"the database number {path!r} is not a whole number")
    db = kwargs.get("db", 0)
    return RedisTarget(url=url, db=db if isinstance(db, int) else 0)


def _sentinel_target(url: str, rest: str, *, tls: bool) -> RedisTarget:
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # "redis+sentinel://secret@host": as redis:// reads it, a password
            username, password = None, unquote(user)
    sentinels = tuple(_sentinel_member(url, member) for member in netloc.split(","))
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise _problem(url, "a Sentinel URL names its service after the hosts (/mymaster)")
    if len(parts) > 2:
        raise _problem(url, "a Sentinel URL's path is /SERVICE or /SERVICE/DB")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise _problem(url, f"the database number {parts[1]!r} is not a whole number")
        db = int(parts[1])
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - SENTINEL_OPTIONS)
    if unknown:
        raise _problem(url, f"unknown option(s) {', '.join(unknown)} for a Sentinel URL")
    return RedisTarget(
        url=url,
        sentinels=sentinels,
        service=parts[0],
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
        tls=tls,
    )


def _sentinel_member(url: str, member: str) -> tuple[str, int]:
    member = member.strip()
    if not member:
        raise _problem(url, "an empty Sentinel host")
    if member.startswith("["):
        host, bracket, tail = member[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise _problem(url, f"the Sentinel host {member!r} is not [IPv6]:PORT")
        port_text = tail[1:]
    else:
        host, _, port_text = member.partition(":")
        if ":" in port_text:
            raise _problem(url, f"write the IPv6 Sentinel host {member!r} in brackets")
    if not host:
        raise _problem(url, f"the Sentinel member {member!r} has no host")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _problem(url, f"the Sentinel port in {member!r} is not a port number")
    return host, int(port_text)


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (``ConfigError`` if it cannot be read)."""
    return redis_target(url).client()


def close(client: redis.Redis) -> None:
    """Close ``client`` and, for a Sentinel set, its connections to the Sentinels."""
    client.close()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if isinstance(manager, redis.sentinel.Sentinel):
        manager.close()


async def aclose(client: aioredis.Redis) -> None:
    """``close`` for an asyncio client."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if isinstance(manager, aiosentinel.Sentinel):
        await manager.aclose()


async def primary_address(client: aioredis.Redis) -> tuple[str, int] | None:
    """Where the Sentinels say ``client``'s primary is now; None for a single server, or when no
    Sentinel answers (the connection's own failure tells then)."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    service = getattr(client.connection_pool, "service_name", None)
    if not isinstance(manager, aiosentinel.Sentinel) or not isinstance(service, str):
        return None
    try:
        host, port = await manager.discover_master(service)
    except (redis.RedisError, OSError):
        return None
    return str(host), int(port)


def drop_connections(client: redis.Redis) -> None:
    """Close every connection of ``client``'s pool; each next command connects again (for a
    Sentinel set: to the primary the Sentinels name then). A command in flight on one of them
    fails, or is retried by redis-py on a new connection."""
    client.connection_pool.disconnect()
