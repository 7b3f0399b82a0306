"""Per-user export and erasure (V4) on SQLite and PostgreSQL: everything held about a person,
never a credential; erasure removes the person and their ways in, and keeps the audit chain."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from garrison.app import Services
from garrison.audit.event import AuditEvent
from garrison.audit.verify import verify_chain
from garrison.errors import AuthenticationError, ConflictError, NotFoundError
from garrison.identity.service import Client
from garrison.privacy import erase_user, export_user
from garrison.storage.schema import api_keys, audit_log, refresh_families, refresh_tokens, users
from tests.conftest import PASSWORD


def _setup(svc: Services) -> tuple[str, str, str]:
    svc.keyring.load()
    svc.users.create("root", PASSWORD, roles=("admin",))
    ada = svc.users.create("ada", PASSWORD, email="ada@acme.test", tenant="acme")
    svc.users.create("bob", PASSWORD, tenant="acme")
    key, record = svc.api_keys.create(ada.id, ("tickets:read",), tenant="acme", name="laptop")
    svc.auth.login("ada", PASSWORD, Client(ip="192.0.2.7", user_agent="firefox"))
    refresh = svc.auth.login("ada", PASSWORD, Client()).refresh_token
    svc.auth.login("bob", PASSWORD, Client())
    svc.vault.put("acme", "ada-made", "vault value", actor=ada.id)
    svc.audit.record_sync(AuditEvent(action="ticket.read", outcome="success", actor=record.id))
    return ada.id, key, refresh


@pytest.mark.req("V4")
def test_export_holds_everything_about_the_user_and_no_credential(
    backend_services: Services,
) -> None:
    svc = backend_services
    ada_id, key, refresh = _setup(svc)
    doc = export_user(svc.db, ada_id, now=svc.clock(), email_of=svc.users.email_of)
    assert doc["user"]["username"] == "ada"
    assert doc["user"]["email"] == "ada@acme.test"
    assert doc["user"]["has_password"] is True
    assert len(doc["sessions"]) == 2
    assert [k["name"] for k in doc["api_keys"]] == ["laptop"]
    assert [s["name"] for s in doc["vault_secrets_created"]] == ["ada-made"]
    actions = [r["action"] for r in doc["audit_records"]]
    assert actions.count("auth.login") == 2
    assert "ticket.read" in actions  # done through ada's API key
    assert any(r["ip"] == "192.0.2.7" for r in doc["audit_records"])
    text = json.dumps(doc, default=str)
    with svc.db.begin() as conn:
        pw_hash = conn.execute(sa.select(users.c.password_hash).where(users.c.id == ada_id))
        secrets = [pw_hash.scalar_one(), key, key.split("_")[1], refresh, "vault value"]
        secrets += list(conn.execute(sa.select(api_keys.c.key_hash)).scalars())
        secrets += list(conn.execute(sa.select(refresh_tokens.c.token_hash)).scalars())
    for secret in secrets:
        assert secret not in text
    assert "bob" not in text  # nothing about anyone else


@pytest.mark.req("V4")
def test_erasure_removes_the_user_and_every_way_in(backend_services: Services) -> None:
    svc = backend_services
    ada_id, key, refresh = _setup(svc)
    by_ada = sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.actor == ada_id)
    with svc.db.begin() as conn:
        ada_records = conn.execute(by_ada).scalar_one()
    assert ada_records == 2
    report = erase_user(svc.db, svc.bus, ada_id)
    assert (report.username, report.sessions, report.api_keys) == ("ada", 2, 1)
    with pytest.raises(NotFoundError):
        svc.users.get(ada_id)
    with pytest.raises(AuthenticationError):
        svc.auth.login("ada", PASSWORD, Client())
    with pytest.raises(AuthenticationError):
        svc.api_keys.authenticate(key)
    with pytest.raises(AuthenticationError):
        svc.auth.refresh(refresh, Client())
    with svc.db.begin() as conn:
        assert not conn.execute(
            sa.select(refresh_families).where(refresh_families.c.user_id == ada_id)
        ).all()
        assert conn.execute(by_ada).scalar_one() == ada_records  # the history keeps the actor id
    assert svc.auth.login("bob", PASSWORD, Client()).access_token  # others are untouched
    assert verify_chain(svc.db, lambda _kid: None, svc.audit_seal).ok
    with pytest.raises(NotFoundError):
        export_user(svc.db, ada_id, now=0.0)


@pytest.mark.req("V4")
def test_the_last_admin_cannot_be_erased(backend_services: Services) -> None:
    svc = backend_services
    root = svc.users.create("root", PASSWORD, roles=("admin",))
    with pytest.raises(ConflictError):
        erase_user(svc.db, svc.bus, root.id)
    svc.users.create("deputy", PASSWORD, roles=("admin",))
    assert erase_user(svc.db, svc.bus, root.id).username == "root"
