"""The dependency audit fails on known vulnerabilities and never reports a skipped audit as a pass
(O5)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "scripts" / "audit_report.py"
    spec = importlib.util.spec_from_file_location("audit_report", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load()


@pytest.mark.req("O5")
def test_a_known_vulnerability_fails_the_build() -> None:
    code, message = report.verdict(
        {
            "dependencies": [
                {"name": "jinja2", "version": "2.10", "vulns": [{"id": "PYSEC-2019-217"}]},
                {"name": "rich", "version": "13.9.0", "vulns": []},
            ]
        }
    )
    assert code == 1
    assert "VULNERABLE jinja2 2.10: PYSEC-2019-217" in message
    assert "FAILED" in message


@pytest.mark.req("O5")
def test_nothing_audited_is_a_skip_with_its_reason_not_a_pass() -> None:
    deps = [
        {
            "name": n,
            "version": "1",
            "skip_reason": "Dependency not found on PyPI and could not be audited",
        }
        for n in ("alembic", "rich")
    ]
    code, message = report.verdict({"dependencies": deps})
    assert code == 0
    assert message.startswith("pip-audit: SKIPPED (not a pass)")
    assert "0 of 2" in message
    assert "could not be audited" in message
    assert "no known vulnerabilities" not in message


@pytest.mark.req("O5")
def test_no_report_at_all_is_a_skip() -> None:
    code, message = report.verdict(None, "ConnectionError: pypi.org unreachable", 1)
    assert code == 0
    assert "SKIPPED (not a pass)" in message
    assert "ConnectionError" in message


@pytest.mark.req("O5")
def test_a_clean_audit_passes_and_names_what_was_not_audited() -> None:
    code, message = report.verdict(
        {
            "dependencies": [
                {"name": "rich", "version": "13.9.0", "vulns": []},
                {"name": "garrison-local", "version": "0", "skip_reason": "not on PyPI"},
            ]
        }
    )
    assert code == 0
    assert "1 package(s) audited, no known vulnerabilities" in message
    assert "garrison-local" in message
