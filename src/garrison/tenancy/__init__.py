"""Tenancy (T1-T4): resolving the tenant a request acts in, and keeping records inside it."""

from garrison.tenancy.resolve import (
    MISSING_TENANT_HEADER,
    TENANT_MISMATCH,
    acting_tenant,
    check_same_tenant,
    resolve_tenant,
    same_tenant,
)

__all__ = [
    "MISSING_TENANT_HEADER",
    "TENANT_MISMATCH",
    "acting_tenant",
    "check_same_tenant",
    "resolve_tenant",
    "same_tenant",
]
