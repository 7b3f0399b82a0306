"""The built-in reverse proxy (E8): ``[[routes]]`` with an ``upstream`` served by ``garrison serve``.

Each proxied request passes the same admission pipeline as ``/verify`` (``garrison.admission``) on
its canonical path, with a Bearer credential or the browser session cookie and its CSRF rules,
then goes to the upstream with Garrison's identity headers; whatever ``X-Auth-*`` the client sent is
dropped first, as are hop-by-hop headers (RFC 9110 §7.6.1, plus any the ``Connection`` header names).
Bodies stream both ways through one pooled ``httpx.AsyncClient`` per application, so a large upload
or download never sits whole in memory; the size cap (``gateway.bodylimit``) counts the upload as it
streams. The upstream sees the canonical path (``gateway.paths``), the one that was authorized; a
request whose path has no unambiguous canonical form is answered 400 while any route is proxied.

Client headers that some backend framework reads as the request's path, method, origin or client
address (``ROUTING_OVERRIDES``: ``X-Original-URL`` and ``X-Rewrite-URL`` in Symfony, Laravel and
IIS; ``X-HTTP-Method-Override`` and its kin in Express, ASP.NET Core, OData, Jersey and Symfony;
``Forwarded`` and ``X-Forwarded-Prefix``/``-Port``/``-Ssl``/``-Scheme`` in Spring, Werkzeug's
ProxyFix, Rack and Tomcat; ``True-Client-IP`` and the like) never reach the upstream: Garrison
authorized one method and path, and the upstream must serve that one. The shipped nginx, Caddy and
Traefik configurations strip the same list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from garrison.admission import Attempt, Pipeline
from garrison.config.settings import RouteDef
from garrison.errors import (
    BadRequestError,
    GarrisonError,
    PayloadTooLargeError,
    UpstreamError,
    UpstreamTimeout,
)
from garrison.gateway.forwarded import TrustedProxies, joined, peer_address
from garrison.gateway.gate import IDENTITY_HEADERS, IdentityHeaders, browser_session, origin_of
from garrison.gateway.raw import RawHeaders, header, send_error, single_header
from garrison.observability.asgi import PROXIED_ROUTE
from garrison.paths import AmbiguousPath, canonicalize, route_prefix
from garrison.policy.model import RouteMatch

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Client request headers that frameworks honour as the request's path, method, scheme, host,
#: prefix or client address (see the module doc); never forwarded, also spelled with underscores.
ROUTING_OVERRIDES = frozenset(
    {
        # the path
        b"x-original-url",
        b"x-rewrite-url",
        b"x-override-url",
        b"x-forwarded-prefix",
        b"x-forwarded-path",
        # the forward-auth descriptions of the original request (some apps route by them)
        b"x-original-uri",
        b"x-original-method",
        b"x-forwarded-uri",
        b"x-forwarded-method",
        # the method
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        # scheme, host, port, client (RFC 7239 and the de facto headers)
        b"forwarded",
        b"x-forwarded-host",
        b"x-forwarded-server",
        b"x-forwarded-port",
        b"x-forwarded-scheme",
        b"x-forwarded-ssl",
        b"x-url-scheme",
        b"front-end-https",
        b"x-host",
        b"x-original-host",
        b"x-real-ip",
        b"x-client-ip",
        b"client-ip",
        b"true-client-ip",
        b"x-cluster-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
    }
)
#: Request headers Garrison writes itself for the upstream, or drops.
_REWRITTEN = (
    HOP_BY_HOP
    | frozenset(IDENTITY_HEADERS)
    | ROUTING_OVERRIDES
    | {b"host", b"x-forwarded-for", b"x-forwarded-proto"}
)


class ClientDisconnected(Exception):
    """The client went away while its body was being streamed upstream."""


def new_client() -> httpx.AsyncClient:
    """The application's one pooled client: no redirects followed, no proxy from the environment."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        follow_redirects=False,
        trust_env=False,
    )


def _dropped(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Hop-by-hop headers, including those a ``Connection`` header names."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return HOP_BY_HOP | named


def _spoofable(name: bytes, dropped: frozenset[bytes]) -> bool:
    """Whether a client's request header must not reach the upstream: a dropped or rewritten one,
    any ``X-Auth-*``, also spelled with underscores (WSGI and CGI backends read ``X_Auth_User`` and
    ``X-Auth-User`` as the same ``HTTP_X_AUTH_USER``)."""
    folded = name.lower().replace(b"_", b"-")
    return folded in dropped or folded.startswith(b"x-auth-")


class ReverseProxy:
    def __init__(
        self,
        app: ASGIApp,
        pipeline: Pipeline,
        proxies: TrustedProxies,
        routes: Iterable[RouteDef],
        client: httpx.AsyncClient,
        *,
        issuer: str = "",
    ) -> None:
        self.app = app
        self.pipeline = pipeline
        self.identity = IdentityHeaders()
        self.issuer_origin = origin_of(issuer) if issuer else ""
        self.proxies = proxies
        self.client = client
        self.routes = [r for r in routes if r.upstream]
        self._prefixes: dict[str, str] = {}

    def route_for(self, method: str, path: str) -> RouteMatch | None:
        """The registry's match for a canonical path and method (``Registry.match_route``, the
        one matcher: the action decided and the upstream served come from the same route), when
        that route is proxied; None: Garrison's own app serves the request. A path that only a
        case-blind reading puts under a case-sensitive route is refused (``BadRequestError``)."""
        match = self.pipeline.authorizer.match_route(method, path)
        return match if match is not None and match.route.upstream else None

    def _prefix(self, route: RouteDef) -> str:
        known = self._prefixes.get(route.prefix)
        if known is None:
            known = self._prefixes[route.prefix] = route_prefix(route.prefix)
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.routes:
            await self.app(scope, receive, send)
            return
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        try:
            path = canonicalize(raw.decode("latin-1"))
            found = self.route_for(scope["method"], path)
        except AmbiguousPath as exc:
            refused = BadRequestError(f"ambiguous path: {exc.reason}", code="ambiguous_path")
            await send_error(send, refused, scope.get("garrison.request_id"))
            return
        except BadRequestError as exc:
            await send_error(send, exc, scope.get("garrison.request_id"))
            return
        if found is None:
            await self.app(scope, receive, send)
            return
        scope[PROXIED_ROUTE] = found.route.prefix  # counted and logged under its route (L9)
        try:
            await self._forward(scope, receive, send, found, path)
        except GarrisonError as exc:
            await send_error(send, exc, scope.get("garrison.request_id"))

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, match: RouteMatch, path: str
    ) -> None:
        route = match.route
        admission = await self.pipeline.admit(self._attempt(scope, path), matched=match)
        request = self.client.build_request(
            scope["method"],
            self._url(route, self._prefix(route), path, scope.get("query_string", b"")),
            headers=[*self._headers(scope), *self.identity(admission)],
            content=_body(receive) if _has_body(scope) else None,
        )
        try:
            response = await self.client.send(request, stream=True)
        except PayloadTooLargeError:
            raise
        except ClientDisconnected:
            return
        except httpx.TimeoutException:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except httpx.HTTPError:
            raise UpstreamError("the upstream could not be reached") from None
        try:
            await self._relay(response, send)
        finally:
            await response.aclose()

    def _attempt(self, scope: Scope, path: str) -> Attempt:
        ip = scope.get("garrison.client_ip") or peer_address(scope)
        authorization = _text(single_header(scope, b"authorization"))
        session, browser = (None, None)
        if authorization is None:
            host = _text(header(scope, b"host")) or ""
            own = tuple(o for o in (f"{scope['scheme']}://{host}", self.issuer_origin) if o)
            session, browser = browser_session(
                joined(scope, b"cookie", b"; "),
                single_header(scope, b"x-csrf-token"),
                single_header(scope, b"origin"),
                single_header(scope, b"sec-fetch-site"),
                own,
            )
        return Attempt(
            method=scope["method"],
            path=path,
            authorization=authorization,
            tenant_header=_text(single_header(scope, b"x-tenant-id")),
            ip=ip,
            request_id=scope.get("garrison.request_id"),
            user_agent=_text(header(scope, b"user-agent")),
            session=session,
            browser=browser,
        )

    @staticmethod
    def _url(route: RouteDef, prefix: str, path: str, query: bytes) -> str:
        upstream = route.upstream or ""  # routes without an upstream never get here
        if route.strip_prefix:
            path = path[len(prefix) :] or "/"
        suffix = "?" + query.decode("latin-1") if query else ""
        # the canonical path is already encoded ("?", "#" and non-ASCII stay escaped)
        return upstream.rstrip("/") + path + suffix

    def _headers(self, scope: Scope) -> RawHeaders:
        incoming: RawHeaders = list(scope["headers"])
        dropped = _dropped(incoming) | _REWRITTEN
        out = [(name, value) for name, value in incoming if not _spoofable(name, dropped)]
        peer = peer_address(scope) or ""
        chain = joined(scope, b"x-forwarded-for")
        if chain is not None and self.proxies.trusts(peer):
            forwarded_for = chain + b", " + peer.encode()
        else:
            forwarded_for = peer.encode()
        out.append((b"x-forwarded-for", forwarded_for))
        out.append((b"x-forwarded-proto", str(scope["scheme"]).encode()))
        host = header(scope, b"host")
        if host is not None:
            out.append((b"x-forwarded-host", host))
        request_id = scope.get("garrison.request_id")
        if request_id:
            out = [(n, v) for n, v in out if n.lower() != b"x-request-id"]
            out.append((b"x-request-id", str(request_id).encode()))
        return out

    @staticmethod
    async def _relay(response: httpx.Response, send: Send) -> None:
        raw = response.headers.raw
        dropped = _dropped(raw)
        headers = [(name.lower(), value) for name, value in raw if name.lower() not in dropped]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        async for chunk in response.aiter_raw():
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _has_body(scope: Scope) -> bool:
    length = header(scope, b"content-length")
    return (length is not None and length != b"0") or header(
        scope, b"transfer-encoding"
    ) is not None


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body: bytes = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return
