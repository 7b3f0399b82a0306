"""No secret the test used ever reaches a log, an error or the audit trail (C6, A8, L1).

A full flow against a live server (debug logging, ``AUDIT_LOG_PATH`` set), then every byte the run
wrote under its temporary directory is searched for every password, token and key it handled; the
same flow in-process is checked against the captured log records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.identity.users import User
from tests.conftest import PASSWORD
from tests.support import LiveServer, base_env, create_admin

WRONG_PASSWORD = "Tr0ub4dor&3-wrong-guess"
NEW_USER_PASSWORD = "brand new user password 42"


def _flow(post: Callable[..., Any], get: Callable[..., Any]) -> list[str]:
    """Log in, fail, refresh, reuse, mint and use an API key, leak one in a query; return secrets."""
    secrets_seen = [PASSWORD, WRONG_PASSWORD, NEW_USER_PASSWORD]
    assert (
        post("/auth/login", json={"username": "root", "password": WRONG_PASSWORD}).status_code
        == 401
    )
    pair = post("/auth/login", json={"username": "root", "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    renewed = post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    reuse = post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert reuse.status_code == 401
    secrets_seen += [pair["access_token"], pair["refresh_token"], renewed["refresh_token"]]
    secrets_seen.append(renewed["access_token"])
    second = post("/auth/login", json={"username": "root", "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {second['access_token']}"}
    secrets_seen += [second["access_token"], second["refresh_token"]]
    made = post(
        "/admin/users",
        json={"username": "dave", "password": NEW_USER_PASSWORD},
        headers=auth,
    )
    assert made.status_code == 201, made.text
    key = post("/admin/api-keys", json={"user": "dave", "scopes": ["read"]}, headers=auth)
    assert key.status_code == 201, key.text
    api_key = key.json()["key"]
    secrets_seen.append(api_key)
    assert get("/auth/me", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    assert get(f"/auth/me?api_key={api_key}").status_code == 401  # A8: refused, never logged
    assert get(f"/auth/me?access_token={second['access_token']}").status_code == 401
    bad = get("/auth/me", headers={"Authorization": f"Bearer {second['access_token']}x"})
    assert bad.status_code == 401
    assert second["access_token"] not in bad.text
    assert (
        post(
            "/auth/logout", json={"refresh_token": second["refresh_token"]}, headers=auth
        ).status_code
        == 204
    )
    return secrets_seen


def _leaks(blob: bytes, secrets_used: list[str]) -> list[str]:
    return [s[:12] + "..." for s in secrets_used if s.encode() in blob]


@pytest.mark.slow
@pytest.mark.req("C6", "A8", "L1")
def test_a_live_run_writes_no_secret_anywhere(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = base_env(
        data,
        AUDIT_LOG_PATH=str(tmp_path / "audit" / "audit.jsonl"),
        GARRISON_LOG_LEVEL="DEBUG",
    )
    created = create_admin(env, PASSWORD)
    assert PASSWORD not in created.stdout + created.stderr
    with LiveServer(env) as server, httpx.Client(base_url=server.url, timeout=20) as http:
        secrets_used = _flow(http.post, http.get)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "audit.jsonl" and p.stat().st_size > 0 for p in written)
    assert any(p.name.startswith("serve-") for p in written)  # the server's own log
    for path in written:
        leaked = _leaks(path.read_bytes(), secrets_used)
        assert not leaked, f"{path.relative_to(tmp_path)} holds {leaked}"


@pytest.mark.req("C6")
def test_captured_logs_and_audit_rows_hold_no_secret(
    client: TestClient, make_user: Callable[..., User], caplog: pytest.LogCaptureFixture
) -> None:
    make_user("root", roles=("admin",))
    caplog.set_level(logging.DEBUG)
    secrets_used = _flow(client.post, client.get)
    ours = [r for r in caplog.records if not r.name.startswith("httpx")]  # not the test's client
    logged = "\n".join(
        [r.getMessage() for r in ours] + [str(r.args) for r in ours] + [str(vars(r)) for r in ours]
    ).encode()
    assert not _leaks(logged, secrets_used)
    svc = client.app.services  # type: ignore[attr-defined]
    with svc.db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM audit_log")).all()
    assert len(rows) >= 8
    assert not _leaks(repr(rows).encode(), secrets_used)
