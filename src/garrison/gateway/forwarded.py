"""Client address and scheme from ``X-Forwarded-*``, believed only from trusted proxies (E5, E6).

A peer outside ``GARRISON_TRUSTED_PROXIES`` (CIDRs) is the client, whatever headers it sends: a forged
``X-Forwarded-For`` is ignored. From a trusted peer, ``X-Forwarded-For`` is read right to left and the
first address that is not itself a trusted proxy is the client (the left part of the list is what the
client wrote and proves nothing). ``X-Forwarded-Proto`` is taken from the nearest trusted proxy.

``ForwardedMiddleware`` stores the result in ``scope["garrison.client_ip"]`` and ``scope["scheme"]``;
``HttpsMiddleware`` then redirects (308) or refuses (403) plain HTTP when ``GARRISON_FORCE_HTTPS``
says so. A redirect goes to the service's configured public origin (``https_origin`` of
``GARRISON_ISSUER``), never to the request's ``Host`` header: that one is the client's to write,
and following it made every plain-HTTP URL an open redirect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from garrison.errors import ForbiddenError
from garrison.gateway.raw import send_error, send_response

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Paths a load balancer probes over plain HTTP; never redirected.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()
        )
        self._trusted = lru_cache(maxsize=4096)(self._check)

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d
        return any(ip in net for net in self.networks)

    def trusts(self, address: str | None) -> bool:
        return bool(self.networks) and address is not None and self._trusted(address)

    def client_ip(self, peer: str | None, forwarded_for: bytes | None) -> str | None:
        """The client's address given the TCP peer and its ``X-Forwarded-For`` header."""
        if forwarded_for is None or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if not _is_ip(hop):
                return peer  # garbage in the chain: believe only the peer
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer

    def scheme(self, peer: str | None, proto: bytes | None, default: str) -> str:
        if proto is None or not self.trusts(peer):
            return default
        nearest = proto.decode("latin-1").split(",")[-1].strip().lower()
        return nearest if nearest in {"http", "https"} else default


@lru_cache(maxsize=4096)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def joined(scope: Scope, name: bytes, separator: bytes = b", ") -> bytes | None:
    """Every line of a list header, in order, as one comma-separated value (RFC 9110 §5.3).

    A proxy may add its own line rather than append to the client's (HAProxy's ``option
    forwardfor`` does): reading only the first line would believe the client's forgery.
    """
    values = [bytes(value) for key, value in scope["headers"] if key == name]
    return separator.join(values) if values else None


def peer_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class ForwardedMiddleware:
    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            resolve(scope, self.proxies)
        await self.app(scope, receive, send)


def resolve(scope: Scope, proxies: TrustedProxies) -> str | None:
    """Set ``garrison.client_ip`` and the effective ``scheme`` on ``scope``; return the client IP."""
    if "garrison.client_ip" in scope:
        ip: str | None = scope["garrison.client_ip"]
        return ip
    peer = peer_address(scope)
    ip = proxies.client_ip(peer, joined(scope, b"x-forwarded-for"))
    scope["garrison.client_ip"] = ip
    scope["scheme"] = proxies.scheme(peer, joined(scope, b"x-forwarded-proto"), scope["scheme"])
    return ip


def https_origin(public_url: str) -> bytes:
    """``https://host[:port]`` of the service's public URL (``GARRISON_ISSUER``): its own origin
    when it is https; for an http URL the same host on the default https port (the http port is
    not where TLS is served). IPv6 hosts keep their brackets."""
    parts = urlsplit(public_url)
    if parts.scheme == "https" and parts.hostname:
        host = parts.netloc.rpartition("@")[2]
    else:
        name = parts.hostname or "localhost"
        host = f"[{name}]" if ":" in name else name
    return f"https://{host}".encode()


class HttpsMiddleware:
    def __init__(
        self, app: ASGIApp, mode: Literal["off", "redirect", "reject"], origin: bytes
    ) -> None:
        """``origin``: where redirects go (``https_origin(settings.issuer)``)."""
        self.app = app
        self.mode = mode
        self.origin = origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.mode == "off"
            or scope["type"] != "http"
            or scope["scheme"] == "https"
            or scope["path"] in PROBE_PATHS
        ):
            await self.app(scope, receive, send)
            return
        if self.mode == "reject":
            denied = ForbiddenError("this service accepts HTTPS only", reasons=["https required"])
            await send_error(send, denied, scope.get("garrison.request_id"))
            return
        await send_response(send, 308, [(b"location", self._https_url(scope))])

    def _https_url(self, scope: Scope) -> bytes:
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        if not path.startswith(b"/"):
            path = b"/"  # ``*`` or an absolute form: never glued to the host
        query = scope.get("query_string", b"")
        return self.origin + path + (b"?" + query if query else b"")
