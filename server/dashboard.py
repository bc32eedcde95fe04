"""GET / : the dashboard. One self-contained HTML page.

The server renders only the shell (model, engine, live adapter, the adapter table as a
no-JavaScript fallback) with everything escaped; server/static/dashboard.js then fetches the
JSON API (/v1/metrics/acceptance, /v1/experiments, /v1/adapters) and draws the charts as
inline SVG, every 30 s. The script and the stylesheet are inlined into the page (no CDN, no
build step, no second request, and the page works behind any prefix or proxy); they are read
from server/static/ when they change, so editing them needs no restart.
"""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path

from server.schemas import AdapterList

STATIC = Path(__file__).parent / "static"
REFRESH_S = 30

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>codeloop dashboard</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body data-loaded="0" data-refreshes="0">
<header class="top">
  <div class="brand"><h1>codeloop</h1><span class="sub">code completion that learns from its users</span></div>
  <div class="serving">Serving <code id="model">{model}</code> on the <code id="engine">{engine}</code> engine
    &middot; live adapter: <b id="live">{live}</b></div>
  <nav><a href="/docs">API docs</a><a href="/metrics">Prometheus metrics</a><a href="/healthz">health</a></nav>
  <div class="status"><span id="updated">loading&hellip;</span>
    <span class="muted">&middot; refreshes every {refresh} s</span></div>
  <form id="token-form" hidden><label>This server needs an API token:
    <input id="token" type="password" autocomplete="off" placeholder="Bearer token"></label>
    <button type="submit">Use token</button>
    <p id="token-reason" class="muted"></p></form>
</header>
<main id="app" data-refresh-s="{refresh}">
  <section id="kpis" class="kpis" aria-label="totals"></section>

  <section class="card" id="acceptance">
    <h2>Acceptance rate per day</h2>
    <p class="hint">Accepted &divide; shown suggestions, one line per adapter (UTC days, last 90).</p>
    <div class="body" id="acceptance-body"><p class="loading">Loading&hellip;</p></div>
  </section>

  <section class="card" id="experiment">
    <h2>A/B experiment</h2>
    <p class="hint">Acceptance rate per arm with its 95&nbsp;% Wilson interval; the dashed line is the control.</p>
    <div class="body" id="experiment-body"><p class="loading">Loading&hellip;</p></div>
  </section>

  <section class="card" id="latency">
    <h2>Latency per adapter</h2>
    <p class="hint">End-to-end time of a completion request, percentiles in milliseconds.</p>
    <div class="body" id="latency-body"><p class="loading">Loading&hellip;</p></div>
  </section>

  <section class="card" id="quality">
    <h2>Beyond the plain rate</h2>
    <p class="hint">Short suggestions inflate the acceptance rate: these count characters.</p>
    <div class="body" id="quality-body"><p class="loading">Loading&hellip;</p></div>
  </section>

  <section class="card wide" id="adapters">
    <h2>Adapters</h2>
    <p class="hint">Loaded adapters (newest first) and every adapter seen in the telemetry, with their numbers.</p>
    <div class="body" id="adapters-body">
      <table class="grid" id="adapters-static"><thead><tr><th>name</th><th>rank</th><th>size</th><th>created</th>
        <th>sha256</th><th>live</th></tr></thead><tbody>{rows}</tbody></table>
    </div>
  </section>
</main>
<noscript><p class="empty">The charts need JavaScript; the JSON behind them is at
  <a href="/v1/metrics/acceptance?by=adapter">/v1/metrics/acceptance</a> and
  <a href="/v1/experiments">/v1/experiments</a>.</p></noscript>
<script>{js}</script>
</body></html>"""

_cache: dict[str, tuple[float, str]] = {}


def _static(name: str) -> str:
    """A file of server/static/, re-read only when it changed."""
    path = STATIC / name
    mtime = path.stat().st_mtime
    hit = _cache.get(name)
    if hit is None or hit[0] != mtime:
        hit = (mtime, path.read_text(encoding="utf-8"))
        _cache[name] = hit
    return hit[1]


def _inline(text: str) -> str:
    """Neutralise `</script` / `</style` inside an inlined file: in JS strings and in CSS,
    `<\\/` means the same as `</`."""
    return text.replace("</", "<\\/")


def page_css(name: str) -> str:
    """The shared base.css, then the page's own stylesheet, ready to inline."""
    return _inline(_static("base.css") + "\n" + _static(name))


def _row(a) -> str:
    created = datetime.fromtimestamp(a.created_at, timezone.utc).strftime("%Y-%m-%d %H:%M") if a.created_at else ""
    return (
        f"<tr><td>{escape(a.name)}</td><td>{int(a.rank)}</td><td>{a.size_bytes / 2**20:.1f} MiB</td>"
        f"<td>{created}</td><td><code>{escape(a.sha256[:12])}</code></td><td>{'live' if a.live else ''}</td></tr>"
    )


def render_home(model: str, engine: str, adapters: AdapterList | None) -> str:
    """`adapters` None: auth is on, so the page carries no data; its script asks for a token."""
    if adapters is None:
        return PAGE.format(css=page_css("dashboard.css"), js=_inline(_static("dashboard.js")), model=escape(model),
                           engine=escape(engine), live="&hellip;", refresh=REFRESH_S,
                           rows='<tr><td colspan="6">Give an API token above to see the adapters.</td></tr>')
    rows = "".join(_row(a) for a in sorted(adapters.adapters, key=lambda a: -a.created_at))
    return PAGE.format(
        css=page_css("dashboard.css"),
        js=_inline(_static("dashboard.js")),
        model=escape(model),
        engine=escape(engine),
        live=escape(adapters.live or "base model"),
        refresh=REFRESH_S,
        rows=rows or '<tr><td colspan="6">No adapters loaded: the base model serves every request.</td></tr>',
    )
