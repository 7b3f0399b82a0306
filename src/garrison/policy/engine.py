"""Cedar policies as compiled, validated bundles (Z3): parsed once, evaluated per decision.

Garrison's base policies and the schema of every request (``defaults/garrison.cedar`` and
``defaults/schema.cedarschema``) are always in force: they hold the invariants every deployment
relies on (registration, authentication, tenancy, scopes, platform-only actions, roles), so no
policy directory can leave them out or reshape the request. A deployment's policy directory adds
``*.cedar`` files (read in name order) to them; it holds no schema of its own. A bundle is only ever
built from policies that validate against the schema, so a broken edit is refused at start and a
broken reload keeps the running bundle. Evaluation always
passes the schema; a policy that errors while evaluating turns the answer into a deny with a
``policy error`` reason, because Cedar would otherwise just skip an erroring ``forbid``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from garrison.errors import ConfigError

ACTION_UID = {"type": "Garrison::Action", "id": "call"}
_ERRORED_POLICY = re.compile(r"policy `([^`]+)`")

Fingerprint = tuple[tuple[str, int, int], ...]


class PolicyLoadError(ConfigError):
    """Policies that cannot be used: unreadable, unparsable or failing schema validation."""


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    order: int
    name: str  # the @id annotation, or Cedar's positional id
    forbid: bool
    reason: str | None  # the @reason template of a forbid


@dataclass(frozen=True, slots=True)
class Outcome:
    allow: bool
    determining: tuple[PolicyInfo, ...]  # the forbids behind a deny, ordered as in the source
    errored: tuple[str, ...]  # names of policies whose evaluation failed


@dataclass(frozen=True, slots=True)
class PolicyBundle:
    directory: Path
    policies: cedarpy.PolicySet
    schema: cedarpy.Schema
    info: Mapping[str, PolicyInfo]
    digest: str
    fingerprint: Fingerprint

    def evaluate(self, request: dict[str, Any], entities: list[dict[str, Any]]) -> Outcome:
        try:
            result = cedarpy.is_authorized(request, self.policies, entities, schema=self.schema)
        except Exception as exc:  # a malformed request is a deny, never a crash
            return Outcome(False, (), (f"request rejected by the engine: {type(exc).__name__}",))
        errored = tuple(self._errored(result.diagnostics.errors))
        found = (self.info.get(pid) for pid in result.diagnostics.reasons)
        determining = sorted(
            (p for p in found if p is not None and p.forbid and not result.allowed),
            key=lambda p: p.order,
        )
        return Outcome(result.allowed and not errored, tuple(determining), errored)

    def _errored(self, errors: Sequence[str]) -> Iterator[str]:
        for text in errors:
            found = _ERRORED_POLICY.search(text)
            info = self.info.get(found.group(1)) if found else None
            yield info.name if info is not None else "evaluation failed"


DEFAULTS_DIR = Path(__file__).parent / "defaults"
BASE_POLICIES = DEFAULTS_DIR / "garrison.cedar"
SCHEMA = DEFAULTS_DIR / "schema.cedarschema"


def fingerprint(directory: Path) -> Fingerprint:
    """What changed on disk: name, mtime and size of every policy and schema file."""
    entries: list[tuple[str, int, int]] = []
    for path in _policy_files(directory) + _schema_files(directory):
        stat = path.stat()
        entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


def _policy_files(directory: Path) -> list[Path]:
    """The directory's own policies; the base set is added apart (and once) by ``load_bundle``."""
    return [p for p in sorted(directory.glob("*.cedar")) if p.resolve() != BASE_POLICIES.resolve()]


def _schema_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.cedarschema"))


def load_bundle(directory: Path) -> PolicyBundle:
    """Read, parse and validate a policy directory; ``PolicyLoadError`` lists every problem."""
    where = f"policy directory {directory}"
    if not directory.is_dir():
        raise PolicyLoadError([f"{where}: does not exist"])
    stamp = fingerprint(directory)
    schemas, files = _schema_files(directory), _policy_files(directory)
    problems = [
        f"{where}: {path.name}: the request schema is Garrison's own; remove this file"
        for path in schemas
        if path.resolve() != SCHEMA.resolve()
    ]
    problems += [
        f"{where}: {path.name}: Garrison's base policies are always applied; remove this copy"
        for path in files
        if path.name == BASE_POLICIES.name
    ]
    if problems:
        raise PolicyLoadError(problems)
    schema_text = SCHEMA.read_text(encoding="utf-8")
    policy_text = "\n".join(path.read_text(encoding="utf-8") for path in [BASE_POLICIES, *files])
    schema, policies, info = _compile(schema_text, policy_text, where)
    digest = hashlib.sha256(
        json.dumps([schema_text, policy_text]).encode(), usedforsecurity=False
    ).hexdigest()
    return PolicyBundle(directory, policies, schema, info, digest, stamp)


def _compile(
    schema_text: str, policy_text: str, where: str
) -> tuple[cedarpy.Schema, cedarpy.PolicySet, dict[str, PolicyInfo]]:
    try:
        schema = cedarpy.Schema.from_str(schema_text)
    except ValueError as exc:
        raise PolicyLoadError([f"{where}: schema does not parse: {exc}"]) from None
    try:
        policies = cedarpy.PolicySet.from_str(policy_text)
        est = json.loads(cedarpy.policies_to_json_str(policy_text))
    except ValueError as exc:
        raise PolicyLoadError([f"{where}: policies do not parse: {exc}"]) from None
    result = cedarpy.validate_policies(policy_text, schema)
    if not result.validation_passed:
        raise PolicyLoadError([f"{where}: {error}" for error in result.errors])
    return schema, policies, _policy_info(est.get("staticPolicies", {}))


def _policy_info(static: Mapping[str, Any]) -> dict[str, PolicyInfo]:
    def order(pid: str) -> tuple[int, str]:
        digits = pid.removeprefix("policy")
        return (int(digits), pid) if digits.isdigit() else (1 << 30, pid)

    info: dict[str, PolicyInfo] = {}
    for index, pid in enumerate(sorted(static, key=order)):
        notes = static[pid].get("annotations", {})
        forbid = static[pid].get("effect") == "forbid"
        reason = notes.get("reason") if forbid else None
        info[pid] = PolicyInfo(index, notes.get("id") or pid, forbid, reason)
    return info
