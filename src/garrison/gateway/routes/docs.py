"""``/openapi.json``, ``/docs`` and its style sheet (U2): public, like health and discovery.

The reference page is rendered here, server-side, from the same description ``/openapi.json``
serves: plain HTML and one style sheet from this origin, so it runs under the strict CSP of every
response (``gateway.edge``: no inline script or style, nothing from another origin) and needs no
script at all. Landmarks, a skip link, headings per operation and a linked table of contents keep
it usable from the keyboard and a screen reader; the style sheet is one column on a phone.
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from garrison.gateway import openapi

_CACHE = {"Cache-Control": "public, max-age=300"}


def description(request: Request) -> dict[str, Any]:
    """The description, built once per application."""
    state = request.app.state
    built: dict[str, Any] | None = getattr(state, "openapi", None)
    if built is None:
        built = openapi.build()
        state.openapi = built
    return built


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(description(request), headers=_CACHE)


async def docs(request: Request) -> HTMLResponse:
    state = request.app.state
    page: str | None = getattr(state, "docs_page", None)
    if page is None:
        page = state.docs_page = render(description(request))
    return HTMLResponse(page, headers=_CACHE)


async def stylesheet(_request: Request) -> Response:
    return Response(STYLESHEET, media_type="text/css", headers=_CACHE)


def routes() -> list[BaseRoute]:
    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/docs.css", stylesheet, methods=["GET"]),
    ]


# -- rendering ------------------------------------------------------------------------------------
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escaped text; ``code`` spans become <code>."""
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escape(text))


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_inline(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _anchor(method: str, path: str) -> str:
    return f"{method}-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "allOf" in schema:
        return " and ".join(_type(s) for s in schema["allOf"] if "$ref" in s or "type" in s)
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "const" in schema:
        return f"<code>{escape(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(json.dumps(v))}</code>" for v in schema["enum"])
    return escape(str(kind))


_LIMITS = (
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("maxProperties", "at most {} entries"),
    ("minimum", "at least {}"),
    ("maximum", "at most {}"),
    ("pattern", "matches <code>{}</code>"),
)


def _limits(schema: dict[str, Any]) -> str:
    parts = [template.format(escape(str(schema[k]))) for k, template in _LIMITS if k in schema]
    if "default" in schema:
        parts.append(f"default <code>{escape(json.dumps(schema['default']))}</code>")
    if schema.get("description"):
        parts.append(_inline(str(schema["description"])))
    return "; ".join(parts)


def _fields(schema: dict[str, Any]) -> str:
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return "<p>Any JSON object.</p>" if schema.get("type") == "object" else ""
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><th scope=row><code>{escape(name)}</code></th><td>{_type(prop)}</td>"
        f"<td>{'yes' if name in required else 'no'}</td><td>{_limits(prop)}</td></tr>"
        for name, prop in properties.items()
    )
    closed = schema.get("additionalProperties") is False
    note = "<p>No other fields are accepted.</p>" if closed else ""
    return (
        "<div class=scroll><table><thead><tr><th scope=col>field</th><th scope=col>type</th>"
        f"<th scope=col>required</th><th scope=col>notes</th></tr></thead><tbody>{rows}</tbody>"
        f"</table></div>{note}"
    )


def _parameters(params: list[dict[str, Any]]) -> str:
    if not params:
        return ""
    rows = "".join(
        f"<tr><th scope=row><code>{escape(p['name'])}</code></th><td>{escape(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td>"
        f"<td>{_inline(p.get('description', ''))}</td></tr>"
        for p in params
    )
    return (
        "<h4>Parameters</h4><div class=scroll><table><thead><tr><th scope=col>name</th>"
        "<th scope=col>in</th><th scope=col>required</th><th scope=col>description</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></div>"
    )


def _responses(spec: dict[str, Any], responses: dict[str, Any]) -> str:
    shared = spec["components"]["responses"]
    items = []
    for status, declared in responses.items():
        response = shared[_ref_name(declared["$ref"])] if "$ref" in declared else declared
        kinds = []
        for media, body in response.get("content", {}).items():
            schema = body.get("schema")
            kinds.append(f"<code>{escape(media)}</code>" + (f" {_type(schema)}" if schema else ""))
        headers = ", ".join(f"<code>{escape(h)}</code>" for h in response.get("headers", {}))
        extra = f" Headers: {headers}." if headers else ""
        body = f" ({', '.join(kinds)})" if kinds else ""
        items.append(
            f"<li><strong>{escape(status)}</strong>{body}: "
            f"{_inline(response.get('description', ''))}{extra}</li>"
        )
    return f"<h4>Responses</h4><ul class=responses>{''.join(items)}</ul>"


def _operation(spec: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> str:
    anchor = _anchor(method, path)
    auth = "public" if not op.get("security") else "needs a bearer token or a session"
    body = ""
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        name = _ref_name(schema["$ref"])
        need = "required" if op["requestBody"].get("required") else "optional"
        body = (
            f"<h4>Request body ({need}, <code>application/json</code>)</h4>"
            f"{_fields(spec['components']['schemas'][name])}"
        )
    return (
        f'<section class=operation id="{anchor}" aria-labelledby="{anchor}-h">'
        f'<h3 id="{anchor}-h"><span class="method {method}">{method.upper()}</span> '
        f"<code>{escape(path)}</code></h3>"
        f"<p class=summary>{_inline(op['summary'])} <span class=auth>({auth})</span></p>"
        f"{_paragraphs(op.get('description', ''))}{_parameters(op.get('parameters', []))}"
        f"{body}{_responses(spec, op['responses'])}</section>"
    )


def render(spec: dict[str, Any]) -> str:
    """The whole reference page: a table of contents, every operation, the shared shapes."""
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method, path, op))
    toc, sections = [], []
    for tag, ops in by_tag.items():
        links = "".join(
            f'<li><a href="#{_anchor(m, p)}"><span class="method {m}">{m.upper()}</span> '
            f"<code>{escape(p)}</code></a></li>"
            for m, p, _ in ops
        )
        toc.append(f"<li>{escape(tag)}<ul>{links}</ul></li>")
        body = "".join(_operation(spec, m, p, op) for m, p, op in ops)
        slug = re.sub(r"[^a-z0-9]+", "-", tag)
        sections.append(
            f'<section aria-labelledby="tag-{slug}"><h2 id="tag-{slug}">'
            f"{escape(tag)}</h2>{body}</section>"
        )
    shapes = "".join(
        f'<section id="schema-{escape(name)}" aria-labelledby="schema-{escape(name)}-h">'
        f'<h3 id="schema-{escape(name)}-h">{escape(name)}</h3>'
        f"{_paragraphs(schema.get('description', ''))}{_fields(schema)}</section>"
        for name, schema in spec["components"]["schemas"].items()
    )
    info = spec["info"]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(info['title'])} API reference</title>"
        '<link rel=stylesheet href="/docs/docs.css"></head><body>'
        '<a class=skip href="#main">Skip to the reference</a>'
        f"<header><h1>{escape(info['title'])} API reference</h1>"
        f"<p>Version {escape(info['version'])}. {_inline(info.get('description', ''))} "
        'The machine-readable description is <a href="/openapi.json">/openapi.json</a> '
        "(OpenAPI 3.1).</p></header>"
        f'<nav aria-label="Endpoints"><h2>Endpoints</h2><ul>{"".join(toc)}</ul></nav>'
        f"<main id=main tabindex=-1>{''.join(sections)}"
        f"<section aria-labelledby=shapes><h2 id=shapes>Shapes</h2>{shapes}</section>"
        "</main></body></html>"
    )


STYLESHEET = """\
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #fff; --muted: #57606a; --line: #d0d7de;
  --accent: #0b5cad; --code: #f3f4f6; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9aa4ae; --line: #30363d; --accent: #6cb6ff;
    --code: #161b22; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg);
  display: grid; grid-template-columns: minmax(14rem, 20rem) 1fr;
  grid-template-areas: "head head" "nav main"; }
header { grid-area: head; padding: 1rem 1.5rem; border-bottom: 1px solid var(--line); }
nav { grid-area: nav; padding: 1rem 1.5rem; border-right: 1px solid var(--line);
  position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto; }
main { grid-area: main; padding: 1rem 1.5rem; min-width: 0; max-width: 64rem; }
nav ul { list-style: none; padding-left: 0; margin: 0 0 .5rem; }
nav ul ul { padding-left: .75rem; }
nav a { display: block; padding: .2rem 0; }
a { color: var(--accent); }
a:focus-visible, main:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.skip { position: absolute; left: -999rem; }
.skip:focus { left: 1rem; top: 1rem; background: var(--bg); padding: .5rem; z-index: 1; }
code { font: .9em ui-monospace, monospace; background: var(--code); padding: 0 .2em;
  border-radius: 3px; overflow-wrap: anywhere; }
.operation { border-top: 1px solid var(--line); padding-top: .5rem; margin-top: 1.5rem; }
.method { display: inline-block; min-width: 4.2em; font: 600 .8em ui-monospace, monospace;
  text-transform: uppercase; }
.auth, .summary { color: var(--muted); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { text-align: left; vertical-align: top; padding: .3rem .5rem;
  border-bottom: 1px solid var(--line); }
.responses li { margin: .25rem 0; }
@media (max-width: 48rem) {
  body { display: block; }
  nav { position: static; max-height: none; border-right: 0; border-bottom: 1px solid var(--line); }
  header, nav, main { padding: .75rem 1rem; }
}
"""
