"""Who is asking: the one identity type every package reads (tokens, API keys, external IdPs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Via = Literal["jwt", "api_key", "external", "cli"]

#: ``amr`` values (RFC 8176) that prove a second factor: a one-time password (TOTP, or one of
#: Garrison's recovery codes), a hardware or software key, or an IdP's own "multiple factors".
#: The Cedar policy ``admin-needs-mfa`` holds the same list.
SECOND_FACTORS = frozenset({"otp", "hwk", "swk", "mfa"})


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    username: str
    roles: frozenset[str]
    tenant: str | None
    via: Via
    email: str | None = None
    permissions: tuple[str, ...] = ()
    session_id: str | None = None  # refresh family behind a JWT ("sid")
    credential_id: str | None = None  # jti of the JWT, or the API key id
    scopes: frozenset[str] | None = None  # API keys only: what the key may do
    expires_at: float | None = None
    #: how the identity was proven (RFC 8176 ``amr``): ``("pwd",)``, ``("pwd", "otp")``, ``("oidc",)``;
    #: empty for API keys and the CLI operator
    amr: tuple[str, ...] = ()
    #: an administrator set the password: until it is changed, only ``auth.password`` (A15)
    password_change_required: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def second_factor(self) -> bool:
        """Whether ``amr`` names a second factor (A14)."""
        return any(method in SECOND_FACTORS for method in self.amr)

    @property
    def is_platform(self) -> bool:
        """A platform-scoped identity (created without a tenant)."""
        return self.tenant is None
