"""``garrison doctor`` (O4): the seed guides' checklists, as checks of a live deployment.

Each check comes from a checklist item of one or more guides in ``seeds/`` and names the
requirement IDs it covers. Configuration and storage checks always run (from the settings ``serve``
reads); HTTP checks run against ``--url``. A check reports PASS, WARN, FAIL or SKIP (with the
reason) and, when not passing, the exact fix. ``run`` never raises for a check that errors: that
check is a FAIL carrying the error, and the rest still run.
"""

from __future__ import annotations

from collections.abc import Iterable

from garrison.doctor import audit, edge, identity, operations, tenancy, tokens
from garrison.doctor.context import DoctorContext
from garrison.doctor.model import Area, Check, Spec, Status
from garrison.doctor.registry import run_spec

__all__ = ["Area", "Check", "DoctorContext", "Spec", "Status", "catalogue", "exit_code", "run"]


def catalogue() -> tuple[Spec, ...]:
    """Every check, grouped by area in report order."""
    modules = (identity, tokens, tenancy, edge, audit, operations)
    return tuple(spec for module in modules for spec in module.checks.specs)


def run(ctx: DoctorContext, specs: Iterable[Spec] | None = None) -> list[Check]:
    """Run ``specs`` (default: all) in order; the context is closed afterwards."""
    try:
        return [run_spec(spec, ctx) for spec in (catalogue() if specs is None else specs)]
    finally:
        ctx.close()


def exit_code(results: Iterable[Check]) -> int:
    """1 when any check failed; a WARN or SKIP never fails the run."""
    return 1 if any(r.status is Status.FAIL for r in results) else 0
