"""secret fingerprints: first-seen dates of secret settings (C5)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:10:00

One row per secret setting (``GARRISON_KEYRING_KEY`` ...): a keyed fingerprint of its value (HMAC
under the row's own random key, never the secret) and when that value was first and last seen, so
its rotate-by date can be reported like a signing key's. Not tenant data: no row-level security.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secret_fingerprints",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("fp_key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_secret_fingerprints")),
    )


def downgrade() -> None:
    op.drop_table("secret_fingerprints")
