"""Decision tables (Z4): the unit tests that live beside the policies they test.

A policy directory may hold ``tests/*.toml`` files of ``[[case]]`` entries::

    [[case]]
    name = "support cannot delete users"
    subject = { id = "u1", roles = ["support"], tenant = "acme" }   # omit: anonymous
    action = "user.delete"
    resource = { type = "user", id = "u2", tenant = "acme" }        # optional
    params = { reason = "gdpr" }                                    # optional
    tenant = "acme"                                                 # optional: acting tenant
    allow = false
    reasons = ["role mismatch: user.delete requires admin"]         # optional: exact, in order

``run_policy_tests`` validates the policies against the schema, then decides every case with a
fresh, uncached ``Authorizer`` (with ``REQUIRE_JWT_FOR_ADMIN`` and ``GARRISON_REQUIRE_MFA_FOR_ADMIN``
on, as in production; a subject signed in with a password and a code unless its ``amr`` says
otherwise, ``amr = ["pwd"]``); the report
lists each failure with what was expected and got. The packaged tables of Garrison's own endpoints
(``defaults/tests/own_actions.toml``) always run too, and every registered action must have at
least one row somewhere: an action nobody wrote a decision for is a failure.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from garrison.errors import ConfigError
from garrison.policy.authorizer import Authorizer
from garrison.policy.engine import DEFAULTS_DIR
from garrison.policy.model import Decision, Resource
from garrison.policy.registry import Registry
from garrison.principal import Principal, Via


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubjectSpec(_Strict):
    id: str = Field(min_length=1)
    roles: tuple[str, ...] = ()
    tenant: str | None = None
    via: Via = "jwt"
    scopes: tuple[str, ...] | None = None
    #: how the subject signed in (RFC 8176): by default with a password and a second factor, as
    #: production asks of admins (GARRISON_REQUIRE_MFA_FOR_ADMIN); ``amr = ["pwd"]`` for one factor
    amr: tuple[str, ...] = ("pwd", "otp")
    password_change_required: bool = False

    def principal(self) -> Principal:
        scopes = frozenset(self.scopes) if self.scopes is not None else None
        amr = self.amr if self.via in ("jwt", "external") else ()
        return Principal(
            self.id,
            self.id,
            frozenset(self.roles),
            self.tenant,
            self.via,
            scopes=scopes,
            amr=amr,
            password_change_required=self.password_change_required,
        )


class ResourceSpec(_Strict):
    type: str | None = None
    id: str | None = None
    tenant: str | None = None
    owner: str | None = None
    platform: bool = False


class Case(_Strict):
    name: str = Field(min_length=1)
    action: str = Field(min_length=1)
    subject: SubjectSpec | None = None
    resource: ResourceSpec | None = None
    params: dict[str, Any] | None = None
    tenant: str | None = None
    allow: bool
    reasons: tuple[str, ...] | None = None
    source: str = ""

    def decide(self, authorizer: Authorizer) -> Decision:
        return authorizer.decide(
            self.subject.principal() if self.subject else None,
            self.action,
            resource=Resource(**self.resource.model_dump()) if self.resource else None,
            params=self.params,
            tenant=self.tenant,
        )

    def mismatch(self, got: Decision) -> str | None:
        """Why ``got`` fails this case, or None when it passes."""
        if got.allow != self.allow:
            verdict = "allow" if got.allow else f"deny {list(got.reasons)}"
            return f"expected {'allow' if self.allow else 'deny'}, got {verdict}"
        if self.reasons is not None and tuple(got.reasons) != self.reasons:
            return f"expected reasons {list(self.reasons)}, got {list(got.reasons)}"
        return None


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    decision: Decision
    problem: str | None

    @property
    def passed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class TestReport:
    directory: Path
    policy_version: str | None
    problems: tuple[str, ...]  # policies that do not load, or tables that do not parse
    results: tuple[CaseResult, ...]

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failed and bool(self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "policy_version": self.policy_version,
            "ok": self.ok,
            "passed": len(self.results) - len(self.failed),
            "failed": len(self.failed),
            "problems": list(self.problems),
            "cases": [
                {
                    "name": r.case.name,
                    "source": r.case.source,
                    "passed": r.passed,
                    "allow": r.decision.allow,
                    "reasons": list(r.decision.reasons),
                    "problem": r.problem,
                }
                for r in self.results
            ],
        }


#: The tables of Garrison's own endpoints: run beside every deployment's tables.
OWN_TABLE = DEFAULTS_DIR / "tests" / "own_actions.toml"


def table_files(directory: Path) -> list[Path]:
    """``directory/tests/*.toml``, plus the packaged tables of Garrison's own actions."""
    files = sorted((directory / "tests").glob("*.toml"))
    if OWN_TABLE.name not in {f.name for f in files}:
        files.append(OWN_TABLE)
    return files


def load_cases(directory: Path) -> list[Case]:
    """Every ``[[case]]`` of the tables (``table_files``); ``ConfigError`` lists the bad ones."""
    cases: list[Case] = []
    problems: list[str] = []
    for path in table_files(directory):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        for index, raw in enumerate(data.get("case", [])):
            where = f"{path.name}[{index}]"
            try:
                cases.append(Case.model_validate({**_mapping(raw), "source": where}))
            except (PydanticValidationError, TypeError) as exc:
                problems.append(f"{where}: {_short(exc)}")
    if problems:
        raise ConfigError(problems)
    return cases


def _mapping(raw: object) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise TypeError("a case must be a table")
    return raw


def _short(exc: Exception) -> str:
    if isinstance(exc, PydanticValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return str(exc)


def run_policy_tests(registry: Registry, directory: Path) -> TestReport:
    """Validate the policies in ``directory`` and decide every case of its decision tables."""
    try:
        authorizer = Authorizer(registry, directory, cache_size=0, mfa_required_for_admin=True)
    except ConfigError as exc:
        return TestReport(directory, None, exc.problems, ())
    try:
        cases = load_cases(directory)
    except ConfigError as exc:
        return TestReport(directory, authorizer.version, exc.problems, ())
    covered = {case.action for case in cases}
    problems = tuple(
        f"action {name!r} has no row in any decision table (add a case for it)"
        for name in sorted(registry.actions)
        if name not in covered
    )
    results = []
    for case in cases:
        decision = case.decide(authorizer)
        results.append(CaseResult(case, decision, case.mismatch(decision)))
    return TestReport(directory, authorizer.version, problems, tuple(results))
