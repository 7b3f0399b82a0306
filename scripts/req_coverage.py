"""How many collected tests prove each requirement of REQUIREMENTS.md (parametrised cases count
once per case). Usage: python scripts/req_coverage.py [REQUIREMENTS.md]"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest


class _Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            for mark in item.iter_markers("req"):
                for req in mark.args:
                    self.counts[req] = self.counts.get(req, 0) + 1


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "../shared/REQUIREMENTS.md")
    known = re.findall(r"^\| ([A-Z]\d{1,2}) \| (.+?) \|", path.read_text(), re.M)
    counter = _Counter()
    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[counter])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        print(f"collection failed ({code})")
        return 1
    print()
    uncovered = 0
    for rid, text in known:
        n = counter.counts.get(rid, 0)
        uncovered += n == 0
        print(f"{rid:4} {n:4}  {text[:90]}")
    print(f"\n{len(known) - uncovered} of {len(known)} requirements have at least one test")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
