"""``Pipeline``: authenticate, work out the tenant, decide the action, spend the limits, audit.

For an ``Attempt`` the pipeline answers an ``Admission`` or raises the ``GarrisonError`` that
answers the request (401, 403 with every reason, 429, 503). The action is either named by the
caller (Garrison's own endpoints) or the registered route the path matches (``/verify``, the
proxy; an unregistered path is denied, Z2). The decision is always ``Authorizer.decide``; the
refusal is always ``refusals.refusal_event``; so every path says yes and no the same way.

The hot path does no I/O when nothing changed: the token, the user's status and the session come
from the authenticator's caches (a worker thread is used only on a miss, once per user and
session however many requests and tokens wait for it), decisions are cached per policy version,
successful JWT admissions are remembered per (credential, method, URI, tenant header) until any
message of the invalidation bus, and the limiter spends a local lease. Denies are awaited (an acknowledged deny is
durable); every admitted API-key request is counted without holding the request, and written as one
``auth.api_key`` record per key and second (``admission.uses``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio.to_thread

from garrison.admission.attempt import Admission, Attempt, CredentialKind
from garrison.admission.refusals import RefusalLog, refusal_event
from garrison.admission.uses import KeyUseLog
from garrison.audit.event import AuditSink
from garrison.clock import Clock
from garrison.errors import AuthenticationError, ForbiddenError, GarrisonError
from garrison.identity.apikeys import PREFIX as API_KEY_PREFIX
from garrison.identity.authn import NO_CREDENTIALS, Authenticator
from garrison.identity.cookies import SAFE_METHODS, SessionCookies, check_own_site
from garrison.observability.metrics import Metrics
from garrison.policy import Authorizer, Decision, Resource
from garrison.policy.model import RequestFacts, RouteMatch
from garrison.principal import Principal
from garrison.ratelimit.guard import Plan, RateGuard
from garrison.storage.bus import InvalidationBus
from garrison.tenancy import acting_tenant

log = logging.getLogger("garrison.admission")

_ADMITTED_CACHE_SIZE = 50_000
_CLI_METHOD = "CLI"


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """The settings the pipeline reads, frozen once by the composition root."""

    tenant_header_required: bool  # REQUIRE_TENANT_HEADER (T2)
    remember_ttl: float  # the longest an admission is remembered (the user-status cache TTL)


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A remembered admission: valid until ``until``, for one policy version."""

    admission: Admission
    plan: Plan  # its rate limits, counters resolved
    until: float
    version: str


@dataclass(eq=False, repr=False, kw_only=True)
class Pipeline:
    authenticator: Authenticator
    authorizer: Authorizer
    guard: RateGuard
    audit: AuditSink
    metrics: Metrics
    cookies: SessionCookies
    bus: InvalidationBus  # while it cannot deliver other processes' messages: 1 s at most
    clock: Clock
    config: AdmissionConfig
    refusals: RefusalLog = field(init=False)
    key_uses: KeyUseLog = field(init=False)
    _admitted: dict[Hashable, _Admitted] = field(default_factory=dict, init=False)
    #: bumped by every invalidation; an admission begun before is not kept
    _generation: int = field(default=0, init=False)
    #: lookup key -> (the credential being looked up, its answer to come)
    _lookups: dict[Hashable, tuple[str, asyncio.Future[Principal]]] = field(
        default_factory=dict, init=False
    )

    def __post_init__(self) -> None:
        self.refusals = RefusalLog(self.audit, self.clock)
        self.key_uses = KeyUseLog(self.audit, self.clock)
        self.bus.subscribe(self._invalidate)

    # -- the entry points ------------------------------------------------------------------------
    async def admit(
        self,
        attempt: Attempt,
        *,
        action: str | None = None,
        resource: Resource | None = None,
        params: Mapping[str, Any] | None = None,
        cache_key: Hashable | None = None,
        tenant_optional: bool = False,
        matched: RouteMatch | None = None,
    ) -> Admission:
        """Every check for one request; raises the ``GarrisonError`` that answers it otherwise.

        ``action``: the registered action of one of Garrison's own endpoints (their per-IP limits
        are the edge's); without it, the action of the route the path matches, whose limits are
        spent here. With ``cache_key`` a successful JWT admission is remembered for
        ``admit_cached``. ``tenant_optional``: an endpoint that never needs ``X-Tenant-ID``
        (logout: T2). ``matched``: the registry's match the caller already made for the path (the
        proxy forwards to that route's upstream, so the action decided must be that route's).
        """
        generation = self._generation
        route = group = None
        plan: Plan = ()  # the route's limits, spent below
        routed = action is None
        if action is None:
            match = matched or self.authorizer.match_route(attempt.method, attempt.path)
            action = match.action if match is not None else f"{attempt.method} {attempt.path}"
            route = match.route if match is not None else None
            group = route.rate_limit_group if route is not None else None
        principal, kind = await self._authenticate(attempt, action)
        tenant, missing = acting_tenant(
            principal,
            attempt.tenant_header,
            required=self.config.tenant_header_required and not tenant_optional,
        )
        decision = self.authorizer.decide(
            principal,
            action,
            resource=resource,
            params=params,
            tenant=tenant,
            facts=RequestFacts(tenant_header_missing=missing, route=route),
        )
        if routed:
            # limits keyed by tenant count the tenant that was checked, never a refused header
            # (made-up X-Tenant-ID values would each get a fresh counter); a refusal is answered
            # after the limits are spent, so probing is limited too
            counted = tenant if decision.allow else (principal.tenant if principal else None)
            plan = self.guard.plan(attempt.path, group, principal, counted)
            await self.guard.spend(plan, attempt.ip)
        if not decision.allow:
            await self._deny(attempt, action, decision.reasons, principal, kind, tenant)
        admission = Admission(
            principal, tenant, action, kind, self.authorizer.granted_roles(principal), attempt
        )
        if principal is not None and principal.via == "api_key":
            self.key_uses.count(admission)  # every use, aggregated per key and second (L2)
        if cache_key is not None and routed:
            self._remember(cache_key, admission, plan, generation)
        return admission

    async def authorize(
        self,
        admission: Admission,
        action: str,
        *,
        resource: Resource | None = None,
        params: Mapping[str, Any] | None = None,
        tenant: str | None = None,
    ) -> Decision:
        """Decide ``action`` for an admitted caller on a given resource (a use case's own check:
        the user, key or record it acts on); a deny is audited and raised like any other.
        ``tenant``: the tenant a platform-scoped caller names for this action (the policy decides
        whether it may act there, as for ``X-Tenant-ID``)."""
        acting = admission.tenant if admission.tenant is not None else tenant
        decision = self.authorizer.decide(
            admission.principal, action, resource=resource, params=params, tenant=acting
        )
        if not decision.allow:
            await self._deny(
                admission.attempt,
                action,
                decision.reasons,
                admission.principal,
                admission.credential,
                acting,
            )
        return decision

    def operator(self, name: str, command: str) -> Admission:
        """The local operator of the CLI: a platform admin (whoever can run the CLI can read the
        database and the keys), whose actions the policy still decides and the audit names."""
        principal = Principal(
            sub=name, username=name, roles=frozenset({"admin"}), tenant=None, via="cli"
        )
        attempt = Attempt(
            method=_CLI_METHOD, path=command, authorization=None, tenant_header=None, ip=None
        )
        return Admission(principal, None, "cli", "cli", principal.roles, attempt)

    async def admit_cached(self, key: Hashable, ip: str | None) -> Admission | None:
        """The admission remembered for an identical request, after spending its rate limits
        again; None when there is none.

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

    async def flush(self) -> None:
        """Write the aggregated records (anonymous refusals, API-key uses) of seconds that are
        over; the service calls it every second."""
        await self.refusals.flush()
        await self.key_uses.flush()

    async def drain(self) -> None:
        """Write every pending aggregate, the current second's too (on shutdown)."""
        await self.key_uses.flush(everything=True)
        await self.refusals.flush(everything=True)

    # -- authentication --------------------------------------------------------------------------
    async def _authenticate(
        self, attempt: Attempt, action: str
    ) -> tuple[Principal | None, CredentialKind]:
        authorization, kind = attempt.authorization, _kind_of(attempt.authorization)
        if authorization is None and attempt.session:
            authorization, kind = f"Bearer {attempt.session}", "session"
        try:
            if authorization is None:
                spec = self.authorizer.registry.actions.get(action)
                if spec is not None and not spec.requires_auth:
                    return None, "none"
                raise AuthenticationError(NO_CREDENTIALS, code="no_credentials")
            if kind == "session" and not _plausible_session(attempt.session or ""):
                raise AuthenticationError("the session cookie holds no session", code="bad_cookie")
            found = self.authenticator.authenticate_cached(authorization)
            if found is None:
                found = await self._authenticate_once(authorization)
            if kind == "session" and (found.via != "jwt" or not found.session_id):
                raise AuthenticationError("the session cookie holds no session", code="bad_cookie")
        except AuthenticationError as exc:
            self.metrics.auth_failure(exc.code)
            event = refusal_event(
                attempt,
                action,
                [exc.detail],
                None,
                kind,
                event="auth.refused",
                outcome="failure",
                code=exc.code,
                subject=exc.subject,
            )
            await self.refusals.record(event)
            raise
        if kind != "session":
            kind = "api_key" if found.via == "api_key" else found.via
        else:
            await self._check_browser(attempt, found, action)
        return found, kind

    async def _check_browser(self, attempt: Attempt, who: Principal, action: str) -> None:
        """A cookie-authenticated state change comes from our own site and carries the CSRF
        token minted for this session (A9), at ``/verify`` and through the proxy as at the API."""
        if attempt.method in SAFE_METHODS:
            return
        facts = attempt.browser
        try:
            if facts is None:
                raise ForbiddenError(
                    "csrf token missing or invalid", reasons=["csrf token missing or invalid"]
                )
            headers = {
                k: v
                for k, v in (("origin", facts.origin), ("sec-fetch-site", facts.sec_fetch_site))
                if v is not None
            }
            check_own_site(headers, facts.own_origins)
            presented = facts.csrf_header if facts.csrf_header is not None else facts.csrf_form
            self.cookies.check_csrf(who.session_id, presented, facts.csrf_cookie)
        except ForbiddenError as exc:
            self.metrics.policy_deny(exc.reasons[0] if exc.reasons else exc.detail)
            await self.refusals.record(
                refusal_event(attempt, action, exc.reasons, who, "session", event="auth.csrf")
            )
            raise

    async def _authenticate_once(self, authorization: str) -> Principal:
        """The blocking path, in a worker thread, once per lookup however many requests wait for
        it: when a cache entry expires under load, one database read serves every request for the
        same user and session (``Authenticator.lookup_key``), whichever of its tokens each holds.

        A request waiting on another credential's read then checks its own against the caches
        that read filled, and reads for itself only if they still miss."""
        key = self.authenticator.lookup_key(authorization)
        pending = self._lookups.get(key)
        if pending is not None:
            theirs, future = pending
            try:
                principal = await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this request itself was cancelled
                # the request that ran the lookup was cancelled: run our own below
            except GarrisonError:
                if theirs == authorization:
                    raise
            else:
                if theirs == authorization:
                    return principal
            found = self.authenticator.authenticate_cached(authorization)
            if found is not None:
                return found
        future = asyncio.get_running_loop().create_future()
        self._lookups[key] = (authorization, future)
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
            entry = self._lookups.get(key)
            if entry is not None and entry[1] is future:
                del self._lookups[key]

    # -- refusals and records --------------------------------------------------------------------
    async def _deny(
        self,
        attempt: Attempt | None,
        action: str,
        reasons: tuple[str, ...],
        principal: Principal | None,
        kind: CredentialKind,
        tenant: str | None,
    ) -> NoReturn:
        reasons = reasons or ("denied by policy",)
        self.metrics.policy_deny(reasons[0])
        event = refusal_event(attempt, action, reasons, principal, kind, tenant=tenant)
        await self.refusals.record(event)
        raise ForbiddenError(f"{action[:120]} denied", reasons=reasons)

    # -- remembered admissions -------------------------------------------------------------------
    def _invalidate(self, _kind: str, _ident: str) -> None:
        """Any user, session, key, policy or reset message: forget every remembered admission."""
        self._generation += 1
        self._admitted.clear()

    def _remember(self, key: Hashable, admission: Admission, plan: Plan, generation: int) -> None:
        """Keep a JWT admission for ``admit_cached``, with the limits it spent (``plan``: the
        tenant it counted is the admitted one, as it would be again)."""
        principal, attempt = admission.principal, admission.attempt
        if principal is None or principal.via != "jwt" or principal.expires_at is None:
            return
        if admission.credential == "session" or attempt is None:
            return  # a cookie request's CSRF facts differ per request: never remembered
        if generation != self._generation:  # invalidated while this request was checked
            return
        if len(self._admitted) >= _ADMITTED_CACHE_SIZE:
            self._admitted.clear()
        ttl = self.bus.cache_ttl(self.config.remember_ttl)
        until = min(principal.expires_at, self.clock() + ttl)
        self._admitted[key] = _Admitted(admission, plan, until, self.authorizer.version)


def _kind_of(authorization: str | None) -> CredentialKind:
    if authorization is None:
        return "none"
    credential = authorization.strip().partition(" ")[2].strip()
    return "api_key" if credential.startswith(API_KEY_PREFIX) else "jwt"


def _plausible_session(value: str) -> bool:
    """A session cookie holds a Garrison access token: never an API key, never spaces."""
    return (
        bool(value)
        and value.isascii()
        and " " not in value
        and not value.startswith(API_KEY_PREFIX)
    )
