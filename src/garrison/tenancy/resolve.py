"""Which tenant a request acts in (T1, T2): the token's tenant, or the one ``X-Tenant-ID`` names.

``acting_tenant`` only works out the tenant a request asks to act in; whether it may is the
policy's decision (``policy/defaults/garrison.cedar``: ``tenant-header``, ``tenant-bound``,
``platform-tenant``, ``resource-tenant``, ``platform-record``), so the rules below hold on every
path in one place:

- A tenant-bound identity (admins included) acts only in its own tenant; a header naming another
  tenant is a ``tenant mismatch``.
- A platform-scoped identity (no tenant) acts in platform scope; only a platform admin may name a
  tenant in the header and act in it. Anyone else naming a tenant is a ``tenant mismatch``.
- With ``REQUIRE_TENANT_HEADER`` a tenant-bound identity must send the header (``missing tenant
  header``). A platform identity has no tenant to send, so it is not asked for one.

Pure functions: no I/O, no settings; the caller says whether the header is required.
"""

from __future__ import annotations

import re

from garrison.errors import BadRequestError, ForbiddenError
from garrison.principal import Principal

TENANT_MISMATCH = "tenant mismatch"
MISSING_TENANT_HEADER = "missing tenant header"
PLATFORM_ADMIN_ROLE = "admin"

_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def acting_tenant(
    principal: Principal | None, header: str | None, *, required: bool
) -> tuple[str | None, bool]:
    """The tenant the request asks to act in (None: platform scope), and whether a required
    ``X-Tenant-ID`` is missing. A malformed header is a 400 before anything is decided."""
    named = (header or "").strip() or None
    if named is not None and not _TENANT_RE.match(named):
        raise BadRequestError(
            "X-Tenant-ID: letters, digits, '.', '_' and '-' only (at most 100)",
            code="bad_tenant_header",
        )
    if principal is None:
        return None, False  # anonymous (a public action): no tenant to act in
    if named is None:
        return principal.tenant, required and principal.tenant is not None
    return named, False


def resolve_tenant(principal: Principal, header: str | None, *, required: bool) -> str | None:
    """The effective tenant (None: platform scope), or ``ForbiddenError`` with the reason."""
    named = (header or "").strip() or None
    if principal.tenant is not None:
        if named is None:
            if required:
                raise ForbiddenError(
                    "send X-Tenant-ID with your tenant", reasons=[MISSING_TENANT_HEADER]
                )
            return principal.tenant
        if named != principal.tenant:
            raise ForbiddenError(
                "X-Tenant-ID does not match the token's tenant", reasons=[TENANT_MISMATCH]
            )
        return principal.tenant
    if named is None:
        return None
    if PLATFORM_ADMIN_ROLE not in principal.roles or not _TENANT_RE.match(named):
        raise ForbiddenError(
            "only a platform admin may act in a named tenant", reasons=[TENANT_MISMATCH]
        )
    return named


def same_tenant(acting_in: str | None, record_tenant: str | None) -> bool:
    """A record is visible only in its own tenant; untagged records only in platform scope (T3)."""
    return acting_in == record_tenant


def check_same_tenant(acting_in: str | None, record_tenant: str | None) -> None:
    if not same_tenant(acting_in, record_tenant):
        raise ForbiddenError("the record belongs to another tenant", reasons=[TENANT_MISMATCH])
