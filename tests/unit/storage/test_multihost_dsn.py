"""A PostgreSQL DSN with several hosts (libpq's list, ``target_session_attrs``) is accepted and
used (C3, O4): libpq tries the hosts in order and keeps the first that accepts and is writable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from garrison.config import load_settings
from garrison.config.checks import production_problems
from garrison.errors import ConfigError, UnavailableError
from garrison.storage.db import Database
from tests.support import create_pg_database, drop_pg_database, free_port

pytestmark = pytest.mark.postgres


@pytest.fixture
def dbname() -> Iterator[str]:
    url = create_pg_database("garrison_multihost")
    yield url.rsplit("/", 1)[1]
    drop_pg_database(url)


def _served_by(url: str) -> tuple[int, bool]:
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        with db.begin() as conn:
            row = conn.execute(sa.text("SELECT inet_server_port(), pg_is_in_recovery()")).one()
        return int(row[0]), bool(row[1])
    finally:
        db.dispose()


@pytest.mark.req("O4")
@pytest.mark.parametrize("closed_first", [True, False], ids=["closed-first", "closed-second"])
def test_a_host_list_connects_to_the_host_that_answers(dbname: str, closed_first: bool) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there: refused at once
    hosts = [closed, "127.0.0.1:5432"] if closed_first else ["127.0.0.1:5432", closed]
    url = f"postgresql://postgres@{','.join(hosts)}/{dbname}?target_session_attrs=read-write"
    assert _served_by(url) == (5432, False)


@pytest.mark.req("O4")
def test_a_host_list_with_no_host_answering_is_unavailable(dbname: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/{dbname}"
    db = Database(url, pool_size=1, max_overflow=0)
    try:
        with pytest.raises(UnavailableError), db.begin():
            pass
    finally:
        db.dispose()


@pytest.mark.req("C3")
def test_the_production_checks_accept_a_host_list() -> None:
    url = (
        "postgresql://app_rw@db1.internal:5432,db2.internal:5432/garrison"
        "?sslmode=verify-full&target_session_attrs=read-write"
    )
    settings = load_settings({"DATABASE_URL": url})
    assert not [p for p in production_problems(settings) if p.startswith("DATABASE_URL")]
    plain = load_settings({"DATABASE_URL": url.replace("sslmode=verify-full&", "")})
    found = [p for p in production_problems(plain) if p.startswith("DATABASE_URL")]
    assert found == ["DATABASE_URL: PostgreSQL DSN lacks sslmode=require|verify-ca|verify-full"]


@pytest.mark.req("C3")
@pytest.mark.parametrize(
    "hosts", ["h1:5432,,h2:5432", "h1:5432,h2:fivefour", "h1:5432,h2:70000", "h1,[::1"]
)
def test_an_unreadable_host_list_is_refused_by_name(hosts: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Database(f"postgresql://app@{hosts}/garrison")
    assert caught.value.problems[0].startswith("DATABASE_URL: ")
