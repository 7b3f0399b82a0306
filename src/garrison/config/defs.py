"""The value types of ``garrison.toml``'s sections: roles, actions, routes, rate limits, OIDC
providers and external IdPs.

They live apart from ``Settings`` so the domain (policy, rate limits, identity) can hold them
without reading the settings themselves: an import-linter contract forbids the domain
``garrison.config.settings`` and ``garrison.config.loader``. ``garrison.config.settings`` re-exports
them, so ``garrison.toml`` parses as before.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FrozenModel(BaseModel):
    """Immutable, no unknown keys, fields settable by name or by alias."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class RoleDef(FrozenModel):
    """A role; ``includes`` names the roles whose permissions it inherits."""

    includes: tuple[str, ...] = ()
    description: str = ""


class ActionDef(FrozenModel):
    """A registered action (Z2): a handler name (``ticket.close``) or a proxied route."""

    requires_auth: bool = True
    required_roles: tuple[str, ...] = ()
    required_params: tuple[str, ...] = ()
    own_resources_only: bool = False
    #: roles that may act on anyone's resources although the action is own-resources-only
    owner_exempt_roles: tuple[str, ...] = ()
    #: platform-wide (metrics, audit verify, key rotation): a tenant-bound identity, or any
    #: identity acting in a tenant, is refused
    platform_only: bool = False
    #: about the caller itself (who am I, log out, ask about myself): any credential may, an API
    #: key whatever its scopes
    self_service: bool = False
    description: str = ""


class RouteDef(FrozenModel):
    """A route of the action registry / built-in proxy: path prefix -> action (and upstream)."""

    prefix: str
    action: str
    methods: tuple[str, ...] = ()
    upstream: str | None = None
    max_body_bytes: int | None = Field(None, ge=1)
    rate_limit_group: str | None = None
    required_roles: tuple[str, ...] = ()  # any one of them (checked besides the policy)
    strip_prefix: bool = False  # proxy: send ``/api/x`` as ``/x`` to the upstream
    #: match the prefix ignoring letter case, for a backend that does (``/API/x`` is ``/api/x``);
    #: otherwise a path that matches only so is refused (``gateway.paths``)
    case_insensitive: bool = False

    @field_validator("methods")
    @classmethod
    def _upper_case_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        """Requests are matched by their upper-case method: ``get`` would never match."""
        return tuple(m.upper() for m in methods)


class RateLimitDef(FrozenModel):
    """A route group's limit: ``rate_limit_per_window`` hits per ``rate_limit_window_sec``."""

    rate_limit_window_sec: int = Field(60, gt=0)
    rate_limit_per_window: int = Field(600, gt=0)
    key: Literal["identity", "ip", "api_key", "tenant"] = "identity"
    prefixes: tuple[str, ...] = ()


class OidcProviderDef(FrozenModel):
    """An OIDC provider for browser login (A11). The client secret is read from the environment
    variable ``client_secret_env`` (or its ``_FILE``); none means a public client (PKCE only)."""

    issuer: str
    client_id: str
    client_secret_env: str = ""
    scopes: tuple[str, ...] = ("openid", "email")
    redirect_uri: str = ""  # default: {GARRISON_ISSUER}/auth/oidc/{name}/callback
    post_login_url: str = "/"  # where the browser goes once the session cookie is set
    default_roles: tuple[str, ...] = ("user",)  # roles of a JIT-provisioned user


class ExternalIdpDef(FrozenModel):
    """An external IdP whose tokens are accepted (A10): HS256 secret or a JWKS URL."""

    issuer: str = ""
    audience: str = ""
    hs256_secret_env: str = ""
    jwks_url: str = ""
    role_claim: str = "role"  # a dotted path (``app_metadata.roles``); a string or a list
    admin_roles: tuple[str, ...] = ()
    role_map: dict[str, str] = Field(default_factory=dict)
    default_roles: tuple[str, ...] = ("user",)  # always granted to a verified identity
    tenant_claim: str = ""  # claim naming the tenant; empty: platform-scoped identities
