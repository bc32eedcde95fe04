"""GET / : a small status page (acceptance charts arrive with telemetry)."""
from __future__ import annotations

from html import escape

from server.schemas import AdapterList

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>codeloop</title>
<style>body{{font:15px system-ui,sans-serif;margin:2rem;max-width:60rem}}table{{border-collapse:collapse}}
td,th{{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}}code{{background:#f4f4f4;padding:0 .2rem}}</style>
</head><body>
<h1>codeloop</h1>
<p>Serving <code>{model}</code> on the <code>{engine}</code> engine. Live adapter: <b id="live">{live}</b>.</p>
<h2>Adapters</h2>
<table id="adapters"><tr><th>name</th><th>rank</th><th>size</th><th>sha256</th><th>live</th></tr>{rows}</table>
<h2>Links</h2>
<ul><li><a href="/docs">API (OpenAPI)</a></li><li><a href="/metrics">Prometheus metrics</a></li><li><a href="/healthz">health</a></li></ul>
</body></html>"""


def render_home(model: str, engine: str, adapters: AdapterList) -> str:
    rows = "".join(
        f"<tr><td>{escape(a.name)}</td><td>{a.rank}</td><td>{a.size_bytes / 2**20:.1f} MiB</td>"
        f"<td><code>{a.sha256[:12]}</code></td><td>{'yes' if a.live else ''}</td></tr>"
        for a in adapters.adapters
    )
    return PAGE.format(model=escape(model), engine=escape(engine), live=escape(adapters.live or "base model"), rows=rows or '<tr><td colspan="5">none loaded</td></tr>')
