"""The one admission pipeline (Z2, Z3, A7, A9, T1, T2, L2): every request, whoever serves it.

``/verify``, the built-in proxy and each of Garrison's own endpoints describe the request as an
``Attempt`` and ask ``Pipeline.admit`` for an ``Admission``: the credential is authenticated (a
Bearer token, an API key, an external IdP's token or the browser session cookie with its CSRF
rules), the tenant the request acts in is worked out, and the registered action is decided by the
Cedar policy, which is where API-key scopes, tenant binding, ``REQUIRE_JWT_FOR_ADMIN``,
platform-only actions and every deny reason live. A refusal is a ``GarrisonError`` and, whatever
the path, one audit event of one shape (``refusals``). No HTTP types in here: the gateway and the
CLI adapt their own.
"""

from garrison.admission.attempt import Admission, Attempt, BrowserFacts, CredentialKind
from garrison.admission.pipeline import AdmissionConfig, Pipeline
from garrison.admission.refusals import RefusalLog, refusal_event

__all__ = [
    "Admission",
    "AdmissionConfig",
    "Attempt",
    "BrowserFacts",
    "CredentialKind",
    "Pipeline",
    "RefusalLog",
    "refusal_event",
]
