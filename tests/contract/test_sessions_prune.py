"""Retention for ended sessions (V5): ``garrison sessions prune [--older-than 30d]``, on SQLite and
on the real PostgreSQL. Revoked and expired refresh families (and their tokens) piled up forever;
the command deletes those that ended before the cutoff and never touches a live session."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from garrison.app import Services
from garrison.errors import AuthenticationError
from garrison.identity.sessions import SessionStore
from garrison.storage.schema import audit_log, refresh_families, refresh_tokens
from tests.conftest import PASSWORD
from tests.support import base_env, run_cli

DAY = 86400.0


def _counts(svc: Services) -> tuple[int, int]:
    with svc.db.begin() as conn:
        families = conn.execute(sa.select(sa.func.count()).select_from(refresh_families)).scalar()
        tokens = conn.execute(sa.select(sa.func.count()).select_from(refresh_tokens)).scalar()
    return int(families or 0), int(tokens or 0)


@pytest.mark.req("V5", "A16")
def test_sessions_prune_deletes_only_sessions_that_ended_before_the_cutoff(
    backend_services: Services, backend_url: str, tmp_path: Path
) -> None:
    svc = backend_services
    user = svc.users.create("alice", PASSWORD, tenant="acme")
    now = time.time()

    def store(at: float, ttl: float) -> SessionStore:
        return SessionStore(svc.db, svc.bus, ttl=int(ttl), clock=lambda: at)

    # ended long ago: revoked 40 days ago; expired 35 days ago (never revoked)
    revoked_old = store(now - 60 * DAY, 90 * DAY).start(user.id, "acme")
    store(now - 40 * DAY, 90 * DAY).revoke(revoked_old.family_id)
    expired_old = store(now - 65 * DAY, 30 * DAY).start(user.id, "acme")
    # ended recently (revoked 2 days ago), and live: both stay
    revoked_new = store(now - 10 * DAY, 90 * DAY).start(user.id, "acme")
    store(now - 2 * DAY, 90 * DAY).revoke(revoked_new.family_id)
    live = svc.sessions.start(user.id, "acme")
    live = svc.sessions.rotate(live.refresh_token)  # two tokens in the live family
    assert _counts(svc) == (4, 5)

    env = base_env(tmp_path / "data", DATABASE_URL=backend_url)
    done = run_cli("sessions", "prune", "--json", env=env)  # default: --older-than 30d
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"] == 2

    with svc.db.begin() as conn:
        left = set(conn.execute(sa.select(refresh_families.c.id)).scalars())
        audited = conn.execute(
            sa.select(audit_log.c.details).where(audit_log.c.action == "admin.sessions.prune")
        ).scalar_one()
    assert left == {revoked_new.family_id, live.family_id}
    assert expired_old.family_id not in left
    assert _counts(svc) == (2, 3)
    assert (json.loads(audited) if isinstance(audited, str) else audited)["deleted"] == 2
    svc.sessions.rotate(live.refresh_token)  # the live session still works
    with pytest.raises(AuthenticationError):
        svc.sessions.rotate(revoked_old.refresh_token)  # a pruned one is unknown: 401


@pytest.mark.req("V5")
def test_sessions_prune_refuses_a_bad_age(backend_url: str, tmp_path: Path) -> None:
    env = base_env(tmp_path / "data", DATABASE_URL=backend_url)
    done = run_cli("sessions", "prune", "--older-than", "soon", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "duration" in done.stdout + done.stderr
