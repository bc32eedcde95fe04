"""GET /review/{id} : the blind-review page. One self-contained HTML page, like the dashboard.

The server renders only a shell: the review's id and whether the API needs a token. Everything
else comes from the JSON API (/v1/reviews/{id}/next and /votes), fetched by
server/static/review.js, which never learns which adapter wrote which suggestion: the API
sends only "left" and "right" (the server maps them back through the task's a_on_left), so
the page cannot leak the adapters' names even to a reviewer who reads its source or its
network traffic. Script and stylesheet are inlined (no CDN, no second request, works behind
a prefix), read through server/dashboard.py's cache so that editing them needs no restart.
"""
from __future__ import annotations

from html import escape

from server.dashboard import _inline, _static, page_css

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>codeloop review {rid}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body data-state="loading" data-review-id="{rid}" data-auth="{auth}">
<header class="top">
  <div class="brand"><h1>codeloop</h1><span class="sub">blind review</span>
    <span id="review-name" class="review-name">Review {rid}</span></div>
  <div class="where"><span id="progress" aria-live="polite">&hellip;</span> <span class="muted">voted</span>
    <span id="who" class="muted"></span>
    <button type="button" id="change-name" class="link" hidden>change name</button></div>
  <form id="token-form" class="prompt" hidden><label>This server needs an API token:
    <input id="token" type="password" autocomplete="off" placeholder="Bearer token"></label>
    <button type="submit">Use token</button>
    <p id="token-reason" class="muted"></p></form>
  <form id="name-form" class="prompt" hidden><label>Your reviewer name (kept in this browser; votes are counted per name):
    <input id="reviewer" autocomplete="off" maxlength="200" spellcheck="false"></label>
    <button type="submit">Start reviewing</button></form>
</header>
<main id="app" hidden>
  <p class="hint" id="hint">Which suggestion is the better continuation at the cursor? The two sides are shuffled
    per task: you cannot tell which model wrote which, and you should not try.
    Keys: <kbd>1</kbd> left, <kbd>2</kbd> right, <kbd>=</kbd> tie, <kbd>s</kbd> skip;
    then <kbd>Enter</kbd> or <kbd>n</kbd> for the next one.</p>
  <div id="error" class="error" role="alert" hidden><p id="error-text"></p>
    <button type="button" id="retry">Try again</button></div>
  <section id="task" class="card" data-task-id="">
    <div class="file"><code id="path"></code> <span id="line" class="muted"></span></div>
    <pre id="before" class="code context"></pre>
    <div class="sides">
      <figure class="side" id="side-left"><figcaption><kbd>1</kbd> Suggestion 1</figcaption>
        <pre id="left" class="code diff"></pre></figure>
      <figure class="side" id="side-right"><figcaption><kbd>2</kbd> Suggestion 2</figcaption>
        <pre id="right" class="code diff"></pre></figure>
    </div>
    <pre id="after" class="code context"></pre>
    <div class="actions" id="vote-buttons">
      <button type="button" id="vote-left" data-choice="left"><kbd>1</kbd> 1 is better</button>
      <button type="button" id="vote-right" data-choice="right"><kbd>2</kbd> 2 is better</button>
      <button type="button" id="vote-tie" data-choice="tie"><kbd>=</kbd> Tie</button>
      <button type="button" id="vote-skip" data-choice="skip"><kbd>s</kbd> Skip</button>
    </div>
    <div id="verdict" hidden>
      <h2>What the author wrote</h2>
      <pre id="expected" class="code expected"></pre>
      <p><span id="your-vote" class="muted"></span>
        <button type="button" id="next"><kbd>Enter</kbd> Next</button></p>
    </div>
  </section>
  <section id="done" class="card done" hidden>
    <h2>All done</h2>
    <p id="done-text"></p>
  </section>
</main>
<noscript><p class="error">The review page needs JavaScript.</p></noscript>
<script>{js}</script>
</body></html>"""

NOT_FOUND = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>codeloop: no such review</title>
<link rel="icon" href="data:,"><style>{css}</style></head>
<body data-state="error"><header class="top"><div class="brand"><h1>codeloop</h1>
<span class="sub">blind review</span></div></header>
<main><div class="error"><p>There is no review <code>{rid}</code> on this server.
<code>codeloop review list</code> shows the reviews there are.</p></div></main></body></html>"""


def render_review(review_id: str, auth: bool) -> str:
    """The page for one review. `auth`: whether the API needs a token (the page then asks for
    one instead of a reviewer name: the server takes the reviewer from the token)."""
    return PAGE.format(css=page_css("review.css"), js=_inline(_static("review.js")),
                       rid=escape(review_id), auth="on" if auth else "off")


def render_not_found(review_id: str) -> str:
    return NOT_FOUND.format(css=page_css("review.css"), rid=escape(review_id))
