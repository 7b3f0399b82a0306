"""The vault (V1, V3): named secrets per tenant, encrypted at rest, re-wrapped online.

Every transaction is scoped to the secret's tenant (``Database.begin(tenant=...)``), so on
PostgreSQL row-level security confines it as well as the WHERE clause. A write takes a lock on
(tenant, name) first: the unique constraint does not cover platform secrets (``tenant`` NULL), and
two concurrent first writes must not make two rows.

``rewrap`` moves every data key to the current KEK in small batches while the service runs: a row
is readable under whichever key version it names, and a row rewritten by a concurrent ``put``
(already under the current KEK) is left as it is.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from garrison.clock import Clock, system_clock
from garrison.errors import NotFoundError, ValidationError
from garrison.plain import fields_dict
from garrison.storage.db import Database
from garrison.storage.schema import vault_secrets
from garrison.text import check_text
from garrison.vault import envelope
from garrison.vault.envelope import SecretRef
from garrison.vault.errors import DecryptError
from garrison.vault.keys import KeySet

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
MAX_VALUE_BYTES = 64 * 1024
_T = vault_secrets.c


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A secret's metadata: everything but the value."""

    id: str
    tenant: str | None
    name: str
    key_version: int
    created_at: float
    updated_at: float
    created_by: str | None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenant": self.tenant,
            "key_version": self.key_version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "created_by": self.created_by,
        }


@dataclass(slots=True)
class RewrapReport:
    current_version: int
    pending: int  # rows not under the current KEK when the run started
    rewrapped: int = 0
    skipped: int = 0  # rewritten under the current KEK by a concurrent put meanwhile
    failed: list[str] = field(default_factory=list)  # ids of rows that do not open

    def as_dict(self) -> dict[str, Any]:
        return fields_dict(self)


def validate_name(name: str) -> str:
    # fullmatch: ``$`` alone would let a trailing newline through
    if not NAME_RE.fullmatch(check_text("secret name", name)):
        raise ValidationError(
            "secret name: 1-200 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _info(row: Any) -> SecretInfo:
    return SecretInfo(
        row.id,
        row.tenant,
        row.name,
        row.key_version,
        row.created_at,
        row.updated_at,
        row.created_by,
    )


def _where(tenant: str | None, name: str) -> sa.ColumnElement[bool]:
    in_tenant = _T.tenant.is_(None) if tenant is None else _T.tenant == tenant
    return sa.and_(in_tenant, _T.name == name)


#: The read path's statements, built once (building a WHERE clause costs more than decrypting).
_GET_IN_TENANT = sa.select(vault_secrets).where(
    _T.tenant == sa.bindparam("tenant"), _T.name == sa.bindparam("name")
)
_GET_PLATFORM = sa.select(vault_secrets).where(_T.tenant.is_(None), _T.name == sa.bindparam("name"))


@dataclass(eq=False, repr=False)
class Vault:
    db: Database
    keys: KeySet
    clock: Clock = system_clock

    def put(
        self, tenant: str | None, name: str, value: str, *, actor: str | None = None
    ) -> tuple[SecretInfo, bool]:
        """Store ``value`` under (tenant, name); returns its metadata and whether it is new."""
        validate_name(name)
        plaintext = value.encode()
        if len(plaintext) > MAX_VALUE_BYTES:
            raise ValidationError(f"value: at most {MAX_VALUE_BYTES} bytes")
        now = self.clock()
        with self.db.begin(tenant=tenant, immediate=True) as conn:
            self._lock(conn, tenant, name)
            row = conn.execute(sa.select(_T.id).where(_where(tenant, name))).first()
            row_id = row.id if row is not None else str(uuid.uuid4())
            version, blob = envelope.encrypt(self.keys, SecretRef(row_id, tenant, name), plaintext)
            if row is None:
                conn.execute(
                    vault_secrets.insert().values(
                        id=row_id,
                        tenant=tenant,
                        name=name,
                        ciphertext=blob,
                        key_version=version,
                        created_at=now,
                        updated_at=now,
                        created_by=actor,
                    )
                )
            else:
                conn.execute(
                    sa.update(vault_secrets)
                    .where(_T.id == row_id)
                    .values(ciphertext=blob, key_version=version, updated_at=now)
                )
            stored = conn.execute(sa.select(vault_secrets).where(_T.id == row_id)).one()
        return _info(stored), row is None

    def get(self, tenant: str | None, name: str) -> tuple[SecretInfo, str]:
        """The secret's metadata and value; ``NotFoundError`` if the tenant has no such secret."""
        validate_name(name)
        stmt = _GET_PLATFORM if tenant is None else _GET_IN_TENANT
        with self.db.begin(tenant=tenant) as conn:
            row = conn.execute(stmt, {"tenant": tenant, "name": name}).first()
        if row is None:
            raise NotFoundError("no such secret")
        ref = SecretRef(row.id, row.tenant, row.name)
        plaintext = envelope.decrypt(self.keys, ref, row.key_version, row.ciphertext)
        try:
            return _info(row), plaintext.decode()
        except UnicodeDecodeError:  # authenticated, so only a bug could get here
            raise DecryptError() from None

    def delete(self, tenant: str | None, name: str) -> SecretInfo:
        validate_name(name)
        with self.db.begin(tenant=tenant, immediate=True) as conn:
            row = conn.execute(sa.select(vault_secrets).where(_where(tenant, name))).first()
            if row is None:
                raise NotFoundError("no such secret")
            conn.execute(sa.delete(vault_secrets).where(_T.id == row.id))
        return _info(row)

    def list_for(self, tenant: str | None) -> list[SecretInfo]:
        in_tenant = _T.tenant.is_(None) if tenant is None else _T.tenant == tenant
        with self.db.begin(tenant=tenant) as conn:
            rows = conn.execute(sa.select(vault_secrets).where(in_tenant).order_by(_T.name))
            return [_info(r) for r in rows]

    def versions(self) -> dict[int, int]:
        """Rows per key version, every tenant: what ``rewrap`` has left to do."""
        with self.db.begin() as conn:
            rows = conn.execute(
                sa.select(_T.key_version, sa.func.count()).group_by(_T.key_version)
            ).all()
        return {int(version): int(count) for version, count in rows}

    def rewrap(
        self, *, batch_size: int = 200, progress: Callable[[int], None] | None = None
    ) -> RewrapReport:
        """Re-wrap every data key not under the current KEK; ``progress(n)`` after each batch."""
        if batch_size < 1:
            raise ValidationError("batch size: at least 1")
        stale = _T.key_version != self.keys.current
        with self.db.begin() as conn:
            pending = conn.execute(
                sa.select(sa.func.count()).select_from(vault_secrets).where(stale)
            ).scalar_one()
        report = RewrapReport(self.keys.current, int(pending))
        after = ""
        while True:
            with self.db.begin() as conn:
                rows = conn.execute(
                    sa.select(_T.id, _T.tenant, _T.name, _T.key_version, _T.ciphertext)
                    .where(stale, _T.id > after)
                    .order_by(_T.id)
                    .limit(batch_size)
                ).all()
            if not rows:
                return report
            after = rows[-1].id
            self._rewrap_batch(rows, report)
            if progress is not None:
                progress(len(rows))

    def _rewrap_batch(self, rows: Sequence[Any], report: RewrapReport) -> None:
        fresh: list[tuple[Any, bytes]] = []
        for row in rows:
            ref = SecretRef(row.id, row.tenant, row.name)
            try:
                fresh.append(
                    (row, envelope.rewrap(self.keys, ref, row.key_version, row.ciphertext))
                )
            except DecryptError:
                report.failed.append(row.id)
        with self.db.begin(immediate=True) as conn:
            for row, blob in fresh:
                done = conn.execute(
                    sa.update(vault_secrets)
                    .where(
                        _T.id == row.id,
                        _T.key_version == row.key_version,
                        _T.ciphertext == row.ciphertext,
                    )
                    .values(ciphertext=blob, key_version=self.keys.current)
                )
                if done.rowcount:
                    report.rewrapped += 1
                else:
                    report.skipped += 1

    def _lock(self, conn: sa.Connection, tenant: str | None, name: str) -> None:
        """Serialise writers of one (tenant, name) on PostgreSQL (SQLite: BEGIN IMMEDIATE)."""
        if self.db.is_postgres:
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"garrison-vault\x1f{tenant or ''}\x1f{name}"},
            )
