"""What a check is and what it found (O4).

A ``Spec`` is a check as written down (its ``About`` in ``checklist.CHECKLIST``: a title, the seed
guides and requirement IDs it comes from, the fix an operator applies when it does not pass) with
its id, the area it belongs to and the function that looks. Running a spec gives a ``Check``: the spec's identity plus a status and a one-line finding.
Check functions return an ``Outcome`` through ``passed`` / ``warned`` / ``failed`` / ``skipped``, or
raise ``Skip`` when something they depend on is missing (no ``--url``, no database).

Every result has a ``scope``: ``target`` when it was asked of the ``--url`` deployment over HTTP,
``local`` when it judged the configuration, database or files of the machine the doctor runs on
(which, with ``--url``, need not be the target's). A live check is ``target``, any other ``local``;
a check marked ``asks_target`` (``operations.production-mode``) asks the target when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from garrison.doctor.context import DoctorContext


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a status word, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class Area(StrEnum):
    """The report's groups, in the order they are printed."""

    IDENTITY = "identity"
    TOKENS = "tokens"
    TENANCY = "tenancy"
    EDGE = "edge"
    AUDIT = "audit"
    OPERATIONS = "operations"


#: What a result judged: the ``--url`` deployment, or this machine's configuration and storage.
Scope = Literal["local", "target"]


class Skip(Exception):
    """Raised by a check (or a context accessor) when it cannot run here; the message says why."""


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    finding: str
    fix: str | None = None  # overrides the spec's fix when the finding calls for a specific one


def passed(finding: str) -> Outcome:
    return Outcome(Status.PASS, finding)


def warned(finding: str, fix: str | None = None) -> Outcome:
    return Outcome(Status.WARN, finding, fix)


def failed(finding: str, fix: str | None = None) -> Outcome:
    return Outcome(Status.FAIL, finding, fix)


def skipped(reason: str) -> Outcome:
    return Outcome(Status.SKIP, reason)


def setting_on(on: bool, name: str, off: str) -> Outcome:
    """The judgement of a setting that must be on: PASS ``NAME is on``, or FAIL saying what ``off``
    leaves open."""
    return passed(f"{name} is on") if on else failed(f"{name} is off: {off}")


CheckFn = Callable[["DoctorContext"], Outcome]


@dataclass(frozen=True, slots=True)
class About:
    """A check as the checklist writes it down (every part of its ``Spec`` but the id, area and
    function)."""

    title: str
    _: KW_ONLY
    seeds: tuple[str, ...]
    reqs: tuple[str, ...]
    fix: str
    live: bool = False  # needs ``--url``
    asks_target: bool = False  # judges the ``--url`` deployment when given one, else this machine


@dataclass(frozen=True, slots=True)
class Spec:
    id: str
    area: Area
    title: str
    seeds: tuple[str, ...]
    requirements: tuple[str, ...]
    fix: str
    run: CheckFn
    live: bool = False  # needs ``--url``
    asks_target: bool = False  # judges the ``--url`` deployment when given one, else this machine

    def scope_for(self, ctx: DoctorContext) -> Scope:
        if self.live or (self.asks_target and ctx.base_url is not None):
            return "target"
        return "local"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    id: str
    area: Area
    title: str
    seeds: tuple[str, ...]
    requirements: tuple[str, ...]
    status: Status
    finding: str
    fix: str  # empty when the check passed or was skipped
    scope: Scope = "local"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "area": str(self.area),
            "title": self.title,
            "seeds": list(self.seeds),
            "requirements": list(self.requirements),
            "status": str(self.status),
            "finding": self.finding,
            "fix": self.fix,
        }
