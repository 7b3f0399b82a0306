"""``garrison policy test`` (Z4): the shipped policies pass their tables; a broken copy fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import base_env, run_cli

ROOT = Path(__file__).resolve().parents[3]


def _run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    done = run_cli("policy", "test", *args, env=base_env(tmp_path / "data"))
    return done.returncode, done.stdout, done.stderr


@pytest.mark.req("Z4")
def test_the_shipped_policies_pass_their_decision_tables(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"]
    assert report["failed"] == 0
    assert report["passed"] >= 30
    assert report["policy_version"]


@pytest.mark.req("Z4", "Z1")
@pytest.mark.parametrize("example", ["support-desk", "team"])
def test_the_example_role_sets_pass_their_tables(tmp_path: Path, example: str) -> None:
    code, out, err = _run(tmp_path, str(ROOT / "examples" / example / "garrison.toml"))
    assert code == 0, out + err
    assert "0 failed" in out


@pytest.mark.req("Z4")
def test_a_wrong_expectation_fails_with_a_readable_report(tmp_path: Path, policy_dir: Path) -> None:
    table = policy_dir / "tests" / "support_desk.toml"
    table.write_text(
        table.read_text().replace(
            'reasons = ["missing parameter: reason"]', 'reasons = ["missing parameter: why"]', 1
        )
    )
    code, out, _err = _run(tmp_path, str(policy_dir))
    assert code == 1
    assert "FAIL closing without a reason is refused" in out
    assert "expected reasons ['missing parameter: why'], got ['missing parameter: reason']" in out


@pytest.mark.req("Z4")
def test_a_policy_that_breaks_a_table_exits_1(tmp_path: Path, policy_dir: Path) -> None:
    # a deployment policy that forbids more than intended: the tables catch it
    (policy_dir / "zz_too_strict.cedar").write_text(
        '@id("no-comments")\n@reason("comments are closed")\n'
        'forbid (principal, action, resource) when { context.family == "ticket.*" };\n'
    )
    code, out, _err = _run(tmp_path, "--json", str(policy_dir))
    assert code == 1
    report = json.loads(out)
    failed = {case["name"] for case in report["cases"] if not case["passed"]}
    assert "support comments" in failed
    assert "a user files a ticket of their own" in failed


@pytest.mark.req("Z4", "Z3")
def test_policies_that_fail_the_schema_exit_1(tmp_path: Path, policy_dir: Path) -> None:
    (policy_dir / "zz_typo.cedar").write_text(
        'forbid (principal, action, resource) when { principal.rolez.contains("x") };\n'
    )
    code, out, err = _run(tmp_path, str(policy_dir))
    assert code == 1
    assert "rolez" in out + err
