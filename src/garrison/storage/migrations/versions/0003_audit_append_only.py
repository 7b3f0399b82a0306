"""the audit trail is append-only for the runtime, and its chain is keyed (L7, T4)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:40:00

- ``audit_epochs``: the signed marker of where the keyed (HMAC) chain starts. ``garrison db
  upgrade`` writes it right after this revision, with the audit key this migration does not have:
  records before it keep their plain SHA-256 hashes and keep verifying.
- PostgreSQL: the audit tables refuse UPDATE, DELETE and TRUNCATE to every role that is not (a
  member of) their owner, the migrator. Grants already leave app_rw only INSERT and SELECT
  (``garrison db roles``); the trigger holds even where a grant was too generous (default
  privileges given before these tables existed), and this revision also takes back any such grant
  from every role but the owner. The owner and superusers can always drop a trigger, so the trigger
  does not pretend to stop them: the keyed chain and its head file outside the database do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: Frozen copy of ``dbroles.APPEND_ONLY_TABLES`` at this revision.
TABLES = ("audit_log", "audit_checkpoints", "audit_epochs")
FUNCTION = "garrison_audit_append_only"
TRIGGER = "garrison_audit_append_only"

_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION garrison_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT pg_has_role(current_user,
                     (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
    RAISE EXCEPTION '% is append-only: % may not %', TG_TABLE_NAME, current_user, TG_OP
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'retention (garrison audit prune) runs as the migrator';
  END IF;
  RETURN NULL;
END $$
"""

_REVOKE_SQL = """
DO $$ DECLARE g record; BEGIN
  FOR g IN SELECT DISTINCT p.grantee, p.table_name
           FROM information_schema.role_table_grants p
           JOIN pg_class c ON c.relname = p.table_name
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = p.table_schema
           WHERE p.table_schema = current_schema() AND p.table_name = ANY(ARRAY[{tables}])
             AND p.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE')
             AND p.grantee <> pg_get_userbyid(c.relowner) LOOP
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I FROM %I', g.table_name,
                   CASE WHEN g.grantee = 'PUBLIC' THEN 'public' ELSE g.grantee END);
  END LOOP;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "audit_epochs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_epochs")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION_SQL)
    for table in TABLES:
        op.execute(
            f'CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE OR TRUNCATE ON "{table}" '
            f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
        )
    op.execute(_REVOKE_SQL.format(tables=", ".join(f"'{t}'" for t in TABLES)))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f'DROP TRIGGER IF EXISTS {TRIGGER} ON "{table}"')
        op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
    op.drop_table("audit_epochs")
