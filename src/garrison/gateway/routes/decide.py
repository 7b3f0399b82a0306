"""``POST /v1/decide``: backends ask for a decision and get its reasons (Z3, API.md).

The answer is always 200 ``{"allow", "reasons", "policy_version"}``: a deny here is an explanation,
not an enforcement, so it is audited as ``authz.decide`` rather than ``authz.deny``. Without a
``subject`` the caller asks about itself (action ``policy.decide``), in the tenant it acts in;
asking about another subject is the action ``policy.decide.other`` (admin or service), and a
tenant-bound caller may only ask about subjects of its own tenant: both decided by the policy.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from garrison.admission import Admission
from garrison.gateway.requests import admit, authorize, client, parse_body, services
from garrison.policy import Decision, Resource
from garrison.principal import Principal

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubjectBody(_Body):
    id: str = Field(min_length=1, max_length=200)
    roles: list[str] = Field(default_factory=list, max_length=64)
    tenant: str | None = Field(None, min_length=1, max_length=100)
    #: how the subject signed in (RFC 8176); none given: no second factor (A14, ASVS 6.8.4)
    amr: list[str] = Field(default_factory=list, max_length=8)


class ResourceBody(_Body):
    type: str | None = Field(None, max_length=100)
    id: str | None = Field(None, max_length=200)
    tenant: str | None = Field(None, max_length=100)
    owner: str | None = Field(None, max_length=200)


class DecideBody(_Body):
    subject: SubjectBody | None = None
    action: str = Field(min_length=1, max_length=200, pattern=_NAME)
    resource: ResourceBody | None = None
    params: dict[str, Any] | None = Field(None, max_length=64)


async def decide(request: Request) -> JSONResponse:
    admission = await admit(request, "policy.decide")
    body = await parse_body(request, DecideBody)
    decision = await explain(request, admission, body)
    return JSONResponse(
        {
            "allow": decision.allow,
            "reasons": list(decision.reasons),
            "policy_version": decision.policy_version,
        }
    )


async def explain(request: Request, admission: Admission, body: DecideBody) -> Decision:
    """The decision ``body`` asks about, for a caller admitted as ``policy.decide``: the one
    implementation behind ``POST /v1/decide`` and the console's "why was this denied" form."""
    svc = services(request)
    subject, tenant = await _subject(request, admission, body.subject)
    who = admission.principal
    assert who is not None
    resource = Resource(**body.resource.model_dump()) if body.resource else None
    decision = svc.authorizer.decide(
        subject, body.action, resource=resource, params=body.params, tenant=tenant
    )
    await _audit(request, who, subject, decision)
    return decision


async def _subject(
    request: Request, admission: Admission, asked: SubjectBody | None
) -> tuple[Principal, str | None]:
    """Who the question is about, and the tenant it acts in. Asking about another subject is
    the action ``policy.decide.other`` (admin or service), on a subject of the caller's tenant."""
    if asked is None:
        assert admission.principal is not None
        return admission.principal, admission.tenant
    # a platform-scoped caller may ask about any tenant's subjects; a tenant-bound one only
    # about its own tenant's (a platform subject is out of its reach)
    bound = admission.tenant is not None
    about = Resource(
        type="subject",
        id=asked.id,
        tenant=asked.tenant if bound else None,
        platform=bound and asked.tenant is None,
    )
    await authorize(request, admission, "policy.decide.other", resource=about)
    subject = Principal(
        sub=asked.id,
        username=asked.id,
        roles=frozenset(asked.roles),
        tenant=asked.tenant,
        via="external",
        amr=tuple(m for m in asked.amr if 0 < len(m) <= 32),
    )
    return subject, asked.tenant


async def _audit(request: Request, who: Principal, subject: Principal, decision: Decision) -> None:
    c = client(request)
    await services(request).audit.record(
        c.event(
            "authz.decide",
            "success" if decision.allow else "deny",
            actor=who.sub,
            tenant=who.tenant,
            reason=decision.reasons[0] if decision.reasons else None,
            details={
                "subject": subject.sub,
                "action": decision.action,
                "allow": decision.allow,
                "reasons": list(decision.reasons),
                "policy_version": decision.policy_version,
            },
        )
    )


def routes() -> list[BaseRoute]:
    return [Route("/v1/decide", decide, methods=["POST"])]
