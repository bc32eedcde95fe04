// codeloop blind review: one task at a time from /v1/reviews/{id}/next, a vote to
// /v1/reviews/{id}/votes. Plain ES2020, no build step, no dependencies. The code shown is
// untrusted (anyone's files, any model's output): it only ever enters the page as text nodes
// (textContent / createTextNode), never as HTML. The page is told "left" and "right" only;
// which adapter is which stays on the server.
// body[data-state] (loading|voting|voted|done|error) and #task[data-task-id] are for tests.
"use strict";
(() => {
  const body = document.body;
  const REVIEW = body.dataset.reviewId;
  const TOKEN_KEY = "codeloop.token"; // sessionStorage: a token outlives neither the tab nor the session
  const NAME_KEY = "codeloop.reviewer"; // localStorage: the same pseudonym on every visit
  const $ = (id) => document.getElementById(id);

  let authOn = body.dataset.auth === "on";
  let task = null; // the task on screen
  let busy = false; // a request is in flight: keys and buttons do nothing

  // ---- syntax highlighting: a small tokenizer, good enough to read code at a glance ------
  const KEYWORDS = {
    python: "False None True and as assert async await break class continue def del elif else except finally for from global if import in is lambda match case nonlocal not or pass raise return try while with yield self",
    c: "abstract async await bool break case catch char class const continue default defer delete do double else enum export extends false final float fn for func function go if impl import in instanceof int interface let long match mod mut new nil null package private protected pub public return self short static struct super switch this throw true try type typeof undefined use var void while yield",
  };
  const KEYWORD_SETS = Object.fromEntries(Object.entries(KEYWORDS).map(([k, v]) => [k, new Set(v.split(" "))]));
  const SYNTAX = {
    // Triple-quoted strings may run past the end of the text (a cut-off docstring): `|$`.
    python: /(#[^\n]*)|((?:\b[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?))|(\b(?:0[xXoObB][\da-fA-F_]+|\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d+)?j?)|\.\d[\d_]*(?:[eE][+-]?\d+)?j?)|([A-Za-z_]\w*)/g,
    c: /(\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|("(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?|`(?:\\[\s\S]|[^`\\])*`?)|(\b(?:0[xXoObB][\da-fA-F_]+|\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d+)?)[uUlLfFn]*)|([A-Za-z_$][\w$]*)/g,
  };
  const family = (language) => (String(language || "python").toLowerCase() === "python" ? "python" : "c");

  // [[class, text], ...] covering `text` exactly; class "" is plain.
  function tokenize(text, language) {
    const fam = family(language);
    const re = new RegExp(SYNTAX[fam].source, "g");
    const words = KEYWORD_SETS[fam];
    const out = [];
    let at = 0;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      if (m[0] === "") { re.lastIndex += 1; continue; } // never loop on an empty match
      if (m.index > at) out.push(["", text.slice(at, m.index)]);
      const cls = m[1] ? "tok-comment" : m[2] ? "tok-string" : m[3] ? "tok-number" : words.has(m[4]) ? "tok-keyword" : "";
      out.push([cls, m[0]]);
      at = m.index + m[0].length;
    }
    if (at < text.length) out.push(["", text.slice(at)]);
    return out;
  }

  // The text as lines, each a list of <span>s holding text nodes (a token may span lines).
  function highlightedLines(text, language) {
    const lines = [[]];
    for (const [cls, chunk] of tokenize(text, language)) {
      chunk.split("\n").forEach((piece, i) => {
        if (i > 0) lines.push([]);
        if (piece) lines[lines.length - 1].push(span(cls, piece));
      });
    }
    return lines;
  }

  function span(cls, text) {
    const node = document.createElement("span");
    if (cls) node.className = cls;
    node.textContent = text;
    return node;
  }

  // One row of a code block: the gutter (line number, or + for a suggestion's line), then the code.
  function row(gutter, nodes, cls) {
    const div = document.createElement("div");
    div.className = `ln ${cls || ""}`.trim();
    div.append(span("gutter", gutter), ...nodes);
    return div;
  }

  // ---- drawing a task --------------------------------------------------------------------
  function drawTask(t) {
    task = t;
    $("task").dataset.taskId = String(t.task_id);
    $("path").textContent = t.path;
    $("line").textContent = Number.isInteger(t.line) ? `line ${t.line}` : "";
    const lang = t.language;
    // before's last line is the cursor line up to the cursor; after's first line is the rest of it.
    const before = highlightedLines(t.before, lang);
    const after = highlightedLines(t.after, lang);
    const head = before.pop();
    const tail = after.shift() || [];
    const cursorNo = Number.isInteger(t.line) ? t.line : null;
    const num = (offset) => (cursorNo === null ? "" : String(cursorNo + offset));

    $("before").replaceChildren(
      ...before.map((nodes, i) => row(num(i - before.length), nodes)),
      row(num(0), [...head, span("caret", "▌"), ...tail.map(dim)], "cursor-line"),
    );
    for (const side of ["left", "right"]) {
      const text = t[side];
      const lines = highlightedLines(text, lang);
      // The first + line is the cursor line as the suggestion would make it.
      const first = [...cursorHeadOf(t).map(dim), ...lines[0]];
      $(side).replaceChildren(
        row("+", first, "add"),
        ...lines.slice(1).map((nodes) => row("+", nodes, "add")),
        ...(text.trim() ? [] : [row("", [span("note", "(an empty suggestion)")])]),
      );
      $(`side-${side}`).classList.remove("chosen");
    }
    $("after").replaceChildren(...after.map((nodes, i) => row(num(i + 1), nodes)));
    $("after").hidden = after.length === 0;
    $("verdict").hidden = true;
    $("task").hidden = false;
    $("hint").hidden = false;
    setButtons(true);
    setState("voting");
    document.querySelector(".sides").scrollIntoView({ block: "nearest" }); // the choice, on small screens too
  }

  // The cursor line up to the cursor, as fresh nodes (a node can be in one place only).
  function cursorHeadOf(t) {
    return highlightedLines(t.before, t.language).pop();
  }
  const cursorHead = () => cursorHeadOf(task);

  function dim(node) {
    node.classList.add("dim");
    return node;
  }

  function drawVoted(choice, expected) {
    const said = { left: "You chose 1.", right: "You chose 2.", tie: "You called it a tie.", skip: "You skipped this one." }[choice];
    if (choice === "left" || choice === "right") $(`side-${choice}`).classList.add("chosen");
    $("your-vote").textContent = said;
    const lines = highlightedLines(expected, task.language);
    lines[0] = [...cursorHead().map(dim), ...lines[0]]; // as the suggestions: the cursor line completed
    $("expected").replaceChildren(...lines.map((nodes) => row("", nodes)));
    $("verdict").hidden = false;
    setButtons(false);
    setState("voted");
    $("verdict").scrollIntoView({ block: "nearest" });
    $("next").focus({ preventScroll: true });
  }

  function drawProgress(p) {
    if (p) $("progress").textContent = `${p.done} of ${p.total}`;
  }

  function drawDone(p, closed) {
    task = null;
    $("task").hidden = true;
    $("task").dataset.taskId = "";
    $("done").hidden = false;
    $("hint").hidden = true; // nothing left to choose between
    $("done-text").textContent = closed ? "This review is closed: it takes no more votes. Thank you!"
      : p && p.total ? `You have voted on all ${p.total} tasks of this review. Thank you!`
      : "This review has no tasks to vote on.";
    setState("done");
  }

  function setButtons(voting) {
    for (const b of $("vote-buttons").querySelectorAll("button")) b.disabled = !voting;
  }

  function setState(state) {
    body.dataset.state = state;
    if (state !== "error") $("error").hidden = true;
  }

  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
    setState("error");
    $("retry").focus({ preventScroll: true });
    $("error").scrollIntoView({ block: "nearest" });
  }

  // ---- the API -----------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, json) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, cache: "no-store", body: json === undefined ? undefined : JSON.stringify(json) });
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      // codeloop answers {"error": ...}; FastAPI's own default is {"detail": ...}.
      const said = data && (data.error || (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || "")));
      throw new HttpError(resp.status, `${resp.status} ${resp.statusText}: ${said || "no explanation from the server"}`);
    }
    return data;
  }

  const base = `/v1/reviews/${encodeURIComponent(REVIEW)}`;
  const reviewer = () => localStorage.getItem(NAME_KEY) || "";

  // With auth on the server takes the reviewer from the token and ignores a name.
  async function loadNext() {
    if (busy) return;
    busy = true;
    setState("loading");
    $("done").hidden = true;
    try {
      const q = authOn ? "" : `?reviewer=${encodeURIComponent(reviewer())}`;
      const data = await api("GET", `${base}/next${q}`);
      $("review-name").textContent = data.review && data.review.name ? data.review.name : `Review ${REVIEW}`;
      drawProgress(data.progress);
      if (data.task) drawTask(data.task);
      else drawDone(data.progress, data.review && data.review.status === "closed");
    } catch (err) {
      failed(err);
    } finally {
      busy = false;
    }
  }

  async function vote(choice) {
    if (busy || !task || body.dataset.state !== "voting") return;
    busy = true;
    setButtons(false);
    try {
      const payload = { task_id: task.task_id, choice };
      if (!authOn) payload.reviewer = reviewer();
      const data = await api("POST", `${base}/votes`, payload);
      drawProgress(data.progress);
      drawVoted(choice, data.expected);
    } catch (err) {
      failed(err);
    } finally {
      busy = false;
    }
  }

  function failed(err) {
    if (err instanceof HttpError && err.status === 401) return askToken(err.message);
    showError(err instanceof HttpError ? err.message : `The server did not answer: ${err && err.message}`);
  }

  // ---- who is reviewing ------------------------------------------------------------------
  function askToken(reason) {
    authOn = true; // a token may have been created since the page was rendered
    $("app").hidden = true;
    $("name-form").hidden = true;
    $("token-form").hidden = false;
    $("token-reason").textContent = reason || "";
    setState("loading");
    $("token").focus();
    $("token").select(); // a refused token: typing replaces it
  }

  function askName() {
    $("app").hidden = true;
    setState("loading"); // no vote while the name is being changed
    $("name-form").hidden = false;
    const input = $("reviewer");
    const random = crypto.getRandomValues(new Uint16Array(1))[0].toString(16).padStart(4, "0");
    input.value = reviewer() || `reviewer-${random}`;
    input.focus();
    input.select();
  }

  function start() {
    $("token-form").hidden = $("name-form").hidden = true;
    $("app").hidden = false;
    $("who").textContent = authOn ? "" : `· reviewing as ${reviewer()}`;
    $("change-name").hidden = authOn;
    loadNext();
  }

  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    start();
  });
  $("name-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("reviewer").value.trim();
    if (!value) return;
    localStorage.setItem(NAME_KEY, value);
    start();
  });
  $("change-name").addEventListener("click", askName);

  // ---- keys and buttons ------------------------------------------------------------------
  const KEYS = { 1: "left", 2: "right", "=": "tie", s: "skip", S: "skip" };
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    if (ev.target instanceof HTMLInputElement) return; // typing a name or a token
    const state = body.dataset.state;
    if (state === "voting" && KEYS[ev.key]) {
      ev.preventDefault();
      vote(KEYS[ev.key]);
    } else if ((state === "voted" || state === "error") && (ev.key === "Enter" || ev.key === "n" || ev.key === "N")) {
      ev.preventDefault(); // or Enter would also press the focused button
      loadNext();
    }
  });
  $("vote-buttons").addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-choice]");
    if (button) vote(button.dataset.choice);
  });
  $("next").addEventListener("click", loadNext);
  $("retry").addEventListener("click", loadNext);

  // With auth on, the first request goes without a token: its 401 says what the server wants.
  if (authOn || reviewer()) start();
  else askName();
})();
