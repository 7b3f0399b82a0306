"""Collecting checks per area, and running them so that one broken check never stops the rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from garrison.doctor.checklist import CHECKLIST
from garrison.doctor.model import About, Area, Check, CheckFn, Outcome, Skip, Spec, Status

if TYPE_CHECKING:
    from garrison.doctor.context import DoctorContext


class Checks:
    """The checks of one area, in the order they were declared (``@checks.add(id)``), each as
    ``checklist`` writes it down."""

    def __init__(self, area: Area, checklist: Mapping[str, About] = CHECKLIST) -> None:
        self.area = area
        self.checklist = checklist
        self.specs: list[Spec] = []

    def add(self, id: str) -> Callable[[CheckFn], CheckFn]:
        about = self.checklist[id]

        def register(fn: CheckFn) -> CheckFn:
            spec = Spec(
                id,
                self.area,
                about.title,
                about.seeds,
                about.reqs,
                about.fix,
                fn,
                about.live,
                about.asks_target,
            )
            self.specs.append(spec)
            return fn

        return register


def run_spec(spec: Spec, ctx: DoctorContext) -> Check:
    """Run one check; ``Skip`` becomes SKIP and any other error FAIL with its message (no trace)."""
    try:
        outcome = spec.run(ctx)
    except Skip as exc:
        outcome = Outcome(Status.SKIP, str(exc))
    except Exception as exc:
        outcome = Outcome(Status.FAIL, f"check errored: {_describe(exc)}")
    fix = ""
    if outcome.status in (Status.FAIL, Status.WARN):
        fix = outcome.fix or spec.fix
    return Check(
        spec.id,
        spec.area,
        spec.title,
        spec.seeds,
        spec.requirements,
        outcome.status,
        outcome.finding,
        fix,
        spec.scope_for(ctx),
    )


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text[:300]}" if text else name
