"""Tokens issued by an external IdP (A10): Supabase GoTrue (HS256 shared secret) or any IdP with a
JWKS URL, checked as strictly as Garrison's own tokens and mapped onto local roles.

Routing: ``identity.authn`` tries Garrison's codec first (the hot path is untouched); only a token it
refuses is offered here, and only when its (unverified) ``iss`` names a configured IdP, its ``iss``
is not Garrison's own, and its ``kid`` names no Garrison key. Each IdP then checks it with the one
decoder (``tokens.jws``) under its own policy: ``shared_secret_policy`` (HS256 alone) with its shared
secret, or ``keyset_policy`` (asymmetric algorithms) with the keys of its JWKS, so a token claiming
to be Garrison's can never be checked with HMAC, and a JWKS IdP can never be fed an HMAC token keyed
with its public key. The claim checks (exp, nbf, iat, iss, aud, sub, leeway) are the decoder's.

Roles: the claim ``role_claim`` (a string or a list; a dotted path reaches nested claims) is mapped
through ``role_map``; any value in ``admin_roles`` grants ``admin``; ``default_roles`` are always
granted. Roles come from the token on every request (the IdP stays authoritative: a role removed
there is gone here at the token's next renewal). Each identity gets a local user row (see
``identity.provisioning``) so ``garrison users disable`` and ``revoke-sessions`` stop it too.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from garrison.clock import Clock, system_clock
from garrison.config.defs import ExternalIdpDef
from garrison.config.strength import secret_problem
from garrison.errors import ConfigError, ValidationError
from garrison.identity.jwks import RemoteJwks
from garrison.identity.provisioning import Provisioner, usable_email
from garrison.identity.users import TENANT_RE
from garrison.keys.jwk import hs256_key
from garrison.principal import Principal
from garrison.text import control_character
from garrison.tokens.jws import (
    JwsDecoder,
    KeyLookup,
    TokenError,
    keyset_policy,
    shared_secret_policy,
    unverified,
)

SUPABASE = "supabase"
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class ExternalIdp:
    name: str
    decoder: JwsDecoder  # its policy names the issuer, the audience and the algorithms
    role_claim: str = "role"
    admin_roles: frozenset[str] = frozenset()
    role_map: Mapping[str, str] = field(default_factory=dict)
    default_roles: tuple[str, ...] = ("user",)
    tenant_claim: str = ""

    @property
    def issuer(self) -> str:
        return self.decoder.policy.issuer

    def local_roles(self, claims: Mapping[str, Any]) -> frozenset[str]:
        granted = set(self.default_roles)
        for role in _claim_values(claims, self.role_claim):
            if role in self.admin_roles:
                granted.add("admin")
            if role in self.role_map:
                granted.add(self.role_map[role])
        return frozenset(granted)

    def tenant(self, claims: Mapping[str, Any]) -> str | None:
        if not self.tenant_claim:
            return None
        values = _claim_values(claims, self.tenant_claim)
        if len(values) != 1 or not TENANT_RE.fullmatch(values[0]):
            raise TokenError("token lacks a valid tenant claim")
        return values[0]


def _claim_values(claims: Mapping[str, Any], path: str) -> list[str]:
    """The strings at a dotted claim path; a control character in one refuses the token (E7:
    the decoder checks top-level claims, this the nested ones roles and tenants come from)."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list):
        values = [v for v in value if isinstance(v, str)]
    else:
        return []
    for text in values:
        bad = control_character(text)
        if bad is not None:
            raise TokenError(f"token claim {path[:64]!r}: control character {bad}")
    return values


@dataclass(frozen=True, slots=True)
class _Verified:
    claims: dict[str, Any]
    idp: ExternalIdp


class ExternalTokens:
    def __init__(
        self,
        idps: list[ExternalIdp],
        provisioner: Provisioner,
        *,
        own_issuer: str,
        own_kids: Callable[[], Container[str]],
        clock: Clock = system_clock,
    ) -> None:
        self.by_issuer = {idp.issuer: idp for idp in idps if idp.issuer != own_issuer}
        self.provisioner = provisioner
        self.own_kids = own_kids
        self.clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        self._user_ids: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def route(self, token: str) -> ExternalIdp | None:
        """The IdP that should check ``token``, judged from unverified fields; None: not ours."""
        header, claims = unverified(token)
        iss = claims.get("iss") if claims else None
        idp = self.by_issuer.get(iss) if isinstance(iss, str) else None
        if idp is None:
            return None
        kid = header.get("kid") if header else None  # malformed: the IdP's checks refuse it
        return None if isinstance(kid, str) and kid in self.own_kids() else idp

    def authenticate(self, token: str, idp: ExternalIdp) -> tuple[Principal, float]:
        """(principal, issued-at) for a token of ``idp``; the caller checks the user's status."""
        claims = self.verify(token, idp)
        user_id, username = self._local_user(idp, claims)
        principal = Principal(
            sub=user_id,
            username=username,  # the local name: a profile name chosen at the IdP could mimic any
            email=usable_email(claims.get("email")),
            roles=idp.local_roles(claims),
            tenant=idp.tenant(claims),
            via="external",
            credential_id=claims.get("jti") if isinstance(claims.get("jti"), str) else None,
            expires_at=float(claims["exp"]),
            extra={"idp": idp.name, "external_sub": claims["sub"]},
            amr=external_amr(claims.get("amr")),
        )
        return principal, float(claims["iat"])  # required by the decoder

    def forget(self, principal: Principal) -> bool:
        """Drop the cached local id behind ``principal`` (its row was erased, V4); True if one
        was cached. The next sight provisions the identity afresh, as a replica without the
        cache entry would."""
        subject = f"{principal.extra.get('idp')}:{principal.extra.get('external_sub')}"
        with self._lock:
            return self._user_ids.pop(subject, None) is not None

    def verify(self, token: str, idp: ExternalIdp) -> dict[str, Any]:
        """The claims of a valid token of ``idp``; ``TokenError`` (401) for anything else."""
        now = self.clock()
        cached = self._verified.get(token)
        if cached is not None and cached.idp is idp:
            if cached.claims["exp"] > now - idp.decoder.policy.leeway:
                return cached.claims
            self._verified.pop(token, None)
        claims, _ = idp.decoder.decode(token, now)
        with self._lock:
            self._verified[token] = _Verified(claims, idp)
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return claims

    def _local_user(self, idp: ExternalIdp, claims: Mapping[str, Any]) -> tuple[str, str]:
        """(id, username) of this identity's local user, created on first sight (JIT)."""
        subject = f"{idp.name}:{claims['sub']}"
        local = self._user_ids.get(subject)
        if local is None:
            try:
                user, _ = self.provisioner.ensure(
                    idp.name,
                    claims["sub"],
                    email=usable_email(claims.get("email")),
                    roles=sorted(idp.local_roles(claims)),
                    tenant=idp.tenant(claims),
                )
            except ValidationError as exc:  # a sub no user row can hold: the token is refused
                raise TokenError(f"token claim 'sub': {exc.detail}") from None
            local = (user.id, user.username)
            with self._lock:
                if len(self._user_ids) >= _CACHE_SIZE:
                    self._user_ids.clear()
                self._user_ids[subject] = local
        return local


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExternalIdpConfig:
    """What external-token checking reads from the settings, built once by the composition root
    (issue 8): the ``[external_idps]`` (with the ``SUPABASE_JWT_*`` shortcut as ``supabase``), their
    HS256 secrets by the variable name each ``hs256_secret_env`` gives (resolved from the
    environment, or its ``_FILE``), Garrison's own issuer (never routed here) and the JWKS and
    clock settings."""

    own_issuer: str
    idps: Mapping[str, ExternalIdpDef] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    jwks_ttl: int = 3600
    jwks_refetch: int = 30
    clock_skew: int = 30
    #: a weak HS256 secret is refused in production (C2); an empty one always
    production: bool = False


def build_idps(
    config: ExternalIdpConfig, http: httpx.Client, *, clock: Clock = system_clock
) -> list[ExternalIdp]:
    """Every configured IdP; ``ConfigError`` naming every unusable one at once."""
    problems: list[str] = []
    idps = [_build(name, d, config, http, clock, problems) for name, d in config.idps.items()]
    if problems:
        raise ConfigError(problems)
    return [idp for idp in idps if idp is not None]


def _build(
    name: str,
    d: ExternalIdpDef,
    config: ExternalIdpConfig,
    http: httpx.Client,
    clock: Clock,
    problems: list[str],
) -> ExternalIdp | None:
    where = f"external_idps.{name}"
    if name == SUPABASE and not d.issuer:
        problems.append("SUPABASE_JWT_ISSUER: set it (or SUPABASE_URL) to the GoTrue `iss`")
    elif not d.issuer:
        problems.append(f"{where}.issuer: required (tokens are routed by their `iss`)")
    if not d.audience:
        problems.append(f"{where}.audience: required")
    if bool(d.hs256_secret_env) == bool(d.jwks_url):
        problems.append(f"{where}: set exactly one of hs256_secret_env and jwks_url")
        return None
    lookup: KeyLookup
    if d.jwks_url:
        jwks = RemoteJwks(
            d.jwks_url,
            http,
            ttl=config.jwks_ttl,
            min_refetch=config.jwks_refetch,
            clock=clock,
        )
        lookup, policy = jwks.key, keyset_policy
    else:
        secret = config.secrets.get(d.hs256_secret_env)
        problem = secret_problem(d.hs256_secret_env, secret)
        if not secret or (problem and config.production):  # an empty key signs for anyone
            problems.append(problem or f"{d.hs256_secret_env}: missing")
            return None
        key = hs256_key(secret.encode())  # one key: whatever kid a token names, this one checks
        lookup, policy = (lambda _kid, _alg: key), shared_secret_policy
    if not d.issuer or not d.audience:
        return None  # reported above
    return ExternalIdp(
        name=name,
        decoder=JwsDecoder(policy(d.issuer, d.audience, config.clock_skew), lookup),
        role_claim=d.role_claim,
        admin_roles=frozenset(d.admin_roles),
        role_map=dict(d.role_map),
        default_roles=d.default_roles,
        tenant_claim=d.tenant_claim,
    )


def build_external_tokens(
    config: ExternalIdpConfig,
    http: httpx.Client,
    provisioner: Provisioner,
    own_kids: Callable[[], Container[str]],
    *,
    clock: Clock = system_clock,
) -> ExternalTokens | None:
    """The external-token verifier for ``identity.authn``; None when no IdP is configured."""
    idps = build_idps(config, http, clock=clock)
    if not idps:
        return None
    return ExternalTokens(
        idps,
        provisioner,
        own_issuer=config.own_issuer,
        own_kids=own_kids,
        clock=clock,
    )


#: GoTrue's ``amr`` entries are objects ``{"method": ..., "timestamp": ...}``; its methods that name
#: an RFC 8176 value. Any other object method is kept as ``ext:<method>`` (GoTrue's ``otp`` is an
#: emailed or texted login code, a first factor, which must not read as RFC 8176 ``otp``).
_GOTRUE_METHODS = {"password": "pwd", "totp": "otp", "webauthn": "hwk"}


def external_amr(value: Any) -> tuple[str, ...]:
    """An external token's ``amr`` (A14): RFC 8176 strings as they are, GoTrue's method objects
    mapped; at most 8 entries of at most 32 characters. No claim: no factor (ASVS 6.8.4)."""
    if not isinstance(value, list):
        return ()
    found: list[str] = []
    for entry in value[:8]:
        if isinstance(entry, dict):
            method = entry.get("method")
            if isinstance(method, str) and 0 < len(method) <= 28:
                found.append(_GOTRUE_METHODS.get(method, f"ext:{method}"))
        elif isinstance(entry, str) and 0 < len(entry) <= 32:
            found.append(entry)
    return tuple(found)
