"""The checks in front of every backend request, shared by ``/verify`` and the built-in proxy (E8).

For the original method and path: authenticate (JWT or API key), resolve the tenant, ask the policy
about the route's registered action (an unregistered route is denied, Z2), then spend the rate
limits. The answer is an ``Admission`` (who, which tenant, the identity headers for the upstream) or
a ``GarrisonError`` (401, 403 with every reason, 429, 503).

The hot path does no I/O when nothing changed: the token, the user's status and the session come
from the authenticator's caches (a worker thread is used only on a miss), decisions and identity
headers are cached per (identity, action, tenant) and dropped on every policy or cache-reset
message of the invalidation bus, and the limiter spends a local lease. Denies are audited (and
awaited: an acknowledged deny is durable); API-key use is audited without holding the request,
through a bounded set of background tasks; a successful JWT check only moves counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from dataclasses import dataclass

import anyio.to_thread

from garrison.app import Services
from garrison.audit.event import AuditEvent
from garrison.errors import AuthenticationError, ForbiddenError
from garrison.gateway.raw import RawHeaders, header_value
from garrison.policy.model import RouteMatch
from garrison.principal import Principal
from garrison.ratelimit.guard import Plan, RateGuard
from garrison.ratelimit.lease import LeasedLimiter, LocalLimiter, RequestLimiter
from garrison.ratelimit.limiter import RedisLimiter
from garrison.ratelimit.rules import RateRules
from garrison.tenancy import resolve_tenant

log = logging.getLogger("garrison.gateway")

#: Headers Garrison sets for the upstream; a client-supplied one is always removed first.
IDENTITY_HEADERS = (b"x-auth-user", b"x-auth-subject", b"x-auth-tenant", b"x-auth-roles")
_HEADER_CACHE_SIZE = 50_000
_ADMITTED_CACHE_SIZE = 50_000
_MAX_AUDIT_TASKS = 10_000


@dataclass(frozen=True, slots=True)
class Request:
    """The facts of the original request, whoever forwarded it."""

    method: str
    path: str
    authorization: str | None
    tenant_header: str | None
    ip: str | None
    request_id: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    principal: Principal | None
    tenant: str | None
    action: str
    headers: RawHeaders  # identity headers for the upstream (empty for an anonymous request)


def identity_headers(principal: Principal, tenant: str | None) -> RawHeaders:
    return [
        (b"x-auth-user", header_value(principal.username)),
        (b"x-auth-subject", header_value(principal.sub)),
        (b"x-auth-tenant", header_value(tenant or "")),
        (b"x-auth-roles", header_value(",".join(sorted(principal.roles)))),
    ]


def build_rate_guard(services: Services) -> RateGuard:
    limiter: RequestLimiter = (
        LeasedLimiter(services.limiter, clock=services.clock)
        if isinstance(services.limiter, RedisLimiter)
        else LocalLimiter(services.limiter)
    )
    metrics = services.metrics
    return RateGuard(
        limiter,
        RateRules(services.settings),
        fail_open=services.settings.redis_fail_open,
        on_limited=metrics.rate_limited,
        on_error=metrics.limiter_errors.inc,
    )


_HeaderKey = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A remembered admission: valid until ``until``, for one policy version."""

    admission: Admission
    plan: Plan  # its rate limits, counters resolved
    until: float
    version: str


class Gate:
    def __init__(self, services: Services, guard: RateGuard) -> None:
        self.services = services
        self.settings = services.settings
        self.clock = services.clock
        self.authenticator = services.authenticator
        self.authorizer = services.authorizer  # decisions are memoised there, per policy version
        self.guard = guard
        self.metrics = services.metrics
        self._headers: dict[_HeaderKey, RawHeaders] = {}
        self._admitted: dict[Hashable, _Admitted] = {}
        self._generation = 0  # bumped by every invalidation; an admission begun before is not kept
        # As long as the authenticator trusts its user-status cache, and no longer.
        ttl = self.settings.user_cache_ttl
        self._ttl = ttl if services.bus.cross_process else min(ttl, 1.0)
        self._audit_tasks: set[asyncio.Task[None]] = set()
        self._lookups: dict[str, asyncio.Future[Principal]] = {}
        services.bus.subscribe(self._invalidate)

    def _invalidate(self, _kind: str, _ident: str) -> None:
        """Any user, session, key, policy or reset message: forget every remembered admission."""
        self._generation += 1
        self._admitted.clear()

    async def admit_cached(self, key: Hashable, ip: str | None) -> Admission | None:
        """The admission remembered for an identical request (same credential, method, URI and
        tenant header), after spending its rate limits again; None when there is none.

        Only successful JWT admissions are remembered, each until the first of: its token's
        expiry, the user-status cache TTL, a change of policy version, or any message of the
        invalidation bus (user disabled, session or key revoked, keys rotated, policy reloaded).
        """
        entry = self._admitted.get(key)
        if entry is None:
            return None
        if entry.until <= self.clock() or entry.version != self.authorizer.version:
            self._admitted.pop(key, None)
            return None
        await self.guard.spend(entry.plan, ip)
        return entry.admission

    def _remember(
        self,
        key: Hashable,
        request: Request,
        admission: Admission,
        group: str | None,
        generation: int,
    ) -> None:
        principal = admission.principal
        if principal is None or principal.via != "jwt" or principal.expires_at is None:
            return
        if generation != self._generation:  # invalidated while this request was checked
            return
        if len(self._admitted) >= _ADMITTED_CACHE_SIZE:
            self._admitted.clear()
        until = min(principal.expires_at, self.clock() + self._ttl)
        plan = self.guard.plan(request.path, group, principal, admission.tenant)
        self._admitted[key] = _Admitted(admission, plan, until, self.authorizer.version)

    async def admit(self, request: Request, *, cache_key: Hashable | None = None) -> Admission:
        """Every check for one request; raises the ``GarrisonError`` that answers it otherwise.

        With ``cache_key`` a successful JWT admission is remembered for ``admit_cached``.
        """
        generation = self._generation
        match = self.authorizer.match_route(request.method, request.path)
        action = match.action if match is not None else f"{request.method} {request.path}"
        group = match.route.rate_limit_group if match is not None else None
        principal: Principal | None = None
        try:
            principal = await self._authenticate(request, action)
            # Limits keyed by tenant count the tenant that was checked, never the header as sent
            # (made-up X-Tenant-ID values would each get a fresh counter); a refused tenant is
            # answered after the limits are spent, so probing tenants is limited too.
            refused: ForbiddenError | None = None
            try:
                tenant = self._tenant(principal, request.tenant_header)
            except ForbiddenError as exc:
                tenant, refused = None, exc
            await self.guard.check(request.path, group, principal, tenant, request.ip)
            if refused is not None:
                raise refused
            _require_roles(match, principal)
        except AuthenticationError as exc:
            self.metrics.auth_failure(exc.code)
            raise
        except ForbiddenError as exc:
            for reason in exc.reasons[:1]:
                self.metrics.policy_deny(reason)
            await self._audit_deny(request, action, exc.reasons, principal)
            raise
        decision = self.authorizer.decide(principal, action, tenant=tenant)
        if not decision.allow:
            reasons = decision.reasons or ("denied by policy",)
            for reason in reasons[:1]:
                self.metrics.policy_deny(reason)
            await self._audit_deny(request, action, reasons, principal)
            raise ForbiddenError("denied by policy", reasons=reasons)
        if principal is not None and principal.via == "api_key":
            self._audit_use(request, action, principal, tenant)
        admission = Admission(principal, tenant, action, self._identity(principal, tenant))
        if cache_key is not None:
            self._remember(cache_key, request, admission, group, generation)
        return admission

    async def _authenticate(self, request: Request, action: str) -> Principal | None:
        if request.authorization is None:
            spec = self.authorizer.registry.actions.get(action)
            if spec is not None and not spec.requires_auth:
                return None
            raise AuthenticationError("missing bearer credentials", code="no_credentials")
        found = self.authenticator.authenticate_cached(request.authorization)
        if found is None:
            found = await self._authenticate_once(request.authorization)
        return found

    async def _authenticate_once(self, authorization: str) -> Principal:
        """The blocking path, in a worker thread, once per credential however many requests wait
        for it: when a cache entry expires under load, one database read serves them all."""
        pending = self._lookups.get(authorization)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request itself was cancelled
                # the request that ran the lookup was cancelled: run our own below
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._lookups[authorization] = future
        try:
            principal = await anyio.to_thread.run_sync(
                self.authenticator.authenticate, authorization
            )
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(principal)
            return principal
        finally:
            if self._lookups.get(authorization) is future:
                del self._lookups[authorization]

    def _tenant(self, principal: Principal | None, tenant_header: str | None) -> str | None:
        if principal is None:
            return None  # anonymous (a public action): no tenant to act in
        return resolve_tenant(
            principal, tenant_header, required=self.settings.tenant_header_required
        )

    def _identity(self, principal: Principal | None, tenant: str | None) -> RawHeaders:
        """The identity headers, built once per (identity, tenant)."""
        if principal is None:
            return []
        key = (principal.sub, principal.username, principal.roles, tenant)
        found = self._headers.get(key)
        if found is None:
            if len(self._headers) >= _HEADER_CACHE_SIZE:
                self._headers.clear()
            found = self._headers[key] = identity_headers(principal, tenant)
        return found

    async def _audit_deny(
        self,
        request: Request,
        action: str,
        reasons: tuple[str, ...],
        principal: Principal | None,
    ) -> None:
        event = _event(request, action, "deny", principal, reasons[0] if reasons else None)
        try:
            await self.services.audit.record(event)
        except Exception:  # the deny stands whether or not its record could be written
            log.exception("could not audit a deny")

    def _audit_use(
        self, request: Request, action: str, principal: Principal, tenant: str | None
    ) -> None:
        event = _event(request, action, "success", principal, None, tenant=tenant)
        if len(self._audit_tasks) >= _MAX_AUDIT_TASKS:
            log.warning("audit backlog full; API-key use record dropped for %s", request.path)
            return
        task = asyncio.get_running_loop().create_task(self._record(event))
        self._audit_tasks.add(task)
        task.add_done_callback(self._audit_tasks.discard)

    async def _record(self, event: AuditEvent) -> None:
        try:
            await self.services.audit.record(event)
        except Exception:
            log.exception("could not audit API-key use")

    async def drain(self) -> None:
        """Wait for the API-key use records still in flight (shutdown)."""
        if self._audit_tasks:
            await asyncio.gather(*self._audit_tasks, return_exceptions=True)


def _require_roles(match: RouteMatch | None, principal: Principal | None) -> None:
    """A route's ``required_roles`` (any one of them), checked besides the policy."""
    if match is None or not match.route.required_roles:
        return
    held = principal.roles if principal is not None else frozenset()
    if held.isdisjoint(match.route.required_roles):
        wanted = " or ".join(match.route.required_roles)
        raise ForbiddenError(reasons=[f"role mismatch: {match.route.prefix} requires {wanted}"])


def _event(
    request: Request,
    action: str,
    outcome: str,
    principal: Principal | None,
    reason: str | None,
    *,
    tenant: str | None = None,
) -> AuditEvent:
    via = principal.via if principal is not None else None
    actor = None
    if principal is not None:
        actor = principal.credential_id if via == "api_key" else principal.sub
    return AuditEvent(
        action="gateway.api_key_use" if outcome == "success" else "authz.deny",
        outcome="success" if outcome == "success" else "deny",
        actor=actor,
        tenant=tenant or (principal.tenant if principal else request.tenant_header),
        ip=request.ip,
        user_agent=request.user_agent,
        reason=reason,
        request_id=request.request_id,
        details={"action": action, "method": request.method, "path": request.path, "via": via},
    )
