"""``/verify``: forward auth for nginx ``auth_request``, Traefik ForwardAuth and Caddy ``forward_auth``.

A framework-free ASGI handler (``Front.fast_routes["/verify"]``): every request a proxy forwards
costs one call here, so it reads only the headers it needs in one pass and pays for no middleware.
The original request is described by ``X-Forwarded-Method``/``X-Forwarded-Uri`` (Traefik, Caddy) or
``X-Original-Method``/``X-Original-URI`` (nginx); the checks themselves are ``gateway.gate``'s.

Answers (API.md): 200 with ``X-Auth-User``, ``X-Auth-Subject``, ``X-Auth-Tenant``, ``X-Auth-Roles``;
401 with ``WWW-Authenticate``; 403 with ``X-Auth-Deny-Reason`` and every reason in the body; 429
with ``Retry-After``; 400 when the proxy did not say what the original request was.

A CORS preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) never carries
credentials, so it cannot pass the checks; it is answered by the origin allow-list instead: 200 for
an allowed origin (the backend answers the preflight itself), 403 for any other (E2).
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from garrison.errors import BadRequestError, GarrisonError
from garrison.gateway.edge import AllowedOrigins, origin_refused
from garrison.gateway.forwarded import TrustedProxies, peer_address
from garrison.gateway.gate import IDENTITY_HEADERS, Gate, Request
from garrison.gateway.paths import canonical_path
from garrison.gateway.raw import send_error, send_response

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
    }
)
#: An anonymous (public-action) answer still names every identity header, empty: a proxy that copies
#: them must overwrite a client's own (Caddy 2.6 would otherwise send its unreplaced placeholder).
_ANONYMOUS = [(name, b"") for name in IDENTITY_HEADERS]
_ACRM = b"access-control-request-method"
_NO_ORIGINAL = (
    "forward auth needs the original request: X-Forwarded-Method and X-Forwarded-Uri "
    "(Traefik, Caddy) or X-Original-Method and X-Original-URI (nginx)"
)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


class VerifyEndpoint:
    def __init__(self, gate: Gate, proxies: TrustedProxies, origins: AllowedOrigins) -> None:
        self.gate = gate
        self.proxies = proxies
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one forward-auth request; returns the status sent."""
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED and name not in found:
                found[name] = value
        request_id: str | None = scope.get("garrison.request_id")
        method = found.get(b"x-forwarded-method") or found.get(b"x-original-method")
        uri = found.get(b"x-forwarded-uri") or found.get(b"x-original-uri")
        try:
            if not method or not uri:
                raise BadRequestError(_NO_ORIGINAL)
            if method == b"OPTIONS" and b"origin" in found and _ACRM in found:
                return await self._preflight(send, found[b"origin"], request_id)
            ip = self.proxies.client_ip(peer_address(scope), found.get(b"x-forwarded-for"))
            key = (found.get(b"authorization"), method, uri, found.get(b"x-tenant-id"))
            admission = await self.gate.admit_cached(key, ip)
            if admission is None:
                request = _request(method, uri, found, ip, request_id)
                admission = await self.gate.admit(request, cache_key=key)
        except GarrisonError as exc:
            await send_error(send, exc, request_id)
            return exc.status
        # no X-Request-ID on a 200: every header costs the server; a proxy that wants correlation
        # sends its own (nginx: $request_id), which Garrison's logs then carry
        await send_response(send, 200, admission.headers or _ANONYMOUS)
        return 200

    async def _preflight(self, send: Send, origin: bytes, request_id: str | None) -> int:
        if not self.origins.allows(origin):
            refused = origin_refused()
            await send_error(send, refused, request_id)
            return refused.status
        await send_response(send, 200, [])
        return 200


def _request(
    method: bytes, uri: bytes, found: dict[bytes, bytes], ip: str | None, request_id: str | None
) -> Request:
    path = canonical_path(uri.decode("latin-1"))
    if path is None:
        raise BadRequestError("the original URI is not a valid path")
    return Request(
        method=method.decode("latin-1").upper(),
        path=path,
        authorization=_text(found.get(b"authorization")),
        tenant_header=_text(found.get(b"x-tenant-id")),
        ip=ip,
        request_id=request_id,
        user_agent=_text(found.get(b"user-agent")),
    )
