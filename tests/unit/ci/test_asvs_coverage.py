"""The ASVS coverage gate (scripts/asvs_coverage.py) fails on a missing or unknown ID, on a test
node that does not exist, on an applicable row without evidence, and on a mapped test that was
skipped or failed in the real run's JUnit report (O4, Z4)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "scripts" / "asvs_coverage.py"
    spec = importlib.util.spec_from_file_location("asvs_coverage", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["asvs_coverage"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gate = _load()

CHECKLIST = """
| ID | L | What it asks | Likely |
|----|---|--------------|--------|
| 9.1.1 | 1 | Check the signature first. | applies |
| 9.1.2 | 1 | Algorithm allow-list. | applies |
| 6.6.1 | 2 | SMS OTP. | N/A?: no SMS |
"""
NODE_A = "tests/unit/tokens/test_a.py::test_signature"
NODE_B = "tests/unit/tokens/test_a.py::test_alg"
COLLECTED = {
    NODE_A: frozenset(),
    f"{NODE_B}[RS256]": frozenset({"9.1.2"}),
    f"{NODE_B}[PS256]": frozenset({"9.1.2"}),
}


def _doc(*rows: str) -> str:
    return "| ID | Evidence |\n|----|----|\n" + "\n".join(rows) + "\n"


GOOD = _doc(
    f"| 9.1.1 | `{NODE_A}` |",
    "| 9.1.2 | marked |",
    "| 6.6.1 | N/A: no SMS or voice OTP is offered |",
)


@pytest.mark.req("O4")
def test_a_complete_mapping_passes_with_counts() -> None:
    report = gate.verdict(CHECKLIST, GOOD, COLLECTED)
    assert report.errors == []
    assert report.code == 0
    assert (report.applicable, report.not_applicable, report.passing) == (2, 1, 2)
    assert report.mapped_tests == 3  # the marked test counts once per case
    assert "2 applicable, 2 mapped to collected tests" in report.lines(junit=False)[-2]


@pytest.mark.req("O4")
def test_a_missing_id_fails() -> None:
    doc = _doc(f"| 9.1.1 | `{NODE_A}` |", "| 6.6.1 | N/A: no SMS |")
    report = gate.verdict(CHECKLIST, doc, COLLECTED)
    assert report.code == 1
    assert "9.1.2: missing from docs/asvs.md" in report.errors


@pytest.mark.req("O4")
def test_an_unknown_id_in_the_doc_or_a_marker_fails() -> None:
    report = gate.verdict(CHECKLIST, GOOD + "| 9.9.9 | marked |\n", COLLECTED)
    assert "9.9.9: not an ID of the checklist" in report.errors
    stray = {**COLLECTED, "tests/x.py::test_y": frozenset({"1.2.3"})}
    report = gate.verdict(CHECKLIST, GOOD, stray)
    assert report.errors == ["tests/x.py::test_y: @pytest.mark.asvs('1.2.3') is not a checklist ID"]


@pytest.mark.req("O4")
def test_an_unknown_node_fails() -> None:
    doc = GOOD.replace(NODE_A, "tests/unit/tokens/test_a.py::test_renamed_away")
    report = gate.verdict(CHECKLIST, doc, COLLECTED)
    assert report.code == 1
    assert "9.1.1: tests/unit/tokens/test_a.py::test_renamed_away is not a collected test" in (
        report.errors
    )


@pytest.mark.req("O4")
def test_an_applicable_row_without_evidence_fails() -> None:
    unmarked = {k: frozenset[str]() for k in COLLECTED}
    report = gate.verdict(CHECKLIST, GOOD, unmarked)
    assert report.errors == [
        '9.1.2: applicable, says marked but no test carries @pytest.mark.asvs("9.1.2")'
    ]
    report = gate.verdict(
        CHECKLIST,
        GOOD.replace("| 6.6.1 | N/A: no SMS or voice OTP is offered |", "| 6.6.1 | N/A: |"),
        COLLECTED,
    )
    assert report.errors == ["6.6.1: N/A without a reason"]


@pytest.mark.req("O4")
def test_pending_rows_fail_only_when_strict() -> None:
    doc = GOOD.replace("| 9.1.2 | marked |", "| 9.1.2 | marked; pending: issue 10 MFA/lifecycle |")
    unmarked = {k: frozenset[str]() for k in COLLECTED}
    report = gate.verdict(CHECKLIST, doc, unmarked)
    assert report.errors == []
    assert report.pending == 1
    strict = gate.verdict(CHECKLIST, doc, unmarked, strict=True)
    assert strict.code == 1
    assert strict.errors[0].startswith("9.1.2: still pending with ASVS_STRICT=1")


def _junit(tmp_path: Path, body: str) -> Path:
    """A real JUnit report: pytest run on a small test file of its own."""
    suite = tmp_path / "suite"
    (suite / "tests").mkdir(parents=True)
    (suite / "tests" / "test_a.py").write_text(textwrap.dedent(body))
    report = tmp_path / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(suite),
            "-c",
            os.devnull,
            f"--junitxml={report}",
            "tests/test_a.py",
        ],
        cwd=suite,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return report


@pytest.mark.req("O4")
def test_a_skipped_or_failed_mapped_test_fails(tmp_path: Path) -> None:
    report_path = _junit(
        tmp_path,
        """
        import pytest

        def test_signature():
            assert True

        @pytest.mark.parametrize("alg", ["RS256", "PS256"])
        def test_alg(alg):
            if alg == "PS256":
                pytest.skip("no PS256 here")
        """,
    )
    collected = {
        "tests/test_a.py::test_signature": frozenset[str](),
        "tests/test_a.py::test_alg[RS256]": frozenset({"9.1.2"}),
        "tests/test_a.py::test_alg[PS256]": frozenset({"9.1.2"}),
    }
    outcomes = gate.junit_outcomes(report_path, list(collected))
    assert outcomes == {
        "tests/test_a.py::test_signature": "passed",
        "tests/test_a.py::test_alg[RS256]": "passed",
        "tests/test_a.py::test_alg[PS256]": "skipped",
    }
    doc = GOOD.replace(NODE_A, "tests/test_a.py::test_signature")
    report = gate.verdict(CHECKLIST, doc, collected, outcomes)
    assert report.code == 1
    assert report.errors == [
        "9.1.2: mapped tests not passing: tests/test_a.py::test_alg[PS256] skipped"
    ]
    assert report.passing == 1
    # a mapped test that did not run at all is no proof either
    report = gate.verdict(CHECKLIST, doc, collected, {})
    assert "tests/test_a.py::test_signature did not run" in report.errors[0]


@pytest.mark.req("O4")
def test_junit_addresses_follow_pytest() -> None:
    assert gate.junit_address("tests/unit/x.py::test_y[a/b::c]") == (
        "tests.unit.x",
        "test_y[a/b::c]",
    )
    assert gate.junit_address("tests/x.py::TestC::test_y") == ("tests.x.TestC", "test_y")
