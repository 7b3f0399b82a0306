"""Tenancy checks: the tenant header rule, the runtime database role, row-level security (T2, T4)."""

from __future__ import annotations

import sqlalchemy as sa

from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Area, Outcome, Skip, failed, passed, setting_on
from garrison.doctor.registry import Checks
from garrison.storage.db import Database
from garrison.storage.schema import TENANT_TABLES
from garrison.tenancy.dbroles import runtime_role_problems

checks = Checks(Area.TENANCY)


@checks.add("tenancy.tenant-header")
def tenant_header(ctx: DoctorContext) -> Outcome:
    return setting_on(
        ctx.settings.tenant_header_required,
        "REQUIRE_TENANT_HEADER",
        "a request without X-Tenant-ID is not rejected",
    )


def _postgres(ctx: DoctorContext) -> Database:
    db = ctx.database()
    if not db.is_postgres:
        raise Skip("PostgreSQL only (SQLite has no roles or row-level security)")
    return db


@checks.add("tenancy.runtime-role")
def runtime_role(ctx: DoctorContext) -> Outcome:
    problems = runtime_role_problems(_postgres(ctx))
    if problems:
        return failed("; ".join(problems))
    return passed("not a superuser, no BYPASSRLS, owns no tenant table")


def rls_state(db: Database) -> dict[str, tuple[bool, int]]:
    """``table -> (row security enabled, number of policies)`` for every tenant table present."""
    query = sa.text(
        "SELECT c.relname, c.relrowsecurity, "
        "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
        "AND c.relname = ANY(:names)"
    )
    with db.engine.connect() as conn:
        rows = conn.execute(query, {"names": list(TENANT_TABLES)}).all()
    return {name: (bool(enabled), int(policies)) for name, enabled, policies in rows}


@checks.add("tenancy.row-level-security")
def row_level_security(ctx: DoctorContext) -> Outcome:
    state = rls_state(_postgres(ctx))
    problems = []
    for table in TENANT_TABLES:
        enabled, policies = state.get(table, (False, 0))
        if table not in state:
            problems.append(f"{table}: table missing")
        elif not enabled:
            problems.append(f"{table}: row security off")
        elif policies == 0:
            problems.append(f"{table}: row security on but no policy (every row hidden)")
    if problems:
        return failed("; ".join(problems))
    return passed(f"on, with policies, for {', '.join(TENANT_TABLES)}")
