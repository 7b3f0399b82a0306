"""A database error never puts a password hash, or any statement parameter, in a log (C6), and an
unreachable database is a refusal naming ``DATABASE_URL``, never a traceback.

The errors are real PostgreSQL ones on the path that writes a password hash (creating a user): after
migration the test database's ``users`` table is narrowed, so the INSERT fails inside PostgreSQL
with a DataError (a value too long for its column; the parameters, hash among them, rode along in
SQLAlchemy's message), or a trigger refuses the row quoting all of it in its message (as a CHECK
constraint's "Failing row contains (...)" detail does).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from garrison.app import build_services
from garrison.config import SECRET_SETTINGS
from garrison.gateway.asgi import create_app
from garrison.keys.sealing import new_secret
from garrison.observability.logging import JsonFormatter
from garrison.storage.db import Database
from tests.conftest import PASSWORD, MakeSettings, bearer, login
from tests.support import (
    LiveServer,
    base_env,
    create_admin,
    create_pg_database,
    drop_pg_database,
    free_port,
    run_cli,
)

NEW_PASSWORD = "the new user's own passphrase 77"
#: What PostgreSQL is made to refuse: the e-mail's blind index (DataError: the address itself is
#: encrypted), or every new row, quoted (a trigger).
SABOTAGE = {
    "data": "ALTER TABLE users ALTER COLUMN email_index TYPE varchar(8)",
    "row": """
        CREATE FUNCTION refuse_user() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'refused row %%', NEW; END $$;
        CREATE TRIGGER refuse_user BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION refuse_user();
    """,
}
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
HASH_SHAPE = re.compile(r"\$argon2(id|i|d)\$")


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def _sabotage(url: str, kind: str) -> None:
    db = Database(url)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(SABOTAGE[kind])
    db.dispose()


@pytest.fixture
def root_handler() -> Iterator[io.StringIO]:
    """Every record any logger emits, formatted by Garrison's own formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old)


@pytest.mark.postgres
@pytest.mark.req("C6")
@pytest.mark.parametrize("kind", sorted(SABOTAGE))
def test_a_postgres_error_on_user_creation_logs_no_hash(
    kind: str, pg_url: str, make_settings: MakeSettings, root_handler: io.StringIO
) -> None:
    svc = build_services(make_settings(DATABASE_URL=pg_url))
    svc.keyring.load()
    try:
        svc.users.create("root", PASSWORD, roles=("admin",))
        with TestClient(
            create_app(svc), base_url="http://127.0.0.1", raise_server_exceptions=False
        ) as client:
            token = login(client, "root")["access_token"]
            _sabotage(pg_url, kind)
            made = client.post(
                "/admin/users",
                json={"username": "dave", "email": "dave@example.org", "password": NEW_PASSWORD},
                headers=bearer(token),
            )
    finally:
        svc.close()
    assert made.status_code == 500
    assert "argon2" not in made.text
    logged = root_handler.getvalue()
    assert "unhandled error" in logged  # the failure was logged, with its traceback
    assert "Traceback" in logged
    assert not HASH_SHAPE.search(logged), logged
    assert NEW_PASSWORD not in logged
    assert "[parameters:" not in logged  # hide_parameters: SQLAlchemy never prints them


@pytest.mark.postgres
@pytest.mark.req("C6")
def test_the_engine_hides_parameters_from_its_errors(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught, db.engine.connect() as conn:
            conn.execute(sa.text("SELECT length(:v) + CAST(:n AS integer)"), {"v": HASH, "n": "x"})
    finally:
        db.dispose()
    assert "[parameters:" not in str(caught.value)
    assert HASH not in str(caught.value)
    assert "SQL parameters hidden" in str(caught.value)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.req("C6")
def test_the_cli_reports_a_database_error_without_hash_or_traceback(
    pg_url: str, tmp_path: Path
) -> None:
    env = base_env(tmp_path / "data", DATABASE_URL=pg_url)
    assert run_cli("db", "upgrade", env=env).returncode == 0
    _sabotage(pg_url, "row")
    done = run_cli(
        "users",
        "create",
        "--username",
        "dave",
        "--password-stdin",
        env=env,
        stdin=NEW_PASSWORD + "\n",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert not HASH_SHAPE.search(output), output
    assert NEW_PASSWORD not in output
    assert "database" in done.stderr


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.req("C6")
def test_a_live_server_log_holds_no_hash_after_a_database_error(
    pg_url: str, tmp_path: Path
) -> None:
    env = base_env(tmp_path / "data", DATABASE_URL=pg_url, GARRISON_LOG_LEVEL="DEBUG")
    create_admin(env, PASSWORD)
    with LiveServer(env) as server:
        with httpx.Client(base_url=server.url, timeout=20) as http:
            pair = http.post("/auth/login", json={"username": "root", "password": PASSWORD})
            token = pair.json()["access_token"]
            _sabotage(pg_url, "row")
            made = http.post(
                "/admin/users",
                json={"username": "dave", "password": NEW_PASSWORD},
                headers=bearer(token),
            )
        assert made.status_code == 500
    log = server.log()
    assert "unhandled error" in log
    assert not HASH_SHAPE.search(log), log
    assert NEW_PASSWORD not in log
    assert PASSWORD not in log


DB_PASSWORD = "db-password-never-shown-9f3k"


def _closed_port_url() -> str:
    return f"postgresql://app:{DB_PASSWORD}@127.0.0.1:{free_port()}/garrison?sslmode=require"


@pytest.mark.slow
@pytest.mark.req("C3", "C6")
def test_production_serve_refuses_an_unreachable_database_by_name(tmp_path: Path) -> None:
    secrets = {name: new_secret() for name in SECRET_SETTINGS}  # every required secret
    env = base_env(
        tmp_path / "data", GARRISON_ENV="production", DATABASE_URL=_closed_port_url(), **secrets
    )
    done = run_cli("serve", "--port", str(free_port()), env=env, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "DATABASE_URL: cannot connect" in done.stderr
    assert "Traceback" not in output
    assert len(output.splitlines()) < 10, output
    for value in secrets.values():
        assert value not in output


@pytest.mark.slow
@pytest.mark.req("C3", "C6")
@pytest.mark.parametrize(
    "command",
    [("users", "list"), ("keys", "list"), ("db", "upgrade"), ("db", "check"), ("audit", "verify")],
)
def test_every_command_refuses_an_unreachable_database_by_name(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    env = base_env(tmp_path / "data", DATABASE_URL=_closed_port_url())
    done = run_cli(*command, env=env, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "DATABASE_URL: cannot connect" in done.stderr, output
    assert "Traceback" not in output
    assert DB_PASSWORD not in output
