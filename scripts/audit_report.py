"""Turn pip-audit's JSON report into a verdict (O5): fail on any known vulnerability; when nothing
could be audited (the vulnerability service is unreachable), say SKIPPED, never pass."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def verdict(
    report: dict[str, Any] | None, stderr_tail: str = "", exit_code: int = 0
) -> tuple[int, str]:
    """(exit code, message) for a pip-audit JSON report (None when it wrote none)."""
    if report is None or not isinstance(report.get("dependencies"), list):
        why = stderr_tail or "no output"
        return (
            0,
            f"pip-audit: SKIPPED (not a pass): it produced no report (exit {exit_code}): {why}",
        )
    deps: list[dict[str, Any]] = report["dependencies"]
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    if vulnerable:
        lines = [
            f"VULNERABLE {d['name']} {d['version']}: {', '.join(v['id'] for v in d['vulns'])}"
            for d in vulnerable
        ]
        lines.append(f"pip-audit: FAILED: {len(vulnerable)} vulnerable package(s)")
        return 1, "\n".join(lines)
    audited = len(deps) - len(skipped)
    if audited == 0:
        reason = skipped[0]["skip_reason"] if skipped else "no dependencies"
        return 0, (
            "pip-audit: SKIPPED (not a pass): the vulnerability service could not be reached; "
            f"0 of {len(deps)} packages audited ({reason})"
        )
    note = (
        f"; {len(skipped)} not audited: {', '.join(d['name'] for d in skipped)}" if skipped else ""
    )
    return 0, f"pip-audit: {audited} package(s) audited, no known vulnerabilities{note}"


def main(argv: list[str]) -> int:
    report_path, stderr_path, exit_code = Path(argv[1]), Path(argv[2]), int(argv[3])
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        report = None
    err = stderr_path.read_text().strip().splitlines() if stderr_path.exists() else []
    code, message = verdict(report, err[-1] if err else "", exit_code)
    print(message)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
