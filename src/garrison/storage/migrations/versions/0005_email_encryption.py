"""users' email encrypted at rest, with a keyed blind index (V2)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00

Adds ``users.email_ciphertext`` (the address, envelope-encrypted under the vault's key),
``email_key_version`` (the KEK version that wraps its data key) and ``email_index`` (HMAC-SHA256
of the normalised address under a key derived from the vault secret; indexed, not unique: emails
were never unique). All three are nullable and have no default, so adding them rewrites no row and
takes no long lock on PostgreSQL: the service keeps running.

Encrypting the existing addresses needs the vault key, which a migration never sees (and a
migration never imports live code). ``garrison.app.upgrade_schema`` therefore runs the data step
right after this revision, and after every later upgrade: ``garrison.identity.users.seal_plaintext_emails``
encrypts the rows that still hold a plaintext ``email`` in batches of committed transactions
(each row updated only if its plaintext is unchanged, so a concurrent write is never lost) and
empties the plaintext column. It is resumable and idempotent; a replica of the previous release
that writes a plaintext address during a rolling upgrade is caught by the next run of
``garrison db upgrade`` or ``garrison vault rewrap``.

Downgrading drops the three columns: the encrypted addresses are lost (decrypt them first).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email_ciphertext", sa.LargeBinary(), nullable=True))
    op.add_column("users", sa.Column("email_key_version", sa.Integer(), nullable=True))
    op.add_column("users", sa.Column("email_index", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_users_email_index"), "users", ["email_index"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_users_email_index"), table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_index")
        batch.drop_column("email_key_version")
        batch.drop_column("email_ciphertext")
