"""Vault and backup cost against their floors (V1, O1).

- envelope: ``envelope.encrypt`` + ``decrypt`` of a 64-byte secret (two AES-GCM seals, two opens,
  a fresh DEK) against the floor of one bare ``seal`` + ``unseal`` (what any at-rest encryption pays);
- vault read: ``Vault.get`` on SQLite against the floor of the same row's bare SELECT;
- backup: ``create_backup`` of an audit-heavy SQLite database against the floor of reading every row
  (what any dump pays), reported as rows per second for both.

    uv run python bench/bench_vault.py [--seconds 0.7] [--rows 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.timing import per_op_us, table
from garrison.audit.chain import ChainKey
from garrison.audit.event import AuditEvent
from garrison.audit.head import AuditSeal
from garrison.audit.writer import AuditWriter
from garrison.backup import backup_key, create_backup
from garrison.keys.sealing import new_secret, seal, unseal
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import metadata, vault_secrets
from garrison.vault import KeySet, Vault, envelope
from garrison.vault.envelope import SecretRef

VALUE = os.urandom(64)


def crypto_rows(seconds: float) -> list[list[str]]:
    keys = KeySet.from_secrets(new_secret())
    ref = SecretRef("0f4c7236-4be8-496c-97d9-da2f0d46d361", "acme", "db-password")
    kek = keys.current_kek

    def floor() -> object:
        return unseal(kek, seal(kek, VALUE, b"aad"), b"aad")

    def garrison() -> object:
        version, blob = envelope.encrypt(keys, ref, VALUE)
        return envelope.decrypt(keys, ref, version, blob)

    base = per_op_us(floor, seconds=seconds)
    mine = per_op_us(garrison, seconds=seconds)
    return [
        ["floor: seal + unseal", f"{base:.2f}", "1.00"],
        ["envelope encrypt + decrypt", f"{mine:.2f}", f"{mine / base:.2f}"],
    ]


def read_rows(db: Database, seconds: float) -> list[list[str]]:
    vault = Vault(db, KeySet.from_secrets(new_secret()))
    vault.put("acme", "db-password", VALUE.hex())
    stmt = sa.select(vault_secrets).where(
        vault_secrets.c.tenant == sa.bindparam("t"), vault_secrets.c.name == sa.bindparam("n")
    )

    def floor() -> object:
        with db.begin(tenant="acme") as conn:
            return conn.execute(stmt, {"t": "acme", "n": "db-password"}).one()

    base = per_op_us(floor, seconds=seconds)
    mine = per_op_us(lambda: vault.get("acme", "db-password"), seconds=seconds)
    return [
        ["floor: SELECT the row", f"{base:.1f}", "1.00"],
        ["Vault.get (select + decrypt)", f"{mine:.1f}", f"{mine / base:.2f}"],
    ]


def backup_rows(db: Database, rows: int, tmp: Path) -> list[list[str]]:
    writer = AuditWriter(db, AuditSeal(ChainKey(os.urandom(32))))
    for start in range(0, rows, 5000):
        events = [
            AuditEvent(action="bench", outcome="success", actor="u", details={"i": i})
            for i in range(start, min(rows, start + 5000))
        ]
        writer.write_batch(events)
    started = time.perf_counter()
    with db.begin() as conn:
        total = sum(len(conn.execute(sa.select(t)).all()) for t in metadata.sorted_tables)
    base = time.perf_counter() - started
    started = time.perf_counter()
    create_backup(db, tmp / "bench.backup", backup_key(new_secret()), now=time.time())
    mine = time.perf_counter() - started
    size = (tmp / "bench.backup").stat().st_size
    return [
        ["floor: read every row", f"{total / base:,.0f} rows/s", "1.00"],
        [
            f"backup create ({size / 1e6:.1f} MB)",
            f"{total / mine:,.0f} rows/s",
            f"{mine / base:.2f}",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.7)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(db)
        rows = crypto_rows(args.seconds) + read_rows(db, args.seconds)
        print(table(["what", "us/op", "x floor"], rows))
        print()
        print(table(["what", "throughput", "time x floor"], backup_rows(db, args.rows, Path(tmp))))
        db.dispose()


if __name__ == "__main__":
    main()
