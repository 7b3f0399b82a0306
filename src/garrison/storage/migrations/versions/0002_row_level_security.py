"""row-level security on tenant-scoped tables (T4)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 19:40:00

PostgreSQL only (SQLite has no row security; there the stores' WHERE clauses are the guard).
Every table in ``schema.TENANT_TABLES`` gets one policy keyed on the transaction-local setting
``garrison.tenant`` that ``Database.begin(tenant=...)`` sets:

- ``'*'``: platform scope, every row (lookups by unique key that establish who and which tenant,
  such as login by username and token checks by user id, and platform administration);
- ``''`` (or unset): unscoped rows only (``tenant IS NULL``);
- ``'X'``: tenant X's rows only. Unscoped rows are platform accounts, platform API keys and
  platform secrets; none of them is a tenant's business, so a tenant sees none of them.

The same expression is the WITH CHECK, so a tenant-scoped transaction cannot write a row into
another tenant (or into platform scope). Row security is ENABLEd, not FORCEd: the table owner (the
migrator role) is exempt so migrations see every row, and the runtime refuses in production to
connect as an owner or a superuser (``garrison.tenancy.dbroles.runtime_role_problems``).

Login: the username lookup runs before any tenant is known, in platform scope ``'*'``. A SECURITY
DEFINER lookup function was considered and not used: app_rw may set ``'*'`` for platform
administration anyway, so the function would add a second path without removing the first. Row
security here bounds every transaction to the scope the service declared for it; it is the guard
against a forgotten WHERE clause, not against a compromised service.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

POLICY = "garrison_tenant_isolation"
#: Frozen copy of ``schema.TENANT_TABLES`` at this revision (a migration never imports live code).
TABLES = ("users", "api_keys", "refresh_families", "vault_secrets")
_SETTING = "coalesce(current_setting('garrison.tenant', true), '')"
VISIBLE = f"({_SETTING} = '*' OR tenant = {_SETTING} OR (tenant IS NULL AND {_SETTING} = ''))"


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgres():
        return
    for table in TABLES:
        op.execute(f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY')
        op.execute(
            f'CREATE POLICY {POLICY} ON "{table}" FOR ALL USING {VISIBLE} WITH CHECK {VISIBLE}'
        )


def downgrade() -> None:
    if not _postgres():
        return
    for table in TABLES:
        op.execute(f'DROP POLICY IF EXISTS {POLICY} ON "{table}"')
        op.execute(f'ALTER TABLE "{table}" DISABLE ROW LEVEL SECURITY')
