"""Turn an ``Authorization`` header into a ``Principal`` on every request (A3, A4, A7, A8).

The hot path: a token verified before is a dict hit (``TokenCodec``), then the user's status and the
session's revocation come from small caches that the invalidation bus empties the moment a user is
disabled, a session revoked or a key revoked, on every replica. Without a cross-process bus, or while
it is disconnected, the caches keep an entry at most one second, which keeps A4's bound across
processes. A database that cannot be reached is ``UnavailableError`` (503), never an inactive user.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from garrison.clock import Clock, system_clock
from garrison.errors import AuthenticationError, NotFoundError
from garrison.identity.apikeys import PREFIX as API_KEY_PREFIX
from garrison.identity.apikeys import ApiKeyStore
from garrison.identity.sessions import SessionStore
from garrison.identity.users import User, UserStore
from garrison.principal import Principal
from garrison.storage.bus import InvalidationBus
from garrison.tokens.jwt import TokenCodec, TokenError

if TYPE_CHECKING:
    from garrison.identity.external import ExternalTokens

NO_CREDENTIALS = "missing bearer credentials"


@dataclass(frozen=True, slots=True)
class _UserStatus:
    active: bool
    tokens_valid_after: float
    user: User | None
    expires: float


@dataclass(eq=False, repr=False)
class _TtlCache:
    """A dict with per-entry expiry; entries are replaced, never mutated."""

    ttl: Callable[[], float]  # read per entry: the bus's state decides how long one may be kept
    clock: Clock
    max_size: int = 100_000
    data: dict[str, tuple[float, Any]] = field(default_factory=dict, init=False)

    def get(self, key: str) -> Any | None:
        entry = self.data.get(key)
        if entry is None or entry[0] < self.clock():
            return None
        return entry[1]

    def put(self, key: str, value: Any) -> None:
        if len(self.data) >= self.max_size:
            self.data.clear()
        self.data[key] = (self.clock() + self.ttl(), value)

    def drop(self, key: str) -> None:
        self.data.pop(key, None)


@dataclass(eq=False, repr=False)
class Authenticator:
    codec: TokenCodec
    users: UserStore
    sessions: SessionStore
    api_keys: ApiKeyStore
    bus: InvalidationBus
    _: KW_ONLY
    cache_ttl: float = 30.0
    clock: Clock = system_clock
    external: ExternalTokens | None = field(default=None, init=False)  # A10: set with external IdPs
    _users: _TtlCache = field(init=False)
    _families: _TtlCache = field(init=False)
    _keys: _TtlCache = field(init=False)
    _principals: _TtlCache = field(init=False)

    def __post_init__(self) -> None:
        def ttl() -> float:
            return self.bus.cache_ttl(self.cache_ttl)

        self._users = _TtlCache(ttl, self.clock)
        self._families = _TtlCache(ttl, self.clock)
        self._keys = _TtlCache(ttl, self.clock)
        self._principals = _TtlCache(ttl, self.clock)
        self.bus.subscribe(self._invalidate)

    def _invalidate(self, kind: str, ident: str) -> None:
        if kind == "user":  # disabled, or every session revoked: its families' entries go too
            self._users.drop(ident)
            self._families.data.clear()
            self._principals.data.clear()
            self._keys.data.clear()  # its API keys' principals, cached apart from its status (A4)
        elif kind == "family":
            self._families.drop(ident)
        elif kind == "apikey":
            self._keys.data.clear()
        elif kind == "keys":
            self.codec.keyring.load()
            self.codec.forget()
        elif kind == "reset":  # messages may have been missed (keys: the keyring re-reads itself)
            for cache in (self._users, self._families, self._keys, self._principals):
                cache.data.clear()

    # -- entry points --------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Principal:
        """A principal for ``Authorization: Bearer ...``; ``AuthenticationError`` otherwise.

        Blocking (it may read the database on a cache miss): call it from a worker thread, or use
        ``authenticate_cached`` first on the event loop.
        """
        credential = bearer(authorization)
        if credential.startswith(API_KEY_PREFIX):
            return self._api_key(credential)
        try:
            return self._jwt(credential)
        except TokenError:  # not Garrison's: perhaps an external IdP's (A10)
            if self.external is None or (idp := self.external.route(credential)) is None:
                raise
        principal, issued_at = self.external.authenticate(credential, idp)
        status = self._user_status(principal.sub)
        if status.user is None and self.external.forget(principal):  # erased meanwhile (V4)
            principal, issued_at = self.external.authenticate(credential, idp)
            status = self._user_status(principal.sub)
        if not status.active:
            raise AuthenticationError(
                "account disabled or deleted", code="inactive_user", subject=principal.sub
            )
        if issued_at + 1 <= status.tokens_valid_after:
            raise AuthenticationError(
                "session revoked", code="session_revoked", subject=principal.sub
            )
        return principal

    def authenticate_cached(self, authorization: str | None) -> Principal | None:
        """The same answer when everything needed is cached (no I/O); None when it is not."""
        credential = bearer(authorization)
        if credential.startswith(API_KEY_PREFIX):
            cached = self._keys.get(credential)
            if not isinstance(cached, Principal):
                return None
            if cached.expires_at and cached.expires_at <= self.codec.clock():
                return None  # expired meanwhile: ``authenticate`` drops it and refuses
            return cached
        try:
            claims = self.codec.verify(credential)
        except TokenError:
            if self.external is not None and self.external.route(credential) is not None:
                return None  # an external IdP's token: checked in a worker thread
            raise
        status = self._users.get(claims["sub"])
        family = claims.get("sid")
        revoked = self._families.get(family) if family else False
        if status is None or revoked is None:
            return None
        return self._check_jwt(claims, status, bool(revoked))

    def lookup_key(self, authorization: str | None) -> Hashable:
        """What ``authenticate`` reads for this credential on a cache miss, as a key: one user and
        refresh family for a token of Garrison's that verifies (cached: ``authenticate_cached``
        verified it), the credential itself for anything else. Requests with the same key can
        share one read, then each check its own credential against what it left in the caches."""
        try:
            credential = bearer(authorization)
        except AuthenticationError:
            return authorization
        if credential.startswith(API_KEY_PREFIX):
            return authorization
        try:
            claims = self.codec.verify(credential)
        except TokenError:
            return authorization
        return ("jwt", claims["sub"], claims.get("sid"))

    # -- JWT -----------------------------------------------------------------------------------
    def _jwt(self, token: str) -> Principal:
        claims = self.codec.verify(token)
        status = self._user_status(claims["sub"])
        family = claims.get("sid")
        revoked = False
        if family:
            cached = self._families.get(family)
            if cached is None:
                cached = self.sessions.is_revoked(family)
                self._families.put(family, cached)
            revoked = bool(cached)
        return self._check_jwt(claims, status, revoked)

    def _check_jwt(self, claims: dict[str, Any], status: _UserStatus, revoked: bool) -> Principal:
        sub = claims["sub"]
        if not status.active:
            raise AuthenticationError(
                "account disabled or deleted", code="inactive_user", subject=sub
            )
        if revoked or claims["iat"] + 1 <= status.tokens_valid_after:
            raise AuthenticationError("session revoked", code="session_revoked", subject=sub)
        return principal_from_claims(claims)

    def _user_status(self, user_id: str) -> _UserStatus:
        cached = self._users.get(user_id)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        try:
            user: User | None = self.users.get(user_id)
        except NotFoundError:  # a deleted user is simply inactive (an outage is a 503)
            user = None
        status = _UserStatus(
            active=bool(user and user.active),
            tokens_valid_after=user.tokens_valid_after if user else time.time(),
            user=user,
            expires=0.0,
        )
        self._users.put(user_id, status)
        return status

    # -- API keys ------------------------------------------------------------------------------
    def _api_key(self, presented: str) -> Principal:
        cached = self._keys.get(presented)
        if isinstance(cached, Principal):
            if cached.expires_at and cached.expires_at <= self.codec.clock():
                self._keys.drop(presented)
                raise AuthenticationError("invalid API key", code="invalid_api_key")
            return cached
        # a refused key is audited by the refusal path (``auth.refused``), each use of an accepted
        # one by the admission pipeline (``auth.api_key``, per key and second): never here (L2)
        key = self.api_keys.authenticate(presented)
        status = self._user_status(key.user_id)
        if not status.active or status.user is None:  # the owner is named in the refusal record
            raise AuthenticationError(
                "invalid API key", code="invalid_api_key", subject=key.user_id
            )
        user = status.user
        # the user's roles as held: whether a key alone may use ``admin`` (REQUIRE_JWT_FOR_ADMIN,
        # A7) is the policy's decision (``Authorizer.granted_roles``), on every path
        roles = frozenset(user.roles)
        principal = Principal(
            sub=user.id,
            username=user.username,
            email=user.email,
            roles=roles,
            tenant=key.tenant if key.tenant is not None else user.tenant,
            via="api_key",
            credential_id=key.id,
            scopes=frozenset(key.scopes),
            expires_at=key.expires_at,
        )
        self._keys.put(presented, principal)
        return principal


def bearer(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer`` header (A8: nowhere else)."""
    if not authorization:
        raise AuthenticationError(NO_CREDENTIALS, code="no_credentials")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise AuthenticationError("use Authorization: Bearer <token>", code="bad_scheme")
    return credential


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    roles = claims.get("roles") or ()
    return Principal(
        sub=claims["sub"],
        username=str(claims.get("preferred_username") or claims["sub"]),
        email=claims.get("email"),
        roles=frozenset(str(r) for r in roles) if isinstance(roles, list) else frozenset(),
        tenant=claims.get("tenant") if isinstance(claims.get("tenant"), str) else None,
        via="jwt",
        permissions=tuple(claims.get("permissions") or ()),
        session_id=claims.get("sid"),
        credential_id=claims.get("jti"),
        expires_at=float(claims["exp"]),
        amr=amr_of(claims.get("amr")),
        password_change_required=claims.get("pwd_change_required") is True,
    )


def amr_of(value: Any) -> tuple[str, ...]:
    """A token's ``amr`` claim (RFC 8176) as a tuple of short strings; anything else is empty
    (no claim, no factor: the weakest is assumed, ASVS 6.8.4)."""
    if not isinstance(value, list):
        return ()
    return tuple(m for m in value[:8] if isinstance(m, str) and 0 < len(m) <= 32)
