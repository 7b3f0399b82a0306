"""password and session lifecycle (A15, A16)

Revision ID: 0007
Revises: 0006 (lead: 0006 once the MFA migration is merged; written as 0007 for that)
Create Date: 2026-12-01 23:45:00

``users.password_change_required``: the password was set by an administrator (create, reset) and
must be changed before the account may do anything else. ``refresh_families`` learn when a session
was last used, and from which address and user agent (``GET /auth/sessions``; the idle timeout).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column(
                "password_change_required",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
    with op.batch_alter_table("refresh_families") as batch:
        batch.add_column(sa.Column("last_used_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("ip", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("user_agent", sa.String(length=400), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refresh_families") as batch:
        batch.drop_column("user_agent")
        batch.drop_column("ip")
        batch.drop_column("last_used_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_change_required")
