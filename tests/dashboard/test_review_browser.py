"""The blind-review page (GET /review/{id}) in a real browser (Debian's Chromium driven by
playwright) against the real server: a reviewer votes on every task with the keyboard only,
the page never learns which adapter wrote which side, and the report counts what was cast.

Needs /usr/bin/chromium and the `playwright` package, like test_dashboard_browser.py (whose
`browser` fixture this module shares).
"""
from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import start_server
from tests.dashboard.test_dashboard_browser import ARTIFACTS, browser  # noqa: F401 (a fixture)
from tests.server.test_auth import bearer, new_token

# Unusual strings, so that finding one anywhere in what the page received can only be a leak.
ADAPTER_A, ADAPTER_B = "secret-adapter-alpha", "secret-adapter-beta"
SHOWN, IDENTICAL = 20, (4, 11, 17)  # task ids (1-based) whose two answers are the same
# The first reviewer's keys, in task order: every choice, and enough 1/2 for both orders to count.
KEYS = ["1", "2", "=", "s", "1", "1", "2", "=", "2", "1", "s", "2", "1", "=", "2", "1", "2", "1", "s", "2"]
CHOICE = {"1": "left", "2": "right", "=": "tie", "s": "skip"}
# Code is untrusted: markup in it must be shown as text, never run.
HOSTILE = '"<img src=x onerror=\\"window.__pwned=1\\">"'


def make_task(i: int, identical: bool) -> dict:
    """Python with keywords, strings, comments and numbers; the cursor on line 35, after the
    indentation, as `codeloop review create` cuts held-out lines (trainer/heldout.py)."""
    filler = "".join(f"SETTING_{k} = {k}  # filler {k}\n" for k in range(25))  # more than the page's 30 lines
    prefix = (f"{filler}\n\ndef handler_{i}(items, limit=10):\n    \"\"\"Sum the items.\"\"\"\n    label = {HOSTILE}\n"
              f"    total = 0\n    for item in items:\n        total += item  # step\n    if total > {i}:\n        ")
    answer_a = f"return first_{i}(total, 0x{i:02x})  # alpha side"
    answer_b = answer_a if identical else f"raise ValueError('second_{i}: too big')\n        # beta side {i}.5"
    return {"path": f"pkg/module_{i}.py", "language": "python", "line": prefix.count("\n") + 1, "prefix": prefix,
            "suffix": f"\n    return total\n\n\nprint(handler_{i}([]))\n", "expected": f"total = author_wrote_{i}({i})",
            "answer_a": answer_a, "answer_b": answer_b}


@pytest.fixture(scope="module")
def review(server):
    """A review of 23 tasks (3 of them identical pairs) on the shared server, auth off."""
    n = SHOWN + len(IDENTICAL)
    tasks = [make_task(i, i in IDENTICAL) for i in range(1, n + 1)]
    r = httpx.post(server.url + "/v1/reviews", json={"name": f"{ADAPTER_B} vs {ADAPTER_A}", "a": ADAPTER_A, "b": ADAPTER_B,
                                                     "repo": "example/repo", "tasks": tasks}, timeout=60)
    assert r.status_code == 201, r.text
    summary = r.json()
    assert (summary["tasks"], summary["identical"], summary["shown"]) == (n, len(IDENTICAL), SHOWN)
    return {"id": summary["id"], "tasks": tasks, "url": server.url + summary["url"], "server": server}


class Watched:
    """A page with everything it received and every problem it had recorded."""

    def __init__(self, context, allowed_statuses=()):
        self.page = context.new_page()
        self.responses, self.problems, self.allowed = [], [], set(allowed_statuses)
        self.page.on("console", lambda m: self.problems.append(f"console: {m.text}")
                     if m.type == "error" and not self._allowed_console(m.text) else None)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("response", self._response)

    def _allowed_console(self, text: str) -> bool:  # Chromium logs every 4xx fetch as an error
        return any(f"status of {s}" in text for s in self.allowed)

    def _response(self, r):
        self.responses.append(r)
        if r.status >= 400 and r.status not in self.allowed:
            self.problems.append(f"HTTP {r.status} {r.url}")

    def bodies(self) -> list[str]:
        return [r.text() for r in self.responses]

    def state(self, state: str, timeout: float = 30_000):
        self.page.wait_for_selector(f'body[data-state="{state}"]', timeout=timeout)

    def shown(self) -> dict:
        """The task on screen: its id and the text of each side (without gutters or the dimmed cursor line)."""
        return self.page.evaluate("""() => {
            const text = (id) => [...document.querySelectorAll(`#${id} .ln`)]
              .map((ln) => [...ln.children].filter((c) => !c.matches('.gutter, .dim')).map((c) => c.textContent).join(''))
              .join('\\n');
            return {id: Number(document.querySelector('#task').dataset.taskId), left: text('left'), right: text('right'),
                    before: document.querySelector('#before').innerText, progress: document.querySelector('#progress').textContent};
        }""")


def leaks(watched: Watched) -> list[str]:
    texts = [watched.page.content(), *watched.bodies()]
    assert any('"left"' in t for t in texts), "the API's answers were not read"  # else this proves nothing
    return [name for name in (ADAPTER_A, ADAPTER_B) if any(name in t for t in texts)]


def vote_through(w: Watched, review: dict, keys: list[str], screenshot=None) -> dict:
    """Vote with `keys` in turn (Next by Enter and n alternately), checking what each vote
    shows; return the votes as the report counts them (left/right mapped back to a/b)."""
    counts = {"a": 0, "b": 0, "tie": 0, "skip": 0}
    orders, per_task = [], {}
    for k, key in enumerate(keys):
        w.state("voting")
        seen = w.shown()
        task = review["tasks"][seen["id"] - 1]
        a_on_left = seen["left"] == task["answer_a"]
        assert (seen["left"], seen["right"]) == ((task["answer_a"], task["answer_b"]) if a_on_left
                                                 else (task["answer_b"], task["answer_a"])), seen
        assert seen["progress"] == f"{k} of {SHOWN}"
        orders.append(a_on_left)
        w.page.keyboard.press(key)
        w.state("voted")
        assert w.page.inner_text("#expected").strip() == task["expected"]
        assert "What the author wrote" in w.page.inner_text("#verdict")
        assert w.page.inner_text("#progress") == f"{k + 1} of {SHOWN}"
        choice = CHOICE[key]
        stored = {"left": "a" if a_on_left else "b", "right": "b" if a_on_left else "a"}.get(choice, choice)
        counts[stored] += 1
        per_task[seen["id"]] = stored
        if screenshot and k == 2:  # mid-review, with a choice made and the author's line shown
            ARTIFACTS.mkdir(exist_ok=True)
            w.page.screenshot(path=str(screenshot), full_page=True)
        w.page.keyboard.press("Enter" if k % 2 else "n")
    return {"counts": counts, "orders": orders, "per_task": per_task}


def report(server, rid: str, headers: dict | None = None) -> dict:
    r = httpx.get(f"{server.url}/v1/reviews/{rid}", headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def name_prompt(w: Watched, review: dict, name: str | None = None) -> str:
    """Open the page, answer its name prompt by keyboard (None: take the offered name)."""
    w.page.goto(review["url"], wait_until="domcontentloaded")
    w.page.wait_for_selector("#name-form:not([hidden])", timeout=30_000)
    offered = w.page.input_value("#reviewer")
    assert re.fullmatch(r"reviewer-[0-9a-f]{4}", offered), offered
    if name is not None:
        w.page.keyboard.type(name)  # the offered name is selected: typing replaces it
    w.page.keyboard.press("Enter")
    return name or offered


# --- tests ----------------------------------------------------------------------------------
def test_a_reviewer_votes_on_every_task_by_keyboard_and_the_report_counts_it(review, browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    w = Watched(context)
    try:
        name = name_prompt(w, review)
        cast = vote_through(w, review, KEYS, screenshot=ARTIFACTS / "review-page.png")
        w.state("done")
        assert "All done" in w.page.inner_text("#done") and w.page.inner_text("#progress") == f"{SHOWN} of {SHOWN}"
        assert w.page.evaluate("() => localStorage.getItem('codeloop.reviewer')") == name
        assert w.page.evaluate("() => window.__pwned") is None
        assert w.problems == []
        assert leaks(w) == [], "the page received an adapter's name"
    finally:
        context.close()
    assert True in cast["orders"] and False in cast["orders"], "left/right was not randomised"
    assert sorted(cast["per_task"]) == [i for i in range(1, SHOWN + len(IDENTICAL) + 1) if i not in IDENTICAL]
    got = report(review["server"], review["id"])
    assert got["vote_counts"] == cast["counts"]
    assert got["voted_tasks"] == SHOWN
    for detail in got["tasks_detail"]:  # each vote landed on the side that was on screen
        expected = {"a": 0, "b": 0, "tie": 0, "skip": 0}
        if detail["task_id"] in cast["per_task"]:
            expected[cast["per_task"][detail["task_id"]]] = 1
        assert detail["votes"] == expected, detail
    assert (ARTIFACTS / "review-page.png").stat().st_size > 10_000
    review["first"] = cast["counts"]


def test_code_is_shown_as_text_with_highlighting_and_the_cursor_marked(review, browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    w = Watched(context)
    try:
        name_prompt(w, review, "looker")
        w.state("voting")
        before = w.page.inner_text("#before")
        assert f"label = {HOSTILE}" in before  # literally, as text
        assert w.page.query_selector("#task img") is None and w.page.evaluate("() => window.__pwned") is None
        kinds = w.page.eval_on_selector_all("#before [class^=tok-]", "els => els.map((e) => [e.className, e.textContent])")
        for token in (["tok-keyword", "def"], ["tok-keyword", "for"], ["tok-comment", "# step"], ["tok-number", "10"],
                      ["tok-string", '"""Sum the items."""']):
            assert token in kinds, token
        assert len(w.page.query_selector_all("#before .ln")) == 30  # the API's last 30 lines of the prefix
        task = review["tasks"][w.shown()["id"] - 1]
        cursor = w.page.inner_text("#before .cursor-line")
        assert cursor.split()[0] == str(task["line"]) and cursor.rstrip().endswith("▌")
        pluses = [w.page.eval_on_selector_all(f"#{side} .add .gutter", "els => els.map((e) => e.textContent)")
                  for side in ("left", "right")]
        assert sorted(pluses) == [["+"], ["+", "+"]]  # one answer has one line, the other two
        assert w.problems == []
    finally:
        context.close()


def test_a_second_reviewer_counts_separately_and_a_refused_vote_shows_the_server_error(review, browser):  # noqa: F811
    before = report(review["server"], review["id"])["vote_counts"]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    w = Watched(context, allowed_statuses=(409,))
    other = Watched(context, allowed_statuses=(409,))  # the same reviewer in a second tab
    try:
        name_prompt(w, review, "second-reviewer")
        w.state("voting")
        assert w.page.inner_text("#progress") == f"0 of {SHOWN}"  # the first reviewer's votes are not this one's
        cast = vote_through(w, review, ["1", "2", "=", "1", "2"])
        w.state("voting")
        other.page.goto(review["url"], wait_until="domcontentloaded")  # remembers the name: no prompt
        other.state("voting")
        task_id = w.shown()["id"]
        assert other.shown()["id"] == task_id and other.page.inner_text("#progress") == f"5 of {SHOWN}"
        w.page.keyboard.press("=")
        w.state("voted")
        other.page.keyboard.press("2")  # the same task again: the server refuses it
        other.state("error")
        duplicate = httpx.post(f"{review['server'].url}/v1/reviews/{review['id']}/votes", timeout=30,
                               json={"task_id": task_id, "choice": "tie", "reviewer": "second-reviewer"})
        assert duplicate.status_code == 409
        message = other.page.inner_text("#error-text")
        assert "409" in message and duplicate.json()["error"] in message, message
        other.page.keyboard.press("Enter")  # "Try again" has the focus: it loads the next task
        other.state("voting")
        assert other.page.inner_text("#progress") == f"6 of {SHOWN}"
        assert w.problems == [] and other.problems == []
        assert leaks(w) == [] and leaks(other) == []
    finally:
        context.close()
    cast["counts"]["tie"] += 1
    got = report(review["server"], review["id"])["vote_counts"]
    assert got == {k: before[k] + cast["counts"][k] for k in before}


def test_unknown_review_is_a_404_page_and_the_page_names_no_adapter(review):
    server = review["server"]
    missing = httpx.get(server.url + "/review/rev-000000000000", timeout=30)
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
    assert "There is no review" in missing.text
    hostile = httpx.get(server.url + "/review/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", timeout=30)
    assert hostile.status_code == 404 and "&lt;img src=x onerror=alert(1)&gt;" in hostile.text
    assert "<img" not in hostile.text
    page = httpx.get(review["url"], timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert ADAPTER_A not in page.text and ADAPTER_B not in page.text
    assert "<script src" not in page.text and "<link rel=\"stylesheet\"" not in page.text  # self-contained


def test_with_auth_on_the_page_asks_for_a_token_then_works(model_dir, tmp_path, browser):  # noqa: F811
    data_dir = tmp_path / "auth"
    data_dir.mkdir()
    admin = new_token(data_dir, "ops", admin=True)  # the first token turns auth on
    user = new_token(data_dir, "carol")
    server = start_server(model_dir, data_dir)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    w = Watched(context, allowed_statuses=(401,))
    try:
        tasks = [make_task(i, False) for i in range(1, 4)]
        r = httpx.post(server.url + "/v1/reviews", json={"a": ADAPTER_A, "b": ADAPTER_B, "tasks": tasks},
                       headers=bearer(admin), timeout=60)
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        w.page.goto(f"{server.url}/review/{rid}", wait_until="domcontentloaded")
        w.page.wait_for_selector("#token-form:not([hidden])", timeout=30_000)
        assert "Authorization: Bearer" in w.page.inner_text("#token-reason")  # the server's 401, shown
        assert w.page.is_hidden("#app") and w.page.is_hidden("#name-form")
        w.page.keyboard.type("not-a-token")  # the token field has the focus
        with w.page.expect_response(lambda r: "/next" in r.url) as refused:
            w.page.keyboard.press("Enter")
        assert refused.value.status == 401
        w.page.wait_for_selector("#token-form:not([hidden])", timeout=30_000)  # asked again
        assert "the token is not valid" in w.page.inner_text("#token-reason")  # the server's 401 this time
        w.page.keyboard.type(user)  # the refused token is selected: typing replaces it
        w.page.keyboard.press("Enter")
        w.state("voting")
        assert w.page.inner_text("#progress") == "0 of 3"
        w.page.keyboard.press("=")
        w.state("voted")
        assert w.page.inner_text("#expected").strip() == tasks[w.shown()["id"] - 1]["expected"]
        assert w.page.evaluate("() => sessionStorage.getItem('codeloop.token')") == user
        assert w.page.evaluate("() => localStorage.getItem('codeloop.token')") is None
        assert leaks(w) == [] and w.problems == []
        assert report(server, rid, headers=bearer(admin))["vote_counts"] == {"a": 0, "b": 0, "tie": 1, "skip": 0}
    finally:
        context.close()
        server.stop()
