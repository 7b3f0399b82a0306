"""``garrison audit verify|query|export|prune`` as an operator runs them (L4, L5, L7, V5)."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.support import base_env, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with three users (three audit records), made once and copied per test."""
    data = tmp_path_factory.mktemp("seed") / "data"
    env = base_env(data)
    for name in ("alice", "bob", "carol"):
        made = run_cli(
            "users",
            "create",
            "--username",
            name,
            "--password-stdin",
            env=env,
            stdin=PASSWORD + "\n",
        )
        assert made.returncode == 0, made.stderr
    return data


@pytest.fixture
def env(seeded: Path, tmp_path: Path) -> dict[str, str]:
    shutil.copytree(seeded, tmp_path / "data")
    return base_env(tmp_path / "data")


def _db(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["GARRISON_DATA_DIR"]) / "garrison.db")


@pytest.mark.req("L7")
def test_verify_passes_then_names_the_tampered_record_and_exits_1(env: dict[str, str]) -> None:
    ok = run_cli("audit", "verify", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "intact: 3 record(s)" in ok.stdout
    head = ok.stdout.split("--anchor later): ")[1].strip()
    assert run_cli("audit", "verify", "--anchor", head, env=env).returncode == 0
    assert run_cli("audit", "verify", "--anchor", "3:nothex", env=env).returncode == 1
    with _db(env) as conn:
        conn.execute("UPDATE audit_log SET actor = 'someone' WHERE seq = 2")
    bad = run_cli("audit", "verify", env=env)
    assert bad.returncode == 1
    assert "broken" in bad.stderr
    assert "record 2" in bad.stderr
    as_json = json.loads(run_cli("audit", "verify", "--json", env=env).stdout)
    assert (as_json["ok"], as_json["first_bad_seq"]) == (False, 2)


@pytest.mark.req("L4")
def test_query_with_presets_and_filters(env: dict[str, str]) -> None:
    admin = json.loads(
        run_cli("audit", "query", "--preset", "admin-actions", "--json", env=env).stdout
    )
    assert [r["action"] for r in admin] == ["admin.user.create"] * 3
    actor = admin[0]["actor"]
    mine = json.loads(
        run_cli("audit", "query", "--preset", "actor", "--actor", actor, "--json", env=env).stdout
    )
    assert len(mine) == 3
    assert (
        json.loads(run_cli("audit", "query", "--preset", "failed-logins", "--json", env=env).stdout)
        == []
    )
    limited = json.loads(run_cli("audit", "query", "--limit", "1", "--json", env=env).stdout)
    assert [r["seq"] for r in limited] == [3]
    human = run_cli("audit", "query", "--action", "admin.", env=env | {"COLUMNS": "200"})
    assert human.returncode == 0
    assert "admin.user.create" in human.stdout
    refused = run_cli("audit", "query", "--preset", "actor", env=env)
    assert refused.returncode == 1
    assert "actor" in refused.stderr
    assert run_cli("audit", "query", "--since", "last tuesday", env=env).returncode == 1
    assert run_cli("audit", "query", "--preset", "everything", env=env).returncode == 2


@pytest.mark.req("L5")
def test_export_to_csv_and_json_lines(env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "audit.csv"
    done = run_cli("audit", "export", "--format", "csv", "-o", str(target), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"records": 3, "format": "csv", "output": str(target)}
    rows = list(csv.DictReader(target.open()))
    assert [r["seq"] for r in rows] == ["1", "2", "3"]
    lines = run_cli("audit", "export", env=env).stdout.splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["admin.user.create"] * 3
    assert run_cli("audit", "export", "--format", "xml", env=env).returncode == 2


@pytest.mark.req("L5", "V5", "L7")
def test_prune_keeps_the_rest_verifiable(env: dict[str, str]) -> None:
    with _db(env) as conn:  # age the first two records
        conn.execute("UPDATE audit_log SET ts = ts - 100 * 86400 WHERE seq <= 2")
    # the edit changed their content: pruning must refuse to launder it
    refused = run_cli("audit", "prune", "--older-than", "90d", env=env)
    assert refused.returncode == 1
    assert "do not verify" in refused.stderr
    with _db(env) as conn:
        conn.execute("UPDATE audit_log SET ts = ts + 100 * 86400 WHERE seq <= 2")
    time.sleep(1.1)
    assert run_cli("audit", "prune", "--older-than", "1s", "--json", env=env).returncode == 0
    report = json.loads(run_cli("audit", "verify", "--json", env=env).stdout)
    assert report["ok"], report
    assert report["root_seq"] == 3  # every old record went behind the checkpoint
    assert report["head_seq"] == 4  # the prune itself is audited after it
    assert run_cli("audit", "prune", "--older-than", "soon", env=env).returncode == 1
