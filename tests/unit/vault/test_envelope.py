"""Envelope encryption of vault secrets: what opens, and every tampering that must not (V1-V3)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from garrison.errors import ConfigError
from garrison.keys.sealing import NONCE_BYTES, new_secret
from garrison.vault import envelope
from garrison.vault.envelope import WRAPPED_BYTES, SecretRef
from garrison.vault.errors import DecryptError
from garrison.vault.fields import EncryptedField
from garrison.vault.keys import KeySet, key_version, split_old_keys

OLD, NEW = new_secret(), new_secret()
REF = SecretRef("0f4c7236-4be8-496c-97d9-da2f0d46d361", "acme", "db-password")
VALUE = "p@ss w0rd, not ASCII: ünïcødé".encode()


def sealed(keys: KeySet, ref: SecretRef = REF) -> tuple[int, bytes]:
    return envelope.encrypt(keys, ref, VALUE)


@pytest.fixture
def keys() -> KeySet:
    return KeySet.from_secrets(NEW)


@pytest.mark.req("V1")
def test_round_trip_records_the_current_key_version(keys: KeySet) -> None:
    version, blob = sealed(keys)
    assert version == keys.current == key_version(NEW)
    assert VALUE not in blob
    assert envelope.decrypt(keys, REF, version, blob) == VALUE


@pytest.mark.req("V1")
def test_every_encryption_uses_a_fresh_data_key_and_nonce(keys: KeySet) -> None:
    (_, first), (_, second) = sealed(keys), sealed(keys)
    assert first != second
    assert first[1 : 1 + NONCE_BYTES] != second[1 : 1 + NONCE_BYTES]  # DEK wrap nonce
    value_nonce = slice(1 + WRAPPED_BYTES, 1 + WRAPPED_BYTES + NONCE_BYTES)
    assert first[value_nonce] != second[value_nonce]


@pytest.mark.req("V1")
@pytest.mark.parametrize(
    "elsewhere",
    [
        SecretRef(REF.row_id, "other-tenant", REF.name),
        SecretRef(REF.row_id, None, REF.name),  # promoted to platform scope
        SecretRef(REF.row_id, REF.tenant, "other-name"),
        SecretRef("11111111-2222-3333-4444-555555555555", REF.tenant, REF.name),
    ],
    ids=["other-tenant", "platform", "other-name", "other-row"],
)
def test_ciphertext_moved_elsewhere_does_not_open(keys: KeySet, elsewhere: SecretRef) -> None:
    version, blob = sealed(keys)
    with pytest.raises(DecryptError):
        envelope.decrypt(keys, elsewhere, version, blob)


@pytest.mark.req("V1")
def test_a_flipped_bit_anywhere_does_not_open(keys: KeySet) -> None:
    version, blob = sealed(keys)
    for position in range(len(blob)):
        for bit in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= bit
            with pytest.raises(DecryptError):
                envelope.decrypt(keys, REF, version, bytes(tampered))


@pytest.mark.req("V1")
@pytest.mark.parametrize("cut", [0, 1, 1 + WRAPPED_BYTES, -1])
def test_truncated_ciphertext_does_not_open(keys: KeySet, cut: int) -> None:
    version, blob = sealed(keys)
    with pytest.raises(DecryptError):
        envelope.decrypt(keys, REF, version, blob[:cut])


@pytest.mark.req("V1")
def test_wrong_key_and_unknown_version_fail_with_the_same_opaque_error(keys: KeySet) -> None:
    version, blob = sealed(keys)
    other = KeySet.from_secrets(new_secret())
    impostor = KeySet(version, {**other.keks, version: other.current_kek})  # right id, wrong key
    errors = []
    attempts: tuple[Callable[[], bytes], ...] = (
        lambda: envelope.decrypt(other, REF, version, blob),  # version not configured
        lambda: envelope.decrypt(impostor, REF, version, blob),  # key does not match
        lambda: envelope.decrypt(keys, REF, version + 1, blob),  # row names another version
    )
    for attempt in attempts:
        with pytest.raises(DecryptError) as caught:
            attempt()
        errors.append((caught.value.code, caught.value.detail, caught.value.status))
    assert len(set(errors)) == 1
    code, detail, _ = errors[0]
    assert code == "decrypt_failed"
    assert "key" not in detail.lower()
    assert "tag" not in detail.lower()


@pytest.mark.req("V1")
def test_the_error_text_never_contains_the_value_or_the_key(keys: KeySet) -> None:
    version, blob = sealed(keys)
    with pytest.raises(DecryptError) as caught:
        envelope.decrypt(keys, SecretRef(REF.row_id, "x", REF.name), version, blob)
    text = f"{caught.value!r} {caught.value}"
    assert NEW not in text
    assert VALUE.decode() not in text


@pytest.mark.req("V3")
def test_old_versions_keep_opening_and_rewrap_moves_only_the_data_key() -> None:
    before = KeySet.from_secrets(OLD)
    version, blob = sealed(before)
    rotated = KeySet.from_secrets(NEW, [OLD])
    assert rotated.current != version
    assert rotated.knows(version)
    assert envelope.decrypt(rotated, REF, version, blob) == VALUE
    moved = envelope.rewrap(rotated, REF, version, blob)
    assert moved[1 + WRAPPED_BYTES :] == blob[1 + WRAPPED_BYTES :]  # value untouched
    assert envelope.decrypt(KeySet.from_secrets(NEW), REF, rotated.current, moved) == VALUE
    with pytest.raises(DecryptError):  # the old KEK alone can no longer open it
        envelope.decrypt(before, REF, rotated.current, moved)
    with pytest.raises(DecryptError):  # nor does the row open if it still names the old version
        envelope.decrypt(rotated, REF, version, moved)


@pytest.mark.req("V3")
def test_key_versions_are_fingerprints_not_positions() -> None:
    third = new_secret()
    a = KeySet.from_secrets(NEW, [OLD, third])
    b = KeySet.from_secrets(NEW, [third, OLD])
    assert a == b
    assert key_version(OLD) != key_version(NEW)
    assert 0 < key_version(OLD) < 2**31
    assert split_old_keys(f" {OLD} ,, {third},") == [OLD, third]


@pytest.mark.req("V3", "C2")
def test_production_refuses_a_weak_old_key_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        KeySet.from_secrets(NEW, [OLD, "changeme"], production=True)
    assert caught.value.problems == (
        "GARRISON_SECRET_ENCRYPTION_KEYS_OLD[1]: a known default or placeholder value",
    )
    assert KeySet.from_secrets(NEW, ["changeme"]).knows(key_version("changeme"))  # development


@pytest.mark.req("V2")
def test_encrypted_field_binds_table_column_and_row() -> None:
    key = bytes(range(32))
    field = EncryptedField("users", "external_subject")
    blob = field.seal(key, "row-1", b"sub|123", ("acme",))
    assert field.open(key, "row-1", blob, ("acme",)) == b"sub|123"
    for other, row, context in (
        (EncryptedField("users", "email"), "row-1", ("acme",)),
        (EncryptedField("api_keys", "external_subject"), "row-1", ("acme",)),
        (field, "row-2", ("acme",)),
        (field, "row-1", ("globex",)),
        (field, "row-1", ()),
    ):
        with pytest.raises(DecryptError):
            other.open(key, row, blob, context)


@pytest.mark.req("V2")
def test_field_associated_data_cannot_be_forged_by_separator_injection() -> None:
    a = EncryptedField("t", "c").aad("a,b", ("c",))
    b = EncryptedField("t", "c").aad("a", ("b", "c"))
    assert a != b
