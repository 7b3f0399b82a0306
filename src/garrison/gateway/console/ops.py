"""The operator's pages: policies, "why was this denied", the doctor, the vault (Z4, O4, V3).

Each page is the CLI command's own code: ``configured_policy_tests`` is ``garrison policy test``
without a PATH, ``doctor.run`` on the server's settings is ``garrison doctor`` without ``--url``
(the local checks; the live ones skip), ``vault_status`` is ``garrison vault status``. The
"why was this denied" form is ``POST /v1/decide``: the same admission (``policy.decide``, and
``policy.decide.other`` to ask about another subject) and the same ``explain``. Which of them a
caller may open is the policy's ``admin.policy.read``, ``admin.doctor.read`` and
``admin.vault.status`` (platform-wide: a tenant admin is refused, as for the signing keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from garrison import doctor
from garrison.admission import Admission
from garrison.app import configured_policy_tests, vault_status
from garrison.doctor import report as doctor_report
from garrison.errors import ValidationError
from garrison.gateway.console.pages import form, one, page, render, validated, words
from garrison.gateway.requests import admit, services
from garrison.gateway.routes.decide import DecideBody, explain
from garrison.policy import Decision

_MAX_PARAMS = 64


# -- policies ------------------------------------------------------------------------------------
@page
async def policies_page(request: Request) -> Response:
    actor = await admit(request, "admin.policy.read")
    svc = services(request)
    report = await anyio.to_thread.run_sync(configured_policy_tests, svc.settings)
    return render(
        request,
        "policies.html",
        actor=actor,
        section="policies",
        title="Policies",
        running=svc.authorizer.version,
        report=report,
        actions=len(svc.authorizer.registry.actions),
        roles=sorted(svc.authorizer.registry.roles),
    )


# -- why was this denied -------------------------------------------------------------------------
_EMPTY = dict.fromkeys(
    (
        "action",
        "subject_id",
        "subject_roles",
        "subject_tenant",
        "subject_amr",
        "resource_type",
        "resource_id",
        "resource_tenant",
        "resource_owner",
        "params",
    ),
    "",
)


def _decide_page(
    request: Request,
    actor: Admission,
    *,
    asked: Mapping[str, str] | None = None,
    decision: Decision | None = None,
    status: int = 200,
    error: Exception | None = None,
) -> Response:
    return render(
        request,
        "decide.html",
        actor=actor,
        status=status,
        error=error,
        section="policies",
        title="Why was this denied?",
        asked={**_EMPTY, **(asked or {})},
        decision=decision,
    )


@page
async def decide_page(request: Request) -> Response:
    actor = await admit(request, "policy.decide")
    return _decide_page(request, actor)


def _params(text: str) -> dict[str, str] | None:
    """``name=value`` lines; ``None`` when there are none."""
    found: dict[str, str] = {}
    bad: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            bad.append(f"params: {line.strip()[:60]!r} is not name=value")
            continue
        found[name.strip()] = value.strip()
    if bad:
        raise ValidationError("the parameters do not read as name=value lines", reasons=bad)
    if len(found) > _MAX_PARAMS:
        raise ValidationError("too many parameters", reasons=[f"params: at most {_MAX_PARAMS}"])
    return found or None


def _question(fields: Mapping[str, list[str]]) -> tuple[dict[str, str], dict[str, Any]]:
    """The form as typed, and the ``/v1/decide`` body it asks."""
    asked = {n: one(fields, n).strip() for n in _EMPTY}
    asked["params"] = one(fields, "params")
    body: dict[str, Any] = {"action": asked["action"]}
    if asked["subject_id"]:
        body["subject"] = {
            "id": asked["subject_id"],
            "roles": words(asked["subject_roles"]),
            "tenant": asked["subject_tenant"] or None,
            "amr": words(asked["subject_amr"]),
        }
    resource = {k: asked[f"resource_{k}"] or None for k in ("type", "id", "tenant", "owner")}
    if any(resource.values()):
        body["resource"] = resource
    params = _params(asked["params"])
    if params is not None:
        body["params"] = params
    return asked, body


@page
async def decide(request: Request) -> Response:
    actor = await admit(request, "policy.decide")
    fields = await form(request)
    asked, raw = _question(fields)
    try:
        body = validated(DecideBody, raw)
    except ValidationError as exc:
        return _decide_page(request, actor, asked=asked, status=422, error=exc)
    decision = await explain(request, actor, body)
    return _decide_page(request, actor, asked=asked, decision=decision)


# -- doctor --------------------------------------------------------------------------------------
@page
async def doctor_page(request: Request) -> Response:
    actor = await admit(request, "admin.doctor.read")
    settings = services(request).settings
    results = await anyio.to_thread.run_sync(lambda: doctor.run(doctor.DoctorContext(settings)))
    groups = [(area, [r for r in results if r.area is area]) for area in doctor.Area]
    counts = doctor_report.summary(results)
    return render(
        request,
        "doctor.html",
        actor=actor,
        section="doctor",
        title="Doctor",
        groups=[(area, rows) for area, rows in groups if rows],
        counts=counts,
        ok=not counts["fail"],
    )


# -- vault ---------------------------------------------------------------------------------------
@page
async def vault_page(request: Request) -> Response:
    actor = await admit(request, "admin.vault.status")
    status = await anyio.to_thread.run_sync(vault_status, services(request))
    return render(request, "vault.html", actor=actor, section="vault", title="Vault", vault=status)


def routes() -> list[BaseRoute]:
    return [
        Route("/console/policies", policies_page, methods=["GET"]),
        Route("/console/decide", decide_page, methods=["GET"]),
        Route("/console/decide", decide, methods=["POST"]),
        Route("/console/doctor", doctor_page, methods=["GET"]),
        Route("/console/vault", vault_page, methods=["GET"]),
    ]
