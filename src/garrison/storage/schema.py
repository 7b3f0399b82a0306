"""Every table Garrison keeps. Times are UNIX seconds (float); ids are UUID strings.

Tenant-tagged tables carry a nullable ``tenant``: NULL means platform-scoped (unscoped, T3).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("username", sa.String(150), nullable=False, unique=True),
    # Emptied since revision 0005 (V2): the address lives in email_ciphertext (envelope-encrypted
    # under the vault's key, ``garrison.vault.emails``), found through the keyed email_index.
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("email_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("email_key_version", sa.Integer, nullable=True),
    sa.Column("email_index", sa.String(64), nullable=True, index=True),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("roles", sa.JSON, nullable=False),
    sa.Column("tenant", sa.String(100), nullable=True, index=True),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("external_subject", sa.String(400), nullable=True, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Access tokens issued before this moment are dead (revoke-sessions, disable).
    sa.Column("tokens_valid_after", sa.Float, nullable=False, default=0.0),
    # an administrator set the password (create, reset): it must be changed first (A15)
    sa.Column("password_change_required", sa.Boolean, nullable=False, server_default=sa.false()),
)

refresh_families = sa.Table(
    "refresh_families",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True),
    sa.Column("tenant", sa.String(100), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revoked_reason", sa.String(64), nullable=True),
    # how the login behind the family was proven (RFC 8176 amr) and when (A14); NULL before 0006
    sa.Column("amr", sa.JSON, nullable=True),
    sa.Column("auth_time", sa.Float, nullable=True),
    # the session's last login or refresh, and where it came from (A16; NULL before 0007)
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(400), nullable=True),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "family_id",
        sa.String(36),
        sa.ForeignKey("refresh_families.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("lookup", sa.String(32), nullable=False, unique=True),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("tenant", sa.String(100), nullable=True, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("private_key", sa.LargeBinary, nullable=False),  # AES-GCM sealed PKCS8 DER
    sa.Column("public_jwk", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("rotate_by", sa.Float, nullable=False),
    sa.Column("retired_at", sa.Float, nullable=True),  # stopped signing; verifies until expiry
    sa.Column("revoked_at", sa.Float, nullable=True),  # emergency: verifies nothing
)

#: When each secret setting was first seen with its current value (C5): a keyed fingerprint (HMAC
#: under the row's own random key), never the secret. See ``garrison.keys.secret_ages``.
secret_fingerprints = sa.Table(
    "secret_fingerprints",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("fp_key", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("first_seen_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("action", sa.String(100), nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=True, index=True),
    sa.Column("tenant", sa.String(100), nullable=True, index=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(400), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(400), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("seq", sa.BigInteger, nullable=False),  # last record deleted before this point
    sa.Column("hash", sa.String(64), nullable=False),  # that record's hash: the chain's new root
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("kid", sa.String(64), nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
)

#: Where the keyed chain starts (L7): written once, by `garrison db upgrade` applying revision 0003.
audit_epochs = sa.Table(
    "audit_epochs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("first_seq", sa.BigInteger, nullable=False),  # the first record with a keyed hash
    sa.Column("prev_hash", sa.String(64), nullable=False),  # the hash of the record before it
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("mac", sa.String(64), nullable=False),  # under the audit key: no one else can move it
)

vault_secrets = sa.Table(
    "vault_secrets",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=True, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),
    sa.Column("key_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(36), nullable=True),
    sa.UniqueConstraint("tenant", "name"),
)

#: A user's TOTP authenticator (A14): the RFC 6238 seed sealed under the vault's key set
#: (``garrison.vault.envelope``, bound to this table, column and user), pending until a first code
#: confirms it; ``last_step`` is the newest time step a code was accepted for (no replay).
mfa_totp = sa.Table(
    "mfa_totp",
    metadata,
    sa.Column(
        "user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("key_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("confirmed_at", sa.Float, nullable=True),
    sa.Column("last_step", sa.BigInteger, nullable=True),
)

#: One-time recovery codes (A14): HMAC-SHA256 under a random per-code salt, each spent once.
mfa_recovery_codes = sa.Table(
    "mfa_recovery_codes",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "user_id",
        sa.String(36),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("salt", sa.String(32), nullable=False),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
)

#: Logins waiting for their second factor (A14): the SHA-256 of the ``mfa_token`` a correct password
#: earned, for one user, for five minutes, spent by the first correct code.
mfa_challenges = sa.Table(
    "mfa_challenges",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        sa.String(36),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("amr", sa.JSON, nullable=False),  # the factors proven so far: ["pwd"]
    sa.Column("session", sa.String(16), nullable=False),  # "token" or "cookie": what login asked
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("used_at", sa.Float, nullable=True),
)

#: Tables whose rows belong to a tenant; PostgreSQL row-level security covers each (T4).
TENANT_TABLES: tuple[str, ...] = ("users", "api_keys", "refresh_families", "vault_secrets")
