"""The vault store on SQLite and PostgreSQL: tenant scoping, tampering in the database, and an
online re-wrap after a key rotation (V1, V3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from garrison.app import Services
from garrison.errors import NotFoundError, ValidationError
from garrison.keys.sealing import new_secret
from garrison.storage.schema import vault_secrets
from garrison.vault import DecryptError, KeySet, RewrapReport, Vault

OLD, NEW = new_secret(), new_secret()


def vault_with(svc: Services, current: str, *old: str) -> Vault:
    return Vault(svc.db, KeySet.from_secrets(current, old), svc.clock)


@pytest.mark.req("V1", "T3")
def test_secrets_are_scoped_to_their_tenant(backend_services: Services) -> None:
    vault = backend_services.vault
    info, created = vault.put("acme", "db-password", "acme-value", actor="u1")
    assert created
    assert info.tenant == "acme"
    assert info.created_by == "u1"
    vault.put("globex", "db-password", "globex-value")
    vault.put(None, "db-password", "platform-value")
    assert vault.get("acme", "db-password")[1] == "acme-value"
    assert vault.get("globex", "db-password")[1] == "globex-value"
    assert vault.get(None, "db-password")[1] == "platform-value"
    with pytest.raises(NotFoundError):
        vault.get("initech", "db-password")
    assert [s.name for s in vault.list_for("acme")] == ["db-password"]


@pytest.mark.req("V1")
def test_put_replaces_in_place_and_delete_removes(backend_services: Services) -> None:
    vault = backend_services.vault
    first, _ = vault.put(None, "token", "one")
    second, created = vault.put(None, "token", "two")
    assert not created
    assert second.id == first.id
    assert second.created_at == first.created_at
    assert vault.get(None, "token")[1] == "two"
    with backend_services.db.begin() as conn:  # one row even for platform (NULL tenant) secrets
        assert conn.execute(sa.select(sa.func.count()).select_from(vault_secrets)).scalar() == 1
    vault.delete(None, "token")
    with pytest.raises(NotFoundError):
        vault.get(None, "token")
    with pytest.raises(NotFoundError):
        vault.delete(None, "token")


@pytest.mark.req("V1")
def test_value_is_stored_encrypted(backend_services: Services) -> None:
    backend_services.vault.put("acme", "api-token", "sk_live_0123456789abcdef")
    with backend_services.db.begin() as conn:
        row = conn.execute(sa.select(vault_secrets)).one()
    assert b"sk_live" not in row.ciphertext
    assert row.key_version == backend_services.vault.keys.current


@pytest.mark.req("V1")
@pytest.mark.parametrize("name", ["", "../etc", "a/b", "x" * 201, " lead"])
def test_bad_names_are_refused(backend_services: Services, name: str) -> None:
    with pytest.raises(ValidationError):
        backend_services.vault.put("acme", name, "v")


@pytest.mark.req("V1")
def test_ciphertext_copied_to_another_tenants_row_does_not_decrypt(
    backend_services: Services,
) -> None:
    """An attacker with write access to the table moves acme's ciphertext into globex's row."""
    vault = backend_services.vault
    vault.put("acme", "db-password", "acme-secret")
    vault.put("globex", "db-password", "globex-secret")
    t = vault_secrets.c
    with backend_services.db.begin() as conn:
        stolen = conn.execute(
            sa.select(t.ciphertext, t.key_version).where(t.tenant == "acme")
        ).one()
        conn.execute(
            sa.update(vault_secrets)
            .where(t.tenant == "globex")
            .values(ciphertext=stolen.ciphertext, key_version=stolen.key_version)
        )
        # and renames acme's own row, keeping its ciphertext
        conn.execute(sa.update(vault_secrets).where(t.tenant == "acme").values(name="renamed"))
    with pytest.raises(DecryptError):
        vault.get("globex", "db-password")
    with pytest.raises(DecryptError):
        vault.get("acme", "renamed")


@pytest.mark.req("V1")
def test_a_flipped_bit_in_the_database_does_not_decrypt(backend_services: Services) -> None:
    vault = backend_services.vault
    vault.put("acme", "db-password", "acme-secret")
    with backend_services.db.begin() as conn:
        blob = bytearray(conn.execute(sa.select(vault_secrets.c.ciphertext)).scalar_one())
        blob[-5] ^= 0x04
        conn.execute(sa.update(vault_secrets).values(ciphertext=bytes(blob)))
    with pytest.raises(DecryptError):
        vault.get("acme", "db-password")


@pytest.mark.req("V1")
def test_wrong_encryption_key_fails_with_the_opaque_error(backend_services: Services) -> None:
    vault_with(backend_services, OLD).put("acme", "k", "v")
    with pytest.raises(DecryptError) as caught:
        vault_with(backend_services, NEW).get("acme", "k")
    assert caught.value.detail == "Stored data cannot be decrypted"


@pytest.mark.req("V3")
def test_rewrap_is_online_and_moves_every_row_to_the_current_key(
    backend_services: Services,
) -> None:
    before = vault_with(backend_services, OLD)
    values = {(t, f"s{i}"): f"value-{t}-{i}" for t in ("acme", "globex", None) for i in range(7)}
    for (tenant, name), value in values.items():
        before.put(tenant, name, value)
    rotated = vault_with(backend_services, NEW, OLD)
    reader = vault_with(backend_services, NEW, OLD)  # another replica serving reads meanwhile
    rotated.put("acme", "fresh", "written after the rotation")
    seen_mixed = []

    def read_everything(_done: int) -> None:
        versions = reader.versions()
        seen_mixed.append(len(versions) > 1)
        for (tenant, name), value in values.items():
            assert reader.get(tenant, name)[1] == value

    report = rotated.rewrap(batch_size=4, progress=read_everything)
    assert report.as_dict() == {
        "current_version": rotated.keys.current,
        "pending": 21,
        "rewrapped": 21,
        "skipped": 0,
        "failed": [],
    }
    assert seen_mixed[0]
    assert not seen_mixed[-1]
    assert rotated.versions() == {rotated.keys.current: 22}
    after = vault_with(backend_services, NEW)  # the old key can now be dropped
    for (tenant, name), value in values.items():
        assert after.get(tenant, name)[1] == value
    assert rotated.rewrap().rewrapped == 0  # idempotent


@pytest.mark.req("V3")
def test_rewrap_leaves_a_row_rewritten_meanwhile_and_reports_rows_it_cannot_open(
    backend_services: Services,
) -> None:
    vault_with(backend_services, OLD).put("acme", "busy", "old value")
    stranger = new_secret()
    vault_with(backend_services, stranger).put("acme", "orphan", "key lost")

    class RacingVault(Vault):
        def _rewrap_batch(self, rows: Sequence[Any], report: RewrapReport) -> None:
            self.put("acme", "busy", "new value")  # a writer wins the race for this row
            super()._rewrap_batch(rows, report)

    racing = RacingVault(backend_services.db, KeySet.from_secrets(NEW, [OLD]))
    report = racing.rewrap()
    assert (report.rewrapped, report.skipped, len(report.failed)) == (0, 1, 1)
    assert racing.get("acme", "busy")[1] == "new value"
    with pytest.raises(DecryptError):
        racing.get("acme", "orphan")


@pytest.mark.req("V3")
def test_rolling_rotation_every_replica_reads_what_any_other_writes(
    backend_services: Services,
) -> None:
    """Step 1 announces the new key to every replica before step 2 makes it current anywhere."""
    not_yet_swapped = vault_with(backend_services, OLD, NEW)
    swapped = vault_with(backend_services, NEW, OLD)
    not_yet_swapped.put("acme", "a", "written under the old key")
    swapped.put("acme", "b", "written under the new key")
    for vault in (not_yet_swapped, swapped):
        assert vault.get("acme", "a")[1] == "written under the old key"
        assert vault.get("acme", "b")[1] == "written under the new key"
    assert set(swapped.versions()) == {not_yet_swapped.keys.current, swapped.keys.current}
