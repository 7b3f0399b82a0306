"""Review attacks through real nginx and Caddy in front of ``/verify`` (E8, Z2).

Each proxy sets only its own header family for the original request and passes a client's other
headers to Garrison; a client's own ``X-Forwarded-Uri`` (nginx) or ``X-Original-URI`` (Caddy) must
not be what is authorized. The echoing upstream shows what would have been served.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration import test_caddy_forward_auth as caddy_fa
from tests.integration import test_nginx_forward_auth as nginx_fa
from tests.integration import test_proxy as proxy

nginx_stack = nginx_fa.stack
caddy_stack = caddy_fa.stack
front = proxy.front


@pytest.mark.req("E8", "Z2")
def test_nginx_client_forwarded_uri_does_not_authorize_another_path(
    nginx_stack: nginx_fa.Stack,
) -> None:
    forged = {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/public/status"}
    anonymous = httpx.get(f"{nginx_stack.edge.url}/api/tickets/7", headers=forged)
    assert anonymous.status_code != 200, anonymous.text
    low = httpx.delete(
        f"{nginx_stack.edge.url}/api/tickets/7",
        headers={**forged, "Authorization": f"Bearer {nginx_stack.user_token}"},
    )
    assert low.status_code != 200, low.text


@pytest.mark.req("E8", "Z2")
def test_nginx_client_forwarded_method_does_not_replace_the_method(
    nginx_stack: nginx_fa.Stack,
) -> None:
    response = httpx.get(
        f"{nginx_stack.edge.url}/public/status", headers={"X-Forwarded-Method": "DELETE"}
    )
    assert response.status_code != 200 or response.json()["method"] == "GET"


@pytest.mark.req("E8", "Z2")
def test_nginx_dot_dot_semicolon_is_not_authorized_as_the_public_prefix(
    nginx_stack: nginx_fa.Stack,
) -> None:
    """Tomcat, Jetty and Spring serve ``/public/..;/api/tickets/7`` as ``/api/tickets/7``."""
    response = httpx.get(f"{nginx_stack.edge.url}/public/..;/api/tickets/7")
    assert response.status_code != 200, response.text


def _raw_get(url: str, target: bytes) -> bytes:
    """A request line sent as is (an HTTP client would drop the fragment)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 5) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.req("E8", "Z2")
def test_nginx_raw_fragment_is_not_authorized_as_the_part_before_it(
    nginx_stack: nginx_fa.Stack,
) -> None:
    """nginx hands ``/public#/../api/tickets/7`` to the backend as is; a backend that resolves the
    dot segments serves ``/api/tickets/7``."""
    answer = _raw_get(nginx_stack.edge.url, b"/public#/../api/tickets/7")
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.req("E8", "Z2")
def test_caddy_client_original_uri_does_not_authorize_another_path(
    caddy_stack: caddy_fa.Stack,
) -> None:
    forged = {"X-Original-Method": "GET", "X-Original-URI": "/public/status"}
    response = httpx.get(f"{caddy_stack.edge.url}/api/tickets/7", headers=forged)
    assert response.status_code != 200, response.text
    allowed = httpx.get(f"{caddy_stack.edge.url}/public/status")
    assert allowed.status_code == 200


@pytest.mark.req("E8", "T1")
def test_proxy_never_hands_the_upstream_identity_headers_spelled_with_underscores(
    front: proxy.Front,
) -> None:
    """A WSGI backend reads ``X_Auth_User`` as ``HTTP_X_AUTH_USER``, the header Garrison sets."""
    forged = {"X_Auth_User": "root", "X_Auth_Roles": "admin", "X-Auth-Email": "root@x"}
    anonymous = httpx.get(f"{front.url}/public/status", headers=forged)
    assert anonymous.status_code == 200, anonymous.text
    seen = {k.replace("_", "-") for k in anonymous.json()["headers"]}
    assert not {k for k in seen if k.startswith("x-auth-")}, seen


@pytest.mark.req("E8", "T1")
def test_proxy_refuses_a_tenant_header_sent_twice_with_different_values(
    front: proxy.Front,
) -> None:
    headers = [
        ("Authorization", f"Bearer {front.support_token}"),
        ("X-Tenant-ID", "acme"),
        ("X-Tenant-ID", "globex"),
    ]
    response = httpx.get(f"{front.url}/api/tickets/7", headers=headers)
    assert response.status_code == 400, response.text
