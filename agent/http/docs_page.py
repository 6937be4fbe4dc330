"""``GET /docs``: the API reference as one self-contained HTML page.

Rendered on the device from the app's own OpenAPI document, with no script and nothing
fetched from elsewhere: Swagger UI and ReDoc load their code from a CDN, which leaves the
page blank in a browser on an offline site network. For an interactive explorer, load
``/openapi.json`` into any OpenAPI tool.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
code,.path{font-family:ui-monospace,monospace} .method{font-weight:700;display:inline-block;min-width:4.2rem}
table{border-collapse:collapse;width:100%;margin:.4rem 0} td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top} th{background:#f6f6f6} .lock{color:#a33} .muted{color:#666}
section{margin:1.4rem 0}
"""


def _type_of(schema: dict[str, Any]) -> str:
    """A short, readable type for a JSON Schema fragment ("" when it says nothing)."""
    if not schema:
        return ""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " | ".join(_type_of(part) for part in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f"<code>{escape(repr(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{escape(repr(schema['const']))}</code>"
    return escape(str(kind))


def _operation(method: str, path: str, op: dict[str, Any], secured: bool) -> str:
    anchor = f"{method}-{path}".replace("/", "-").strip("-")
    out = [
        f'<section id="{escape(anchor)}"><h3><span class="method">{method.upper()}</span>'
        f'<span class="path">{escape(path)}</span>'
        + (' <span class="lock" title="needs the bearer token">(token)</span>' if secured else "")
        + "</h3>",
        f"<p>{escape(op.get('summary', ''))}</p>",
    ]
    if op.get("description"):
        out.append(f"<p class=muted>{escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>")
        for p in params:
            out.append(
                f"<tr><td><code>{escape(p['name'])}</code>{' (required)' if p.get('required') else ''}</td>"
                f"<td>{escape(p.get('in', ''))}</td><td>{_type_of(p.get('schema', {}))}</td>"
                f"<td>{escape(p.get('description', '') or p.get('schema', {}).get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody")
    if body:
        types = ", ".join(f"<code>{escape(t)}</code>" for t in body.get("content", {}))
        out.append(f"<p>Request body: {types}. {escape(body.get('description', ''))}</p>")
    out.append("<table><tr><th>status</th><th>meaning</th><th>body</th></tr>")
    for status, resp in op.get("responses", {}).items():
        content = resp.get("content", {})
        bodies = ", ".join(
            f"<code>{escape(ctype)}</code> {_type_of(media.get('schema', {}))}" for ctype, media in content.items()
        )
        out.append(f"<tr><td>{escape(status)}</td><td>{escape(resp.get('description', ''))}</td><td>{bodies}</td></tr>")
    out.append("</table></section>")
    return "\n".join(out)


def _schema(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    out = [f'<section id="schema-{escape(name)}"><h3>{escape(name)}</h3>']
    if schema.get("description"):
        out.append(f"<p class=muted>{escape(schema['description'])}</p>")
    props = schema.get("properties", {})
    if props:
        out.append("<table><tr><th>field</th><th>type</th><th>description</th></tr>")
        for field, sub in props.items():
            out.append(
                f"<tr><td><code>{escape(field)}</code>{' (required)' if field in required else ''}</td>"
                f"<td>{_type_of(sub)}</td><td>{escape(sub.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    elif "enum" in schema:
        out.append(f"<p>One of {_type_of(schema)}.</p>")
    out.append("</section>")
    return "\n".join(out)


def render_docs(spec: dict[str, Any]) -> str:
    """The whole page for an OpenAPI 3 document."""
    info = spec.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    operations = [
        (method, path, op, bool(op.get("security")))
        for path, methods in spec.get("paths", {}).items()
        for method, op in methods.items()
    ]
    index = "".join(
        f'<tr><td><span class="method">{m.upper()}</span></td><td><a class="path" '
        f'href="#{escape(f"{m}-{p}".replace("/", "-").strip("-"))}">{escape(p)}</a></td>'
        f"<td>{escape(op.get('summary', ''))}</td><td>{'token' if sec else 'open'}</td></tr>"
        for m, p, op, sec in operations
    )
    schemas = spec.get("components", {}).get("schemas", {})
    return "\n".join(
        [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{escape(title)}</h1><p>{escape(info.get('description', ''))}</p>",
            "<p class=muted>Endpoints marked <i>token</i> need the header <code>Authorization: Bearer &lt;token&gt;</code>. "
            'The machine-readable document is <a href="/openapi.json">/openapi.json</a>; load it into any OpenAPI '
            "tool for an interactive explorer.</p>",
            "<h2>Endpoints</h2><table><tr><th>method</th><th>path</th><th>what</th><th>auth</th></tr>",
            index,
            "</table>",
            *(_operation(m, p, op, sec) for m, p, op, sec in operations),
            "<h2>Schemas</h2>",
            *(_schema(name, s) for name, s in schemas.items()),
            "</body></html>",
        ]
    )
