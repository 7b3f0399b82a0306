"""Fixtures: settings on a temporary data dir, services on SQLite or a real PostgreSQL database,
an in-process HTTP client, and users with known passwords."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.config import Settings, load_settings
from garrison.gateway.asgi import create_app
from garrison.identity.users import User
from tests.support import create_pg_database, drop_pg_database

PASSWORD = "correct horse battery staple"

MakeSettings = Callable[..., Settings]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the session's contract tests (tables emptied per test)."""
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings as `garrison serve` would read them, from an empty environment plus overrides."""

    def make(**overrides: Any) -> Settings:
        env = {"GARRISON_DATA_DIR": str(tmp_path / "data"), "GARRISON_DOTENV": "/nonexistent"}
        env.update({k: str(v) for k, v in overrides.items() if isinstance(v, str | int | bool)})
        nonstr = {k: v for k, v in overrides.items() if not isinstance(v, str | int | bool)}
        return load_settings(env, overrides=nonstr)

    return make


def _truncate(url: str) -> None:
    import sqlalchemy as sa

    from garrison.storage.db import Database
    from garrison.storage.schema import metadata

    db = Database(url)
    with db.engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        if sa.inspect(conn).has_table("users"):
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each contract test runs once on SQLite and once on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    url: str = request.getfixturevalue("pg_database")
    _truncate(url)
    return url


@pytest.fixture
def services(make_settings: MakeSettings) -> Iterator[Services]:
    svc = build_services(make_settings())
    svc.keyring.load()
    yield svc
    svc.close()


@pytest.fixture
def backend_services(make_settings: MakeSettings, backend_url: str) -> Iterator[Services]:
    svc = build_services(make_settings(DATABASE_URL=backend_url))
    svc.keyring.load()
    yield svc
    svc.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture
def make_user(services: Services) -> Callable[..., User]:
    def make(username: str = "alice", **kwargs: Any) -> User:
        return services.users.create(username, kwargs.pop("password", PASSWORD), **kwargs)

    return make


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_REQ_ID = re.compile(r"^[A-Z]\d{1,2}$")


def _known_requirement_ids() -> set[str] | None:
    """IDs defined in REQUIREMENTS.md (shared/ sits beside the checkout), if it can be found."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "REQUIREMENTS.md"
        if candidate.is_file():
            return set(re.findall(r"^\| ([A-Z]\d{1,2}) \|", candidate.read_text(), re.M))
    return None


_ASVS_ID = re.compile(r"^V?(\d{1,2}\.\d{1,2}\.\d{1,2})$")  # ``V6.5.1`` or ``6.5.1``


def _known_asvs_ids() -> set[str] | None:
    """ASVS rows of ASVS-L2.md (``6.5.1``), if it can be found beside the checkout."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "ASVS-L2.md"
        if candidate.is_file():
            return set(
                re.findall(r"^\| (\d{1,2}\.\d{1,2}\.\d{1,2}) \|", candidate.read_text(), re.M)
            )
    return None


def _asvs_problems(item: pytest.Item, known: set[str] | None) -> list[str]:
    """An ``@pytest.mark.asvs("V6.5.1")`` (or ``"6.5.1"``) names a row of the ASVS checklist."""
    problems = []
    for asvs in (arg for mark in item.iter_markers("asvs") for arg in mark.args):
        found = _ASVS_ID.match(asvs) if isinstance(asvs, str) else None
        if found is None or (known is not None and found.group(1) not in known):
            problems.append(f"{item.nodeid}: unknown ASVS ID {asvs!r}")
    return problems


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test names the requirement it proves, and only IDs that exist (REQUIREMENTS.md);
    ASVS markers name rows of ASVS-L2.md."""
    known = _known_requirement_ids()
    known_asvs = _known_asvs_ids()
    problems = []
    for item in items:
        problems.extend(_asvs_problems(item, known_asvs))
        ids = [arg for mark in item.iter_markers("req") for arg in mark.args]
        if not ids and not _REQ_ID.search(item.name):
            problems.append(f"{item.nodeid}: no @pytest.mark.req(...)")
        for req in ids:
            if not _REQ_ID.match(req) or (known is not None and req not in known):
                problems.append(f"{item.nodeid}: unknown requirement ID {req!r}")
    if problems:
        raise pytest.UsageError("requirement markers:\n  " + "\n  ".join(problems))
