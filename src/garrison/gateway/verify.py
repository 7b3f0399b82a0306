"""``/verify``: forward auth for nginx ``auth_request``, Traefik ForwardAuth and Caddy ``forward_auth``.

A framework-free ASGI handler (``Front.fast_routes["/verify"]``): every request a proxy forwards
costs one call here, so it reads only the headers it needs in one pass and pays for no middleware.
The original request is described by ``X-Forwarded-Method``/``X-Forwarded-Uri`` (Traefik, Caddy) or
``X-Original-Method``/``X-Original-URI`` (nginx); the checks themselves are ``gateway.gate``'s.

Answers (API.md): 200 with ``X-Auth-User``, ``X-Auth-Subject``, ``X-Auth-Tenant``, ``X-Auth-Roles``;
401 with ``WWW-Authenticate``; 403 with ``X-Auth-Deny-Reason`` and every reason in the body; 429
with ``Retry-After``; 400 when the proxy did not say what the original request was, or said it
twice (both header families disagreeing, any of ``X-Forwarded-Method``, ``X-Forwarded-Uri``,
``X-Original-Method``, ``X-Original-URI`` on two lines, or two different ``Authorization`` or
``X-Tenant-ID`` lines: the backend behind the proxy might read the other one), and when the
original URI's path has no unambiguous canonical form (``gateway.paths``: ``/api/admin;x``,
``/admin%2Fx``, ``/admin.``, ``/a/../b``, a letter-case variant of a case-sensitive route).

Signals (L9): the front counts every answer; with tracing on it runs the request in a server span,
to which the original method and path are added here. An access line (``garrison.access``) is
written for every refusal and for a sample of the rest (``GARRISON_VERIFY_LOG_SAMPLE``, default one
in a hundred): the original method, its path without the query string, the status and the refusal's
code, never a credential. Neither costs anything on an admitted request that was not sampled with
tracing off: one random draw.

A CORS preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never carries
credentials, so it cannot pass the checks; it is answered by the origin allow-list instead: 200 for
an allowed origin (the backend answers the preflight itself), 403 for any other (E2).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from time import perf_counter

from opentelemetry import trace
from starlette.types import Receive, Scope, Send

from garrison.admission import Attempt, Pipeline
from garrison.errors import AuthenticationError, BadRequestError, GarrisonError, UnavailableError
from garrison.gateway.edge import AllowedOrigins, origin_refused
from garrison.gateway.forwarded import TrustedProxies, peer_address
from garrison.gateway.gate import IDENTITY_HEADERS, IdentityHeaders, browser_session, origin_of
from garrison.gateway.querycreds import has_query_credentials
from garrison.gateway.raw import send_error, send_response
from garrison.paths import AmbiguousPath, canonicalize

access_log = logging.getLogger("garrison.access")

_WANTED = frozenset(
    {
        b"authorization",
        b"x-forwarded-method",
        b"x-forwarded-uri",
        b"x-original-method",
        b"x-original-uri",
        b"x-tenant-id",
        b"x-forwarded-for",
        b"user-agent",
        b"origin",
        b"access-control-request-method",
        b"cookie",
        b"x-csrf-token",
        b"sec-fetch-site",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
#: An anonymous (public-action) answer still names every identity header, empty: a proxy that copies
#: them must overwrite a client's own (Caddy 2.6 would otherwise send its unreplaced placeholder).
_ANONYMOUS = [(name, b"") for name in IDENTITY_HEADERS]
_ACRM = b"access-control-request-method"
_XFF = b"x-forwarded-for"
#: The largest request (URI, credential and tenant) whose admission is remembered.
_MAX_KEY_BYTES = 4096
#: Headers whose lines must agree: the backend behind the proxy may read another line than the first.
_SINGLE = frozenset({b"authorization", b"x-tenant-id", b"x-csrf-token"})
#: Headers that describe the original request: a proxy sets each once, so a second line (even an
#: equal one) is a client's, and which line a proxy or Garrison reads is not something to rely on.
_ORIGINAL = frozenset(
    {b"x-forwarded-method", b"x-forwarded-uri", b"x-original-method", b"x-original-uri"}
)
_NO_ORIGINAL = (
    "forward auth needs the original request: X-Forwarded-Method and X-Forwarded-Uri "
    "(Traefik, Caddy) or X-Original-Method and X-Original-URI (nginx)"
)
#: The longest original path an access line or span carries (a proxy may forward a megabyte).
_MAX_LOGGED_PATH = 512
_NOT_SAMPLED = -1.0


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


class VerifyEndpoint:
    def __init__(
        self,
        pipeline: Pipeline,
        proxies: TrustedProxies,
        origins: AllowedOrigins,
        *,
        issuer: str = "",
        log_sample: float = 0.0,
        traced: bool = False,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.pipeline = pipeline
        self.proxies = proxies
        self.origins = origins
        self.identity = IdentityHeaders()
        self.issuer_origin = origin_of(issuer) if issuer else ""
        self.log_sample = log_sample  # the share of admitted answers that get an access line
        self.traced = traced  # the front runs each request in a span (tracing configured)
        self._draw = draw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one forward-auth request; returns the status sent."""
        sampled = self.log_sample > 0.0 and self._draw() < self.log_sample
        started = perf_counter() if sampled else _NOT_SAMPLED
        found: dict[bytes, bytes] = {}
        twice: bytes | None = None
        for name, value in scope["headers"]:
            if name in _WANTED:
                if name not in found:
                    found[name] = value
                elif name == _XFF:  # one list over several lines (HAProxy adds its own line)
                    found[name] += b", " + value
                elif name == b"cookie":  # HTTP/2 sends one line per cookie
                    found[name] += b"; " + value
                elif name in _ORIGINAL or (name in _SINGLE and value != found[name]):
                    twice = name  # checked one way here, perhaps read another way behind
        request_id: str | None = scope.get("garrison.request_id")
        try:
            if twice is not None:
                how = "" if twice in _ORIGINAL else " with different values"
                raise BadRequestError(f"{twice.decode()} sent more than once{how}")
            method = _original(found, b"x-forwarded-method", b"x-original-method", upper=True)
            uri = _original(found, b"x-forwarded-uri", b"x-original-uri")
            if not method or not uri:
                raise BadRequestError(_NO_ORIGINAL)
            if b"?" in uri:
                _refuse_query_credentials(uri, b"authorization" in found)
            if method == b"OPTIONS" and b"origin" in found and _ACRM in found:
                status = await self._preflight(send, found[b"origin"], request_id)
                if status != 200 or sampled or self.traced:
                    self._observe(status, found, started, None if status == 200 else "cors")
                return status
            ip = self.proxies.client_ip(peer_address(scope), found.get(_XFF))
            # a cookie request's CSRF facts differ per request: only Bearer answers are remembered
            key = _cache_key(method, uri, found) if b"authorization" in found else None
            admission = await self.pipeline.admit_cached(key, ip) if key is not None else None
            if admission is None:
                attempt = self._attempt(method, uri, found, ip, request_id)
                admission = await self.pipeline.admit(attempt, cache_key=key)
        except GarrisonError as exc:
            if isinstance(exc, UnavailableError):
                self.pipeline.metrics.dependency_unavailable(exc.dependency)
            await send_error(send, exc, request_id)
            self._observe(exc.status, found, started, exc.code)
            return exc.status
        # no X-Request-ID on a 200: every header costs the server; a proxy that wants correlation
        # sends its own (nginx: $request_id), which Garrison's logs then carry
        await send_response(send, 200, self.identity(admission) or _ANONYMOUS)
        if sampled or self.traced:
            self._observe(200, found, started, None)
        return 200

    def _observe(
        self, status: int, found: dict[bytes, bytes], started: float, code: str | None
    ) -> None:
        """The original request on the span (tracing on), and its access line: every refusal, and
        the answers that were sampled. Method and path only (no query string, no header): the
        credential is never written."""
        logged = status != 200 or started != _NOT_SAMPLED
        if not self.traced and not (logged and access_log.isEnabledFor(logging.INFO)):
            return
        raw_method = found.get(b"x-forwarded-method") or found.get(b"x-original-method") or b""
        raw_uri = found.get(b"x-forwarded-uri") or found.get(b"x-original-uri") or b""
        method = raw_method[:16].decode("latin-1").upper()
        path = raw_uri.split(b"?", 1)[0].split(b"#", 1)[0][:_MAX_LOGGED_PATH].decode("latin-1")
        if self.traced:
            trace.get_current_span().set_attributes(
                {"garrison.original.method": method, "garrison.original.path": path}
            )
        if not logged or not access_log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, object] = {
            "route": "/verify",
            "method": method,
            "path": path,
            "status": status,
            "sampled": started != _NOT_SAMPLED,
        }
        if code is not None:
            fields["code"] = code
        if started != _NOT_SAMPLED:
            fields["duration_ms"] = round((perf_counter() - started) * 1000, 2)
        access_log.info("verify %s %s %d", method, path, status, extra=fields)

    async def _preflight(self, send: Send, origin: bytes, request_id: str | None) -> int:
        if not self.origins.allows(origin):
            refused = origin_refused()
            await send_error(send, refused, request_id)
            return refused.status
        await send_response(send, 200, [])
        return 200

    def _attempt(
        self,
        method: bytes,
        uri: bytes,
        found: dict[bytes, bytes],
        ip: str | None,
        request_id: str | None,
    ) -> Attempt:
        try:
            path = canonicalize(uri.decode("latin-1"))
        except AmbiguousPath as exc:
            raise BadRequestError(
                f"the original URI has no unambiguous path: {exc.reason}", code="ambiguous_path"
            ) from None
        authorization = _text(found.get(b"authorization"))
        session, browser = (None, None)
        if authorization is None and b"cookie" in found:
            session, browser = browser_session(
                found[b"cookie"],
                found.get(b"x-csrf-token"),
                found.get(b"origin"),
                found.get(b"sec-fetch-site"),
                self._own_origins(found),
            )
        return Attempt(
            method=method.decode("latin-1").upper(),
            path=path,
            authorization=authorization,
            tenant_header=_text(found.get(b"x-tenant-id")),
            ip=ip,
            request_id=request_id,
            user_agent=_text(found.get(b"user-agent")),
            session=session,
            browser=browser,
        )

    def _own_origins(self, found: dict[bytes, bytes]) -> tuple[str, ...]:
        """The site the browser was on: the original request's (the proxy says which with
        ``X-Forwarded-Proto`` and ``X-Forwarded-Host``), and Garrison's own issuer."""
        own = [self.issuer_origin] if self.issuer_origin else []
        host, proto = found.get(b"x-forwarded-host"), found.get(b"x-forwarded-proto")
        if host is not None:
            scheme = (proto or b"https").split(b",")[0].strip().decode("latin-1")
            own.append(f"{scheme}://{host.split(b',')[0].strip().decode('latin-1')}")
        return tuple(own)


def _refuse_query_credentials(uri: bytes, with_header: bool) -> None:
    """A8 for the original request, as ``Front`` has it for Garrison's own: a credential in the
    query string is never used; alone the request is unauthenticated (401), next to an
    Authorization header it is malformed (400). Behind a proxy the client's query string reaches
    Garrison only inside the original URI, so ``Front`` cannot see it."""
    if has_query_credentials(uri.split(b"?", 1)[1].split(b"#", 1)[0]):
        detail = "credentials are accepted only in the Authorization header"
        if with_header:
            raise BadRequestError(detail, code="credentials_in_query")
        raise AuthenticationError(detail, code="credentials_in_query")


def _cache_key(
    method: bytes, uri: bytes, found: dict[bytes, bytes]
) -> tuple[bytes | None, ...] | None:
    """The admission-cache key of a request, or None when it is too large to be worth keeping: a
    proxy may forward a URI of a megabyte (Caddy) and ``Bearer`` padded with spaces still
    authenticates, so every key would otherwise be one an attacker can make as large as it likes."""
    authorization, tenant = found.get(b"authorization"), found.get(b"x-tenant-id")
    size = len(uri) + len(authorization or b"") + len(tenant or b"")
    return (authorization, method, uri, tenant) if size <= _MAX_KEY_BYTES else None


def _original(
    found: dict[bytes, bytes], forwarded: bytes, original: bytes, *, upper: bool = False
) -> bytes | None:
    """One fact of the original request, named by either header family.

    A proxy sets only its own family and passes the client's other headers along (nginx sends a
    client's ``X-Forwarded-Uri`` to ``auth_request`` next to the ``X-Original-URI`` it set): when
    both are present they must agree, or a client could have a path it is not served authorized.
    """
    first, second = found.get(forwarded), found.get(original)
    if first is not None and second is not None:
        same = first.upper() == second.upper() if upper else first == second
        if not same:
            raise BadRequestError(
                f"{forwarded.decode()} and {original.decode()} disagree; a proxy must send one"
            )
    return first or second
