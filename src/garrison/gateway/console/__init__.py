"""The admin console (U1): server-rendered pages over the same use cases as the CLI and ``/admin``.

Nothing is decided here. Each page admits its caller through ``gateway.requests.admit`` as a
registered action (the session cookie is the credential; on a form post the hidden ``csrf_token``
field is the CSRF evidence, checked by the pipeline exactly as ``X-CSRF-Token`` is) and then calls
``AdminActions`` or the audit query and verify functions the CLI calls. A use case's refusal (403
with the policy's reasons, 404, 409, 422, 429) becomes a page that shows the reasons; an
unauthenticated caller is sent to the sign-in page. No script, no inline style, one CSS file served
from here: the default CSP holds unchanged (E1).
"""

from starlette.routing import BaseRoute

from garrison.gateway.console import account, ops, pages


def routes() -> list[BaseRoute]:
    return [*pages.routes(), *account.routes(), *ops.routes()]


__all__ = ["routes"]
