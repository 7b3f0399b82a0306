"""Fixtures: settings on a temporary data dir, services on SQLite or a real PostgreSQL database,
an in-process HTTP client, and users with known passwords.

Speed (the suite runs on two cores): a fresh data dir is a copy of one made once per session (its
SQLite database migrated to head, its development key files and first signing key made), the same
state ``build_services`` plus ``keyring.load()`` would reach in each test at ~0.6 s of CPU. In
this process argon2id runs at its lowest cost: tests about the production parameters carry
``@pytest.mark.argon2_cost`` and get them (child ``garrison`` processes always use them)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from starlette.testclient import TestClient

from garrison.app import Services, build_services
from garrison.config import Settings, load_settings
from garrison.gateway.asgi import create_app
from garrison.identity import passwords
from garrison.identity.users import User
from garrison.keys import algorithms
from garrison.storage import migrate
from garrison.storage.db import Database
from garrison.storage.schema import metadata, signing_keys
from tests.support import create_pg_database, drop_pg_database

PASSWORD = "correct horse battery staple"

MakeSettings = Callable[..., Settings]


#: The cheapest argon2id the library accepts (m=8 KiB, t=1): microseconds instead of ~40 ms.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.ID)
#: What ``garrison.identity.passwords`` ships (OWASP's m=19 MiB, t=2, p=1).
PRODUCTION_HASHER, PRODUCTION_DUMMY = passwords.HASHER, passwords.DUMMY_HASH


def _swap_hasher(mp: pytest.MonkeyPatch, old: PasswordHasher, new: PasswordHasher) -> None:
    """``new`` wherever a loaded garrison module holds ``old`` (``from ... import HASHER`` too)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("garrison") and getattr(module, "HASHER", None) is old:
            mp.setattr(module, "HASHER", new)


@pytest.fixture(scope="session", autouse=True)
def _cheap_argon2() -> Iterator[None]:
    """argon2id at the lowest cost for the session: no test but those marked ``argon2_cost`` is
    about the cost (the parameters are constants of ``garrison.identity.passwords``, no setting)."""
    with pytest.MonkeyPatch.context() as mp:
        _swap_hasher(mp, PRODUCTION_HASHER, CHEAP_HASHER)
        mp.setattr(passwords, "DUMMY_HASH", CHEAP_HASHER.hash("garrison-timing-equaliser"))
        yield


@pytest.fixture(autouse=True)
def _argon2_cost(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``@pytest.mark.argon2_cost``: the test is about the production parameters (or the time
    they take), so it runs with them."""
    if request.node.get_closest_marker("argon2_cost") is not None:
        _swap_hasher(monkeypatch, CHEAP_HASHER, PRODUCTION_HASHER)
        monkeypatch.setattr(passwords, "DUMMY_HASH", PRODUCTION_DUMMY)


@pytest.fixture(scope="session", autouse=True)
def _parse_each_key_once() -> Iterator[None]:
    """``algorithms.load_private`` checks an RSA key (~0.15 s for 3072 bits) on every load; the
    same DER bytes give the same key, so each distinct key is parsed and checked once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            algorithms, "load_private", functools.lru_cache(maxsize=256)(algorithms.load_private)
        )
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_default_trust_store() -> Iterator[None]:
    """Each ``httpx`` client parses certifi's CA bundle (~50 ms): ``build_services`` and
    ``create_app`` make one each. The default context (verify=True, no SSL_CERT_* override) is
    made once per session; any other ``verify`` still gets its own."""
    from httpx._transports import default as transports

    made = httpx.create_ssl_context  # what the transports call, by its public name
    shared: list[ssl.SSLContext] = []

    def create_ssl_context(
        verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        overridden = trust_env and ("SSL_CERT_FILE" in os.environ or "SSL_CERT_DIR" in os.environ)
        if verify is not True or cert is not None or overridden:
            return made(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(made(verify=True, cert=None, trust_env=trust_env))
        return shared[0]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transports, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture(scope="session")
def data_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development data dir as ``build_services`` and a first ``keyring.load()`` leave it: the
    key files, and ``garrison.db`` migrated to head with one signing key (no other rows)."""
    data = tmp_path_factory.mktemp("template") / "data"
    env = {"GARRISON_DATA_DIR": str(data), "GARRISON_DOTENV": "/nonexistent"}
    svc = build_services(load_settings(env))
    try:
        svc.keyring.load()
    finally:
        svc.close()
    return data


def fresh_data_dir(template: Path, data: Path, database: Path | None = None) -> None:
    """Copy the template into ``data`` (and its database to ``database`` when given)."""
    shutil.copytree(template, data, ignore=shutil.ignore_patterns("garrison.db*"))
    shutil.copy2(template / "garrison.db", database or data / "garrison.db")


@pytest.fixture(scope="session")
def template_signing_keys(data_template: Path) -> list[dict[str, Any]]:
    """The template's signing key row(s), sealed under its ``keyring.key``."""
    db = Database(f"sqlite:///{data_template / 'garrison.db'}")
    try:
        with db.begin() as conn:
            return [row._asdict() for row in conn.execute(sa.select(signing_keys))]
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the session's contract tests (tables emptied per test),
    migrated once."""
    url = create_pg_database()
    db = Database(url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def pg_admin(pg_database: str) -> Iterator[Database]:
    """The session database as its owner, to empty and seed it between tests."""
    db = Database(pg_database, pool_size=1, max_overflow=0)
    yield db
    db.dispose()


def _empty(db: Database) -> None:
    """What ``TRUNCATE ... RESTART IDENTITY`` leaves, ~10x faster on tables this small: every
    row deleted (children first) and every sequence back at its start."""
    with db.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        sequences = conn.execute(
            sa.text(
                "SELECT sequence_name FROM information_schema.sequences"
                " WHERE sequence_schema = current_schema()"
            )
        ).scalars()
        for name in list(sequences):
            conn.execute(sa.text(f'ALTER SEQUENCE "{name}" RESTART'))


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    """Settings as `garrison serve` would read them, from an empty environment plus overrides."""

    def make(**overrides: Any) -> Settings:
        env = {"GARRISON_DATA_DIR": str(tmp_path / "data"), "GARRISON_DOTENV": "/nonexistent"}
        env.update({k: str(v) for k, v in overrides.items() if isinstance(v, str | int | bool)})
        nonstr = {k: v for k, v in overrides.items() if not isinstance(v, str | int | bool)}
        return load_settings(env, overrides=nonstr)

    return make


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each contract test runs once on SQLite and once on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    url: str = request.getfixturevalue("pg_database")
    _empty(request.getfixturevalue("pg_admin"))
    return url


@pytest.fixture
def services(
    make_settings: MakeSettings, data_template: Path, tmp_path: Path
) -> Iterator[Services]:
    """Development services on a fresh SQLite data dir (a copy of the session's template, which
    is what migrating an empty one gives)."""
    fresh_data_dir(data_template, tmp_path / "data")
    svc = build_services(make_settings(), migrate_schema=False)
    svc.keyring.load()
    yield svc
    svc.close()


@pytest.fixture
def backend_database(
    request: pytest.FixtureRequest, backend_url: str, data_template: Path, tmp_path: Path
) -> str:
    """``backend_url`` as a fresh migration leaves it, with the template's data dir (key files)
    and signing key: on SQLite a copy of the template's database, on PostgreSQL the emptied
    session database (migrated once). Build on it with ``migrate_schema=False`` and without a
    ``GARRISON_KEYRING_KEY`` of your own (the key is sealed under the template's)."""
    if backend_url.startswith("sqlite:///"):
        database = Path(backend_url.removeprefix("sqlite:///"))
        fresh_data_dir(data_template, tmp_path / "data", database)
    else:
        fresh_data_dir(data_template, tmp_path / "data")
        admin: Database = request.getfixturevalue("pg_admin")
        with admin.engine.begin() as conn:
            conn.execute(signing_keys.insert(), request.getfixturevalue("template_signing_keys"))
    return backend_url


@pytest.fixture
def backend_services(make_settings: MakeSettings, backend_database: str) -> Iterator[Services]:
    """Services on ``backend_database`` (each contract test runs on SQLite and PostgreSQL)."""
    svc = build_services(make_settings(DATABASE_URL=backend_database), migrate_schema=False)
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
