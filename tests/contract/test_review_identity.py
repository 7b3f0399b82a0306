"""Attacks on refresh-token rotation from the security review (A4, A5, A12), on SQLite and on the
real PostgreSQL: racing refreshes, refresh after logout or disable, another tenant's header."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from garrison.app import Services
from garrison.errors import AuthenticationError, RefreshReuseError
from garrison.identity.service import Client
from garrison.identity.sessions import Rotation
from tests.conftest import PASSWORD

ALICE = Client(ip="203.0.113.7", user_agent="review", request_id="r-1")


def _race(services: Services, token: str, n: int = 2) -> list[Any]:
    """``n`` threads present the same refresh token at the same moment; what each got."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[i] = services.sessions.rotate(token)
        except Exception as exc:  # the outcome under test, whatever it is
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.req("A5")
def test_racing_refreshes_one_wins_and_the_family_dies(backend_services: Services) -> None:
    """Two presentations of one refresh token, concurrently: at most one successor is ever
    issued, the other is treated as reuse, and the family (the winner's successor too) is
    revoked."""
    user = backend_services.users.create("alice", PASSWORD)
    first = backend_services.sessions.start(user.id, None)
    results = _race(backend_services, first.refresh_token)

    winners = [r for r in results if isinstance(r, Rotation)]
    reused = [r for r in results if isinstance(r, RefreshReuseError)]
    assert len(winners) == 1, results
    assert len(reused) == 1, results
    assert backend_services.sessions.is_revoked(first.family_id)
    with pytest.raises(AuthenticationError):
        backend_services.sessions.rotate(winners[0].refresh_token)


@pytest.mark.req("A5")
def test_refresh_after_logout_is_refused(backend_services: Services) -> None:
    backend_services.users.create("alice", PASSWORD)
    pair = backend_services.auth.login("alice", PASSWORD, ALICE)
    backend_services.auth.logout(pair.claims["sid"], None, pair.claims["sub"], ALICE)
    with pytest.raises(AuthenticationError):
        backend_services.auth.refresh(pair.refresh_token, ALICE)


@pytest.mark.req("A4", "A5", "A12")
def test_refresh_of_a_disabled_users_family_is_refused(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    pair = backend_services.auth.login("alice", PASSWORD, ALICE)
    backend_services.users.set_active(user.id, False)
    with pytest.raises(AuthenticationError):
        backend_services.auth.refresh(pair.refresh_token, ALICE)
    backend_services.users.set_active(user.id, True)  # re-enabling does not revive the session
    with pytest.raises(AuthenticationError):
        backend_services.auth.refresh(pair.refresh_token, ALICE)


@pytest.mark.req("A5", "A12")
def test_refresh_after_revoke_sessions_is_refused(backend_services: Services) -> None:
    user = backend_services.users.create("alice", PASSWORD)
    pair = backend_services.auth.login("alice", PASSWORD, ALICE)
    backend_services.users.revoke_sessions(user.id)
    with pytest.raises(AuthenticationError):
        backend_services.auth.refresh(pair.refresh_token, ALICE)


@pytest.mark.req("A13", "E7")
@pytest.mark.parametrize("name", ["a\x00b", "alice\x00", "\x00"])
def test_a_username_with_nul_is_a_plain_failed_login(backend_services: Services, name: str) -> None:
    """PostgreSQL refuses NUL in text: the lookup raised and the public login answered 500,
    unaudited. A name that no account can have is now an unknown user like any other."""
    import sqlalchemy as sa

    from garrison.storage.schema import audit_log

    backend_services.users.create("alice", PASSWORD)
    with pytest.raises(AuthenticationError) as caught:
        backend_services.auth.login(name, PASSWORD, ALICE)
    assert caught.value.detail == "invalid username or password"
    with backend_services.db.begin() as conn:
        outcomes = conn.execute(
            sa.select(audit_log.c.outcome).where(audit_log.c.action == "auth.login")
        ).scalars()
        assert list(outcomes) == ["failure"]


@pytest.mark.req("A12", "E7")
def test_admin_lookups_with_nul_are_404_not_500(backend_services: Services) -> None:
    """``/admin/users/%00`` and friends reached PostgreSQL with a NUL and answered 500."""
    from starlette.testclient import TestClient

    from garrison.gateway.asgi import create_app
    from tests.conftest import bearer, login

    backend_services.users.create("root", PASSWORD, roles=("admin",))
    app = create_app(backend_services)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        admin = bearer(login(client, "root")["access_token"])
        answers = [
            client.patch("/admin/users/a%00b", json={"active": False}, headers=admin),
            client.post("/admin/users/a%00b/revoke-sessions", headers=admin),
            client.delete("/admin/api-keys/a%00b", headers=admin),
            client.post("/admin/api-keys", json={"user": "a\x00b", "scopes": ["x"]}, headers=admin),
        ]
    assert [a.status_code for a in answers] == [404] * 4, [a.text for a in answers]
