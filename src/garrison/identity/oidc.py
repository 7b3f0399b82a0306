"""OIDC login (A11): the authorization-code flow with PKCE (S256), ``state`` and ``nonce``.

``begin`` makes three secrets, one use each: ``state`` (names the stored login request),
``nonce`` (must come back inside the id_token), and the PKCE ``code_verifier`` (only its S256
challenge leaves Garrison). It also makes a browser binding: a random value the route sets as an
``HttpOnly`` cookie while only its SHA-256 is stored, so a callback URL (code and state) replayed
from another browser, or planted in a victim's (login CSRF), is refused. The stored request lives
``GARRISON_OIDC_STATE_TTL`` seconds (Redis ``GETDEL`` when ``REDIS_URL`` is set, so every replica
sees it and it is spent atomically; process memory otherwise, for a single node).

``complete`` spends the state, exchanges the code (with the verifier and the client's secret), and
accepts the id_token only if the one JWS decoder (``tokens.jws``, ``keyset_policy``: asymmetric
algorithms only, the checks Garrison's own tokens get) accepts it under the provider's JWKS with
``iss`` = the issuer, ``aud`` = client_id, ``exp``/``nbf``/``iat`` and ``sub``, and then ``azp``
(when present or when ``aud`` names several parties) and ``nonce`` match. The user is then provisioned
just in time (``identity.provisioning``; the first one becomes admin only if no admin exists) and
gets an ordinary Garrison session (a refresh family and an access token).

A login may name where the browser goes afterwards (``return_to``, checked by the caller: the
gateway admits only a console path); it is stored with the state and comes back only from there,
so nothing in the callback's query can choose it.

Scopes are minimal by default (``openid email``). Every attempt is rate-limited per IP and audited
as ``auth.oidc``; the provider's access token is never kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import httpx
import redis

from garrison.audit.event import AuditSink, Outcome
from garrison.clock import Clock, system_clock
from garrison.config.defs import OidcProviderDef
from garrison.errors import (
    AuthenticationError,
    ConfigError,
    GarrisonError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
)
from garrison.identity.digest import token_hash
from garrison.identity.jwks import FETCH_TIMEOUT, RemoteJwks, fetch_json
from garrison.identity.provisioning import Provisioner
from garrison.identity.service import AuthService, Client, TokenPair
from garrison.identity.users import User
from garrison.ratelimit.limiter import Limiter
from garrison.tokens.jws import JwsDecoder, TokenError, keyset_policy

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_MAX_PARAM = 4096


class OidcError(AuthenticationError):
    code = "oidc_failed"
    title = "OIDC login failed"


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of a code verifier (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- providers --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OidcProvider:
    name: str
    issuer: str
    client_id: str
    client_secret: str | None
    scopes: tuple[str, ...]
    redirect_uri: str
    post_login_url: str
    default_roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Endpoints:
    authorization: str
    token: str
    jwks: RemoteJwks
    decoder: JwsDecoder  # keyset_policy(issuer, client_id) over ``jwks``
    auth_methods: tuple[str, ...]
    fetched_at: float


def _trusted_url(url: object) -> bool:
    """https, or plain http to a loopback address (a provider on the same host, or tests)."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


def build_providers(config: OidcConfig) -> dict[str, OidcProvider]:
    """Every ``[oidc.<name>]`` provider; ``ConfigError`` naming every problem at once."""
    problems: list[str] = []
    found: dict[str, OidcProvider] = {}
    for name, d in config.providers.items():
        where = f"oidc.{name}"
        if not _NAME.match(name):
            problems.append(f"{where}: a provider name is 1-32 of a-z, 0-9, '_' or '-'")
        if not _trusted_url(d.issuer):
            problems.append(f"{where}.issuer: must be an https URL")
        if not d.client_id:
            problems.append(f"{where}.client_id: required")
        if "openid" not in d.scopes:
            problems.append(f"{where}.scopes: must include 'openid'")
        secret = config.client_secrets.get(d.client_secret_env) if d.client_secret_env else None
        if d.client_secret_env and not secret:
            problems.append(f"{d.client_secret_env}: missing (client secret of {where})")
        base = config.issuer.rstrip("/")
        found[name] = OidcProvider(
            name=name,
            issuer=d.issuer,
            client_id=d.client_id,
            client_secret=secret,
            scopes=d.scopes,
            redirect_uri=d.redirect_uri or f"{base}/auth/oidc/{name}/callback",
            post_login_url=d.post_login_url,
            default_roles=d.default_roles,
        )
    if problems:
        raise ConfigError(problems)
    return found


# -- server-side state --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LoginRequest:
    provider: str
    nonce: str
    code_verifier: str
    binding: str  # SHA-256 (hex) of the browser-binding cookie
    #: where the browser goes after the callback instead of the provider's ``post_login_url``;
    #: chosen when the login starts (the gateway admits only a console path) and read back from
    #: here only, never from the callback's query
    return_to: str | None = None


class StateStore(Protocol):
    def put(self, state: str, request: LoginRequest, ttl: int) -> None: ...

    def take(self, state: str) -> LoginRequest | None:
        """The request stored under ``state``, removed in the same step (single use)."""


@dataclass(eq=False, repr=False)
class MemoryStateStore:
    """One node only: a dict with expiry, bounded so a flood of logins cannot grow it forever."""

    clock: Clock = system_clock
    max_size: int = 100_000
    _data: dict[str, tuple[float, LoginRequest]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def put(self, state: str, request: LoginRequest, ttl: int) -> None:
        now = self.clock()
        with self._lock:
            if len(self._data) >= self.max_size:
                self._data = {k: v for k, v in self._data.items() if v[0] > now}
                if len(self._data) >= self.max_size:
                    raise UnavailableError("too many logins in progress")
            self._data[token_hash(state)] = (now + ttl, request)

    def take(self, state: str) -> LoginRequest | None:
        with self._lock:
            entry = self._data.pop(token_hash(state), None)
        return entry[1] if entry is not None and entry[0] > self.clock() else None


class RedisStateStore:
    """Shared by every replica; ``GETDEL`` spends a state atomically (two callbacks racing with
    the same state: exactly one gets it)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = f"{prefix}:oidc:state:"

    def put(self, state: str, request: LoginRequest, ttl: int) -> None:
        try:
            self.client.set(self.prefix + token_hash(state), json.dumps(asdict(request)), ex=ttl)
        except redis.RedisError as exc:
            raise UnavailableError(f"login state store unavailable: {type(exc).__name__}") from None

    def take(self, state: str) -> LoginRequest | None:
        try:
            raw = self.client.getdel(self.prefix + token_hash(state))
        except redis.RedisError as exc:
            raise UnavailableError(f"login state store unavailable: {type(exc).__name__}") from None
        if raw is None:
            return None
        return LoginRequest(**json.loads(raw))


# -- the flow -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Started:
    url: str  # where to send the browser
    binding: str  # the browser-binding cookie's value


@dataclass(frozen=True, slots=True)
class Completed:
    user: User
    pair: TokenPair
    created: bool
    post_login_url: str


@dataclass(frozen=True, slots=True)
class Limits:
    state_ttl: int = 600
    max_per_ip: int = 30
    window: int = 60
    jwks_ttl: int = 3600
    jwks_refetch: int = 30
    clock_skew: int = 30


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """What OIDC login reads from the settings, built once by the composition root (issue 8):
    the ``[oidc.<name>]`` providers, their client secrets by the variable name each
    ``client_secret_env`` gives (resolved from the environment, or its ``_FILE``), Garrison's own
    issuer (the default redirect URIs), the Redis key prefix of the login state, and the limits."""

    issuer: str
    providers: Mapping[str, OidcProviderDef] = field(default_factory=dict)
    client_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    redis_prefix: str = "garrison"
    limits: Limits = field(default_factory=Limits)


@dataclass(eq=False, repr=False)
class OidcLogin:
    providers: Mapping[str, OidcProvider]
    store: StateStore
    http: httpx.Client
    provisioner: Provisioner
    auth: AuthService
    limiter: Limiter
    audit: AuditSink
    limits: Limits = field(default_factory=Limits)
    clock: Clock = system_clock
    _endpoints: dict[str, _Endpoints] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.providers = dict(self.providers)

    def close(self) -> None:
        self.http.close()

    # -- step 1: send the browser to the provider ------------------------------------------------
    def begin(self, name: str, client: Client, return_to: str | None = None) -> Started:
        """Blocking (discovery on first use): run in a worker thread. ``return_to`` (already
        checked by the caller) is kept with the state and becomes the completed login's
        ``post_login_url``."""
        provider = self._provider(name)
        self._throttle(name, "login", client)
        try:
            endpoints = self._discover(provider)
        except GarrisonError as exc:
            self._record("error", client, name, "login", reason=exc.detail)
            raise
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, binding = secrets.token_urlsafe(64), secrets.token_urlsafe(32)
        self.store.put(
            state,
            LoginRequest(name, nonce, verifier, token_hash(binding), return_to),
            self.limits.state_ttl,
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": provider.client_id,
                "redirect_uri": provider.redirect_uri,
                "scope": " ".join(provider.scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        joiner = "&" if "?" in endpoints.authorization else "?"
        self._record("success", client, name, "login")
        return Started(f"{endpoints.authorization}{joiner}{query}", binding)

    # -- step 2: the provider sends the browser back --------------------------------------------
    def complete(
        self, name: str, params: Mapping[str, str], binding: str | None, client: Client
    ) -> Completed:
        """Blocking (token exchange, database): run in a worker thread."""
        provider = self._provider(name)
        self._throttle(name, "callback", client)
        try:
            claims, request = self._verified_claims(provider, params, binding)
            user, created = self.provisioner.ensure(
                name,
                claims["sub"],
                email=claims.get("email") if claims.get("email_verified") is True else None,
                roles=provider.default_roles,
                bootstrap_admin=True,
            )
            if not user.active:
                raise OidcError("account disabled", code="inactive_user")
        except GarrisonError as exc:
            outcome: Outcome = "failure" if isinstance(exc, AuthenticationError) else "error"
            self._record(outcome, client, name, "callback", reason=exc.detail)
            raise
        pair = self._start_session(user)
        self._record(
            "success",
            client,
            name,
            "callback",
            actor=user.id,
            tenant=user.tenant,
            extra={"created": created, "roles": list(user.roles), "sid": pair.claims["sid"]},
        )
        return Completed(user, pair, created, request.return_to or provider.post_login_url)

    def _verified_claims(
        self, provider: OidcProvider, params: Mapping[str, str], binding: str | None
    ) -> tuple[dict[str, Any], LoginRequest]:
        if any(len(v) > _MAX_PARAM for v in params.values()):
            raise OidcError("callback parameter too long", code="oidc_bad_request")
        state = params.get("state")
        if not state:
            raise OidcError("callback without state", code="oidc_state")
        request = self.store.take(state)  # spent whatever happens next
        if request is None:
            raise OidcError("unknown, expired or already used state", code="oidc_state")
        if request.provider != provider.name:
            raise OidcError("state belongs to another provider", code="oidc_state")
        if binding is None or not hmac.compare_digest(token_hash(binding), request.binding):
            raise OidcError("login was started in another browser", code="oidc_state")
        if "error" in params:
            raise OidcError(f"provider refused: {params['error'][:64]}", code="oidc_denied")
        if "iss" in params and params["iss"] != provider.issuer:  # RFC 9207 mix-up defence
            raise OidcError("response from another issuer", code="oidc_issuer")
        code = params.get("code")
        if not code:
            raise OidcError("callback without code", code="oidc_bad_request")
        endpoints = self._discover(provider)
        id_token = self._exchange(provider, endpoints, code, request.code_verifier)
        return self._check_id_token(provider, endpoints, id_token, request.nonce), request

    def _exchange(
        self, provider: OidcProvider, endpoints: _Endpoints, code: str, verifier: str
    ) -> str:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider.redirect_uri,
            "code_verifier": verifier,
        }
        auth: httpx.Auth = httpx.Auth()  # the base class sends no credentials
        if provider.client_secret is None:
            form["client_id"] = provider.client_id
        elif "client_secret_basic" in endpoints.auth_methods or not endpoints.auth_methods:
            auth = httpx.BasicAuth(_form(provider.client_id), _form(provider.client_secret))
        else:
            form.update(client_id=provider.client_id, client_secret=provider.client_secret)
        try:
            response = self.http.post(
                endpoints.token,
                data=form,
                auth=auth,
                headers={"accept": "application/json"},
                timeout=FETCH_TIMEOUT,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            raise UnavailableError(f"token endpoint unreachable: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise UnavailableError(f"token endpoint answered {response.status_code}")
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        id_token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(id_token, str):
            raise OidcError("the provider did not issue an id_token", code="oidc_token")
        return id_token

    def verify_id_token(self, name: str, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of a valid id_token of provider ``name`` for ``nonce``; ``OidcError``
        otherwise. Blocking (discovery and JWKS on first use)."""
        provider = self._provider(name)
        return self._check_id_token(provider, self._discover(provider), id_token, nonce)

    def _check_id_token(
        self, provider: OidcProvider, endpoints: _Endpoints, id_token: str, nonce: str
    ) -> dict[str, Any]:
        try:
            claims, _ = endpoints.decoder.decode(id_token, self.clock())
        except TokenError as exc:
            raise OidcError(f"id_token refused: {exc.detail}", code="oidc_id_token") from None
        aud, azp = claims.get("aud"), claims.get("azp")
        several = isinstance(aud, list) and len(aud) > 1
        if (azp is not None or several) and azp != provider.client_id:
            raise OidcError("id_token refused: wrong authorized party", code="oidc_id_token")
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise OidcError("id_token refused: nonce mismatch", code="oidc_id_token")
        return claims

    # -- helpers -------------------------------------------------------------------------------
    def _start_session(self, user: User) -> TokenPair:
        """A Garrison session exactly like a password login's: a refresh family + access token."""
        # amr "oidc": the IdP's own factors are not taken on trust (assumed weakest, ASVS 6.8.4)
        return self.auth.start_session(user, amr=("oidc",))

    def _provider(self, name: str) -> OidcProvider:
        provider = self.providers.get(name)
        if provider is None:
            raise NotFoundError("no such OIDC provider")
        return provider

    def _discover(self, provider: OidcProvider) -> _Endpoints:
        """The provider's endpoints from its discovery document, cached ``jwks_ttl`` seconds."""
        cached = self._endpoints.get(provider.name)
        now = self.clock()
        if cached is not None and now < cached.fetched_at + self.limits.jwks_ttl:
            return cached
        with self._lock:
            url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = fetch_json(self.http, url)
            if not isinstance(doc, dict) or doc.get("issuer") != provider.issuer:
                raise UnavailableError("discovery document names another issuer")
            urls = [doc.get(k) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")]
            if not all(_trusted_url(u) for u in urls):
                raise UnavailableError("discovery document lacks https endpoints")
            methods = doc.get("token_endpoint_auth_methods_supported") or ()
            if cached is not None and cached.jwks.url == urls[2]:
                jwks, decoder = cached.jwks, cached.decoder
            else:
                jwks = RemoteJwks(
                    str(urls[2]),
                    self.http,
                    ttl=self.limits.jwks_ttl,
                    min_refetch=self.limits.jwks_refetch,
                    clock=self.clock,
                )
                policy = keyset_policy(provider.issuer, provider.client_id, self.limits.clock_skew)
                decoder = JwsDecoder(policy, jwks.key)
            endpoints = _Endpoints(
                authorization=str(urls[0]),
                token=str(urls[1]),
                jwks=jwks,
                decoder=decoder,
                auth_methods=tuple(m for m in methods if isinstance(m, str)),
                fetched_at=now,
            )
            self._endpoints[provider.name] = endpoints
            return endpoints

    def _throttle(self, name: str, step: str, client: Client) -> None:
        decision = self.limiter.hit(
            f"oidc:ip:{client.ip or '-'}", self.limits.max_per_ip, self.limits.window
        )
        if not decision.allowed:
            self._record("deny", client, name, step, reason="throttled")
            raise RateLimitedError(decision.retry_after, "too many login attempts")

    def _record(
        self,
        outcome: Outcome,
        client: Client,
        provider: str,
        step: str,
        *,
        actor: str | None = None,
        tenant: str | None = None,
        reason: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.audit.record_sync(
            client.event(
                "auth.oidc",
                outcome,
                actor=actor,
                tenant=tenant,
                reason=reason,
                details={"provider": provider, "step": step, **(extra or {})},
            )
        )


def _form(value: str) -> str:
    """client_secret_basic: id and secret are form-urlencoded before Basic (RFC 6749 2.3.1)."""
    return quote(value, safe="")


def build_oidc_login(
    config: OidcConfig,
    http: httpx.Client,
    redis_client: redis.Redis | None,
    provisioner: Provisioner,
    auth: AuthService,
    limiter: Limiter,
    audit: AuditSink,
    *,
    clock: Clock = system_clock,
) -> OidcLogin:
    """The OIDC login service; state in Redis when ``REDIS_URL`` is set, else in memory."""
    store: StateStore = (
        RedisStateStore(redis_client, config.redis_prefix)
        if redis_client is not None
        else MemoryStateStore(clock)
    )
    return OidcLogin(
        build_providers(config),
        store,
        http,
        provisioner,
        auth,
        limiter,
        audit,
        config.limits,
        clock,
    )
