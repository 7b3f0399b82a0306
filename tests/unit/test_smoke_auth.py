from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from garrison.identity.users import User
from tests.conftest import bearer, login


@pytest.mark.req("A1", "A2")
def test_login_then_me(client: TestClient, make_user: Callable[..., User]) -> None:
    make_user("alice", roles=("admin",))
    tokens = login(client, "alice")
    assert tokens["token_type"] == "Bearer"
    me = client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "alice"
    assert me.json()["roles"] == ["admin"]
