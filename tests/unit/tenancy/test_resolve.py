"""Tenant resolution (T1, T2): the token's tenant against X-Tenant-ID, and the required header."""

from __future__ import annotations

import pytest

from garrison.errors import ForbiddenError
from garrison.principal import Principal
from garrison.tenancy import resolve_tenant


def _who(roles: tuple[str, ...] = ("user",), tenant: str | None = "acme") -> Principal:
    return Principal("u1", "u1", frozenset(roles), tenant, "jwt")


def _reasons(who: Principal, header: str | None, *, required: bool = False) -> tuple[str, ...]:
    with pytest.raises(ForbiddenError) as caught:
        resolve_tenant(who, header, required=required)
    return caught.value.reasons


@pytest.mark.req("T1")
def test_a_tenant_bound_identity_acts_in_its_own_tenant() -> None:
    assert resolve_tenant(_who(), "acme", required=True) == "acme"
    assert resolve_tenant(_who(), None, required=False) == "acme"


@pytest.mark.req("T1")
@pytest.mark.parametrize("roles", [("user",), ("admin",)])
def test_another_tenant_in_the_header_is_a_tenant_mismatch(roles: tuple[str, ...]) -> None:
    assert _reasons(_who(roles), "globex") == ("tenant mismatch",)


@pytest.mark.req("T2")
def test_the_required_header_must_be_sent() -> None:
    assert _reasons(_who(), None, required=True) == ("missing tenant header",)
    assert _reasons(_who(), "  ", required=True) == ("missing tenant header",)


@pytest.mark.req("T1")
def test_only_a_platform_admin_may_name_a_tenant() -> None:
    root = _who(("admin",), tenant=None)
    assert resolve_tenant(root, "globex", required=True) == "globex"
    assert resolve_tenant(root, None, required=True) is None  # platform scope
    assert _reasons(_who(("support",), tenant=None), "globex") == ("tenant mismatch",)
    assert _reasons(root, "bad tenant!") == ("tenant mismatch",)
