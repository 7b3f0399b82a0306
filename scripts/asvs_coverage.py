"""Checks docs/asvs.md against the OWASP ASVS 5.0 L1+L2 checklist (issue 10).

Every ID of the checklist has one row in the doc, and the doc has no other ID. A row's last cell is
its evidence: ``N/A: <reason>``, or the tests that prove it: explicit pytest node ids in backticks
(`` `tests/x.py::test_name` ``; a parametrised test stands for all its cases) and/or the word
``marked`` (every test carrying ``@pytest.mark.asvs("<ID>")``). ``pending: <why>`` marks a row
whose tests are being written elsewhere: it passes only while ``ASVS_STRICT`` is not ``1``.

Fails (exit 1) when an ID is missing or unknown, a named node does not exist, an ``asvs`` marker
names an unknown ID, an applicable row has no evidence, or, given the JUnit XML of the real run
(``--junit PATH``), a mapped test was skipped, failed or did not run.

Usage: python scripts/asvs_coverage.py [--doc docs/asvs.md] [--checklist ../shared/ASVS-L2.md]
                                       [--junit .pytest-junit.xml]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROW = re.compile(r"^\|\s*(\d+\.\d+\.\d+)\s*\|(.*)\|\s*$", re.M)
NODE = re.compile(r"`(tests/[^`\s]+?\.py::[^`\s]+)`")
MARKED = re.compile(r"\bmarked\b")
#: test node id -> the ASVS IDs its ``asvs`` markers name
Collected = Mapping[str, frozenset[str]]
#: JUnit outcome per node id: "passed", "skipped" or "failed"
Outcomes = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Row:
    asvs_id: str
    evidence: str

    @property
    def not_applicable(self) -> bool:
        return self.evidence.startswith("N/A:")

    @property
    def pending(self) -> bool:
        return "pending:" in self.evidence


@dataclass(slots=True)
class Report:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    applicable: int = 0
    not_applicable: int = 0
    pending: int = 0
    passing: int = 0  # applicable rows whose every mapped test passed in the JUnit run
    mapped_tests: int = 0

    @property
    def code(self) -> int:
        return 1 if self.errors else 0

    def lines(self, *, junit: bool) -> list[str]:
        out = [f"FAIL {e}" for e in self.errors] + [f"note {n}" for n in self.notes]
        proven = "mapped to passing tests" if junit else "mapped to collected tests (no --junit)"
        out.append(
            f"ASVS L1+L2: {self.applicable + self.not_applicable} IDs; "
            f"{self.applicable} applicable, {self.passing} {proven}, {self.pending} pending, "
            f"{self.not_applicable} N/A; {self.mapped_tests} test cases mapped"
        )
        out.append("asvs-coverage: FAILED" if self.errors else "asvs-coverage: OK")
        return out


def checklist_ids(text: str) -> list[str]:
    """The IDs of the shared checklist's rows (``| 6.2.1 | 1 | ...``), in order."""
    return [m.group(1) for m in ROW.finditer(text)]


def doc_rows(text: str) -> list[Row]:
    """The rows of docs/asvs.md: the ID and the last cell (the evidence)."""
    rows = []
    for match in ROW.finditer(text):
        cells = [c.strip() for c in match.group(2).split("|")]
        rows.append(Row(match.group(1), cells[-1] if cells else ""))
    return rows


def _cases(node: str, collected: Collected) -> list[str]:
    """The collected cases a named node stands for (itself, or each of its parametrisations)."""
    if node in collected:
        return [node]
    return [c for c in collected if c.startswith(node + "[")]


def verdict(
    checklist: str,
    doc: str,
    collected: Collected,
    outcomes: Outcomes | None = None,
    *,
    strict: bool = False,
) -> Report:
    report = Report()
    known = checklist_ids(checklist)
    rows = doc_rows(doc)
    if not known:
        report.errors.append("the checklist has no ID rows")
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.asvs_id] = seen.get(row.asvs_id, 0) + 1
    report.errors += [f"{i}: missing from docs/asvs.md" for i in known if i not in seen]
    report.errors += [f"{i}: not an ID of the checklist" for i in seen if i not in known]
    report.errors += [f"{i}: {n} rows in docs/asvs.md (one each)" for i, n in seen.items() if n > 1]
    known_set = set(known)
    for node, ids in collected.items():
        for unknown in sorted(ids - known_set):
            report.errors.append(f"{node}: @pytest.mark.asvs({unknown!r}) is not a checklist ID")
    marked: dict[str, list[str]] = {}
    for node, ids in collected.items():
        for asvs_id in ids:
            marked.setdefault(asvs_id, []).append(node)
    for row in rows:
        if row.asvs_id not in known_set:
            continue
        _judge(row, collected, marked, outcomes, strict, report)
    return report


def _judge(
    row: Row,
    collected: Collected,
    marked: Mapping[str, list[str]],
    outcomes: Outcomes | None,
    strict: bool,
    report: Report,
) -> None:
    rid, evidence = row.asvs_id, row.evidence
    named = NODE.findall(evidence)
    if row.not_applicable:
        report.not_applicable += 1
        if not evidence[len("N/A:") :].strip():
            report.errors.append(f"{rid}: N/A without a reason")
        if named or MARKED.search(evidence):
            report.errors.append(f"{rid}: N/A and evidence at once; pick one")
        return
    report.applicable += 1
    cases: list[str] = []
    for node in named:
        found = _cases(node, collected)
        if not found:
            report.errors.append(f"{rid}: {node} is not a collected test")
        cases += found
    if MARKED.search(evidence):
        cases += marked.get(rid, [])
    cases = sorted(set(cases))
    report.mapped_tests += len(cases)
    if row.pending:
        report.pending += 1
        if strict:
            report.errors.append(f"{rid}: still pending with ASVS_STRICT=1 ({evidence})")
            return
        if not cases:
            report.notes.append(f"{rid}: pending, no test yet ({evidence})")
            return
    if not cases:
        why = "says marked but no test carries" if MARKED.search(evidence) else "no test and no"
        detail = f'@pytest.mark.asvs("{rid}")' if "carries" in why else "N/A reason"
        report.errors.append(f"{rid}: applicable, {why} {detail}")
        return
    if outcomes is None:
        report.passing += 1
        return
    bad = [f"{c} {outcomes.get(c, 'did not run')}" for c in cases if outcomes.get(c) != "passed"]
    if bad:
        report.errors.append(f"{rid}: mapped tests not passing: {'; '.join(bad)}")
    else:
        report.passing += 1


# -- JUnit -------------------------------------------------------------------------------------
def junit_address(nodeid: str) -> tuple[str, str]:
    """(classname, name) under which pytest's junitxml reports ``nodeid`` (its
    ``mangle_test_address``: path dots, ``.py`` dropped, classes joined, parameters kept)."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def junit_outcomes(path: Path, nodes: Sequence[str]) -> dict[str, str]:
    """The outcome of each of ``nodes`` in a JUnit XML report (missing ones are left out)."""
    by_address: dict[tuple[str, str], str] = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    for case in ET.parse(path).iter("testcase"):  # noqa: S314 - our own pytest run's report
        address = (case.get("classname", ""), case.get("name", ""))
        tags = {child.tag for child in case}
        outcome = (
            "failed"
            if tags & {"failure", "error"}
            else "skipped"
            if "skipped" in tags
            else "passed"
        )
        if rank[outcome] >= rank[by_address.get(address, "passed")]:
            by_address[address] = outcome
    found: dict[str, str] = {}
    for node in nodes:
        seen = by_address.get(junit_address(node))
        if seen is not None:
            found[node] = seen
    return found


# -- collection --------------------------------------------------------------------------------
class _Collector:
    def __init__(self) -> None:
        self.items: dict[str, frozenset[str]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            # ``V6.5.1`` and ``6.5.1`` name the same row
            ids = {
                str(a).removeprefix("V") for mark in item.iter_markers("asvs") for a in mark.args
            }
            self.items[item.nodeid] = frozenset(ids)


def collect(args: Sequence[str] = ()) -> dict[str, frozenset[str]] | None:
    collector = _Collector()
    code = pytest.main(
        ["--collect-only", "-q", "-p", "no:cacheprovider", *args], plugins=[collector]
    )
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return None
    return collector.items


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--doc", type=Path, default=Path("docs/asvs.md"))
    parser.add_argument("--checklist", type=Path, default=Path("../shared/ASVS-L2.md"))
    parser.add_argument("--junit", type=Path, help="JUnit XML of the real pytest run")
    args = parser.parse_args(argv)
    for path in (args.doc, args.checklist, args.junit):
        if path is not None and not path.is_file():
            print(f"asvs-coverage: {path} not found", file=sys.stderr)
            return 2
    collected = collect()
    if collected is None:
        print("asvs-coverage: test collection failed", file=sys.stderr)
        return 1
    print()
    outcomes = junit_outcomes(args.junit, list(collected)) if args.junit else None
    report = verdict(
        args.checklist.read_text(),
        args.doc.read_text(),
        collected,
        outcomes,
        strict=os.environ.get("ASVS_STRICT") == "1",
    )
    print("\n".join(report.lines(junit=outcomes is not None)))
    return report.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
