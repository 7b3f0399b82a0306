"""``/v1/secrets/{name}`` over HTTP (V1, T1, T3, Z1, L2): tenant-scoped, role-gated, audited, and
never leaking a value or whether another tenant holds a name."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import Services
from garrison.identity.users import User
from garrison.storage.schema import audit_log, vault_secrets
from tests.conftest import bearer, login

MakeUser = Callable[..., User]
VALUE = "s3cr3t-value-that-must-never-leak"
URL = "/v1/secrets/db-password"
WHY = {"X-Justification": "INC-42: rotate the database credentials"}


@pytest.fixture
def people(make_user: MakeUser) -> dict[str, User]:
    return {
        "root": make_user("root", roles=("admin",)),
        "ada": make_user("ada", roles=("admin",), tenant="acme"),
        "sam": make_user("sam", roles=("support_lead",), tenant="acme"),
        "gil": make_user("gil", roles=("admin",), tenant="globex"),
    }


@pytest.fixture
def auth(client: TestClient, people: dict[str, User]) -> Callable[..., dict[str, str]]:
    def make(name: str, **extra: str) -> dict[str, str]:
        return bearer(login(client, name)["access_token"]) | extra

    return make


def _audit(services: Services, *actions: str) -> list[Any]:
    with services.db.begin() as conn:
        return list(
            conn.execute(
                sa.select(audit_log)
                .where(audit_log.c.action.in_(actions))
                .order_by(audit_log.c.seq)
            )
        )


def _denied(response: httpx2.Response) -> list[str]:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    reasons: list[str] = response.json()["reasons"]
    return reasons


@pytest.mark.req("V1", "L2")
def test_admin_writes_reads_and_deletes_a_secret_in_its_tenant(
    client: TestClient, services: Services, auth: Callable[..., dict[str, str]]
) -> None:
    ada = auth("ada")
    created = client.put(URL, json={"value": VALUE}, headers=ada)
    assert created.status_code == 201, created.text
    assert created.json()["tenant"] == "acme"
    assert VALUE not in created.text
    assert client.put(URL, json={"value": VALUE + "2"}, headers=ada).status_code == 200

    read = client.get(URL, headers=ada | WHY)
    assert read.status_code == 200, read.text
    assert read.json()["value"] == VALUE + "2"
    by_query = client.get(URL, params={"justification": "audit sample"}, headers=ada)
    assert by_query.status_code == 200

    gone = client.delete(URL, headers=ada | {"X-Reason": "credential retired"})
    assert gone.status_code == 204
    assert client.get(URL, headers=ada | WHY).status_code == 404

    records = _audit(services, "vault.read", "vault.write", "vault.delete")
    assert [(r.action, r.outcome) for r in records] == [
        ("vault.write", "success"),
        ("vault.write", "success"),
        ("vault.read", "success"),
        ("vault.read", "success"),
        ("vault.delete", "success"),
        ("vault.read", "failure"),
    ]
    assert {r.tenant for r in records} == {"acme"}
    assert records[2].details["justification"] == WHY["X-Justification"]
    assert records[4].reason == "credential retired"
    with services.db.begin() as conn:
        everything = json.dumps([dict(r._mapping) for r in conn.execute(sa.select(audit_log))])
    assert VALUE not in everything  # C6: never the value, in any record


@pytest.mark.req("V1", "Z1")
def test_reading_needs_a_justification_and_deleting_a_reason(
    client: TestClient, services: Services, auth: Callable[..., dict[str, str]]
) -> None:
    ada = auth("ada")
    client.put(URL, json={"value": VALUE}, headers=ada)
    blank = client.get(URL, headers=ada | {"X-Justification": "  "})
    assert _denied(blank) == ["missing parameter: justification"]
    assert _denied(client.delete(URL, headers=ada)) == ["missing parameter: reason"]
    denies = _audit(services, "authz.deny")
    assert [r.details["action"] for r in denies] == ["secret.read", "secret.delete"]
    assert VALUE not in str([dict(r._mapping) for r in denies])


@pytest.mark.req("V1", "Z1")
def test_non_admins_are_refused_before_the_vault_is_consulted(
    client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    client.put(URL, json={"value": VALUE}, headers=auth("ada"))
    sam = auth("sam")
    present = _denied(client.get(URL, headers=sam | WHY))
    absent = _denied(client.get("/v1/secrets/no-such-name", headers=sam | WHY))
    assert present == absent  # the answer does not depend on whether the name exists
    assert _denied(client.put(URL, json={"value": "x"}, headers=sam))
    assert _denied(client.delete(URL, headers=sam | {"X-Reason": "r"}))
    assert client.get(URL).status_code == 401


@pytest.mark.req("V1", "T1", "T3")
def test_another_tenant_cannot_read_or_learn_that_a_secret_exists(
    client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    client.put(URL, json={"value": VALUE}, headers=auth("ada"))
    gil = auth("gil")
    own_scope = client.get(URL, headers=gil | WHY)
    nowhere = client.get("/v1/secrets/never-created", headers=gil | WHY)
    assert own_scope.status_code == nowhere.status_code == 404
    strip = ("instance", "request_id")
    assert {k: v for k, v in own_scope.json().items() if k not in strip} == {
        k: v for k, v in nowhere.json().items() if k not in strip
    }
    assert "tenant mismatch" in _denied(
        client.get(URL, headers=gil | WHY | {"X-Tenant-ID": "acme"})
    )
    assert client.delete(URL, headers=gil | {"X-Reason": "r"}).status_code == 404
    overwrite = client.put(URL, json={"value": "globex's own"}, headers=gil)
    assert overwrite.status_code == 201  # a separate secret in globex, not acme's
    assert client.get(URL, headers=auth("ada") | WHY).json()["value"] == VALUE
    assert VALUE not in own_scope.text + nowhere.text


@pytest.mark.req("V1", "T1")
def test_platform_admin_acts_in_the_tenant_it_names(
    client: TestClient, auth: Callable[..., dict[str, str]]
) -> None:
    client.put(URL, json={"value": VALUE}, headers=auth("ada"))
    root = auth("root")
    assert client.get(URL, headers=root | WHY).status_code == 404  # platform scope is separate
    named = client.get(URL, headers=root | WHY | {"X-Tenant-ID": "acme"})
    assert named.status_code == 200
    assert named.json()["value"] == VALUE


@pytest.mark.req("V1")
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"value": 3}, 422),
        ({"value": "x", "extra": 1}, 422),
        ({}, 422),
        ({"value": "x" * 70000}, 422),
    ],
)
def test_bad_bodies_are_refused(
    client: TestClient, auth: Callable[..., dict[str, str]], body: dict[str, Any], status: int
) -> None:
    response = client.put(URL, json=body, headers=auth("ada"))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.req("V1")
def test_a_secret_that_does_not_decrypt_is_an_opaque_500(
    client: TestClient, services: Services, auth: Callable[..., dict[str, str]]
) -> None:
    ada = auth("ada")
    client.put(URL, json={"value": VALUE}, headers=ada)
    with services.db.begin() as conn:
        conn.execute(
            sa.update(vault_secrets).values(tenant="acme", name="db-password", key_version=7)
        )
    response = client.get(URL, headers=ada | WHY)
    assert response.status_code == 500
    assert response.json()["type"].endswith("decrypt_failed")
    assert response.json()["detail"] == "Stored data cannot be decrypted"
    assert VALUE not in response.text
    assert "Traceback" not in response.text
    assert [r.outcome for r in _audit(services, "vault.read")] == ["error"]
