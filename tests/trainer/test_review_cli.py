"""Blind review from the command line and from the trainer: `codeloop review create|list|report|close|delete`
against the real shared server on a repository built here, and `--publish review` deciding by
the reviewers' verdict."""
from __future__ import annotations

import json
import re

import httpx
import pytest

from codeloop.api_client import ApiClient
from tests.conftest import install_adapter
from tests.trainer.test_eval_cli import SINCE, codeloop, repo  # noqa: F401  (the module's repository fixture)
from trainer.config import PublishConfig
from trainer.heldout import HeldOutLine
from trainer.publish import publish
from trainer.review_tasks import expected_text, shown_context, wait_for_verdict

pytestmark = pytest.mark.slow


def test_expected_text_is_the_line_and_the_lines_after_it():
    line = HeldOutLine(repo="r", commit="c", time=0.0, path="a.py", line=3, language="python",
                       prefix="def f():\n    ", suffix="\n    y = 2\n\n    return y\nz = 1\nw = 2\n", expected="x = 1")
    assert expected_text(line) == "x = 1\n    y = 2\n\n    return y\nz = 1"
    assert expected_text(line, lines=2) == "x = 1\n    y = 2"
    before, after = shown_context(line, expected_lines=2)
    assert before == line.prefix and after == "\n\n    return y\nz = 1\nw = 2\n"  # the author's lines stay hidden
    long = HeldOutLine(**{**line.to_dict(), "prefix": "".join(f"row {i}\n" for i in range(100)) + "    "})
    before, _ = shown_context(long)
    assert before.startswith("row 61\n") and before.endswith("row 99\n    ")  # the last 40 lines


@pytest.fixture(scope="module")
def probe(server, make_adapter) -> str:
    folder = install_adapter(make_adapter(seed=11, scale=2.0), server.adapters_dir, "review-probe@1")
    httpx.post(server.url + "/v1/adapters", json={"name": "review-probe@1", "path": str(folder)}, timeout=120).raise_for_status()
    return "review-probe@1"


def vote_all(url: str, review_id: str, reviewer: str, choices: list[str]) -> list[dict]:
    """Vote through the reviewer's tasks with `choices` in turn (cycled); what was shown each time."""
    shown = []
    while True:
        nxt = httpx.get(f"{url}/v1/reviews/{review_id}/next", params={"reviewer": reviewer}, timeout=30).json()
        if nxt["task"] is None:
            return shown
        choice = choices[len(shown) % len(choices)]
        r = httpx.post(f"{url}/v1/reviews/{review_id}/votes", timeout=30,
                       json={"task_id": nxt["task"]["task_id"], "choice": choice, "reviewer": reviewer})
        assert r.status_code == 201, r.text
        shown.append(nxt["task"] | {"choice": choice, "expected": r.json()["expected"]})


def test_review_create_report_list_close(server, repo, probe):  # noqa: F811
    made = codeloop(server, "review", "create", "--repo", str(repo), "--since", SINCE, "--a", "base", "--b", probe,
                    "--per-file", "10", "--server", server.url, "--quiet")
    assert made.returncode == 0, made.stderr
    review_id = re.search(r"review (rev-\w+)", made.stdout).group(1)
    assert f"{server.url}/review/{review_id}" in made.stdout

    shown = vote_all(server.url, review_id, "rita", ["left", "right", "tie", "skip"])
    summary = httpx.get(f"{server.url}/v1/reviews/{review_id}", timeout=30).json()
    assert summary["tasks"] == 5 and len(shown) == summary["shown"] == 5 - summary["identical"]
    # the author's lines, shown after each vote, are the held-out line and the lines after it
    assert any(s["expected"].startswith("total = 2 * (width + height)\n") for s in shown) or summary["identical"]
    counts = summary["vote_counts"]
    assert counts["a"] + counts["b"] == sum(s["choice"] in ("left", "right") for s in shown)
    assert counts["tie"] == sum(s["choice"] == "tie" for s in shown)
    assert counts["skip"] == sum(s["choice"] == "skip" for s in shown)

    report = codeloop(server, "review", "report", review_id, "--server", server.url)
    assert report.returncode == 0, report.stderr
    assert f"review {review_id}" in report.stdout and probe in report.stdout and "too few decided tasks" in report.stdout
    as_json = json.loads(codeloop(server, "review", "report", review_id, "--server", server.url, "--json").stdout)
    assert as_json["arms"]["b"]["adapter"] == probe and as_json["voted_tasks"] == summary["voted_tasks"]

    listed = codeloop(server, "review", "list", "--server", server.url)
    assert listed.returncode == 0 and review_id in listed.stdout
    closed = codeloop(server, "review", "close", review_id, "--server", server.url)
    assert closed.returncode == 0 and f"closed {review_id}" in closed.stdout
    assert httpx.get(f"{server.url}/v1/reviews/{review_id}", timeout=30).json()["status"] == "closed"
    deleted = codeloop(server, "review", "delete", review_id, "--server", server.url)
    assert deleted.returncode == 0 and f"deleted {review_id}: 5 tasks, {len(shown)} votes" in deleted.stdout, deleted.stderr
    assert httpx.get(f"{server.url}/v1/reviews/{review_id}", timeout=30).status_code == 404
    again = codeloop(server, "review", "delete", review_id, "--server", server.url)
    assert again.returncode == 2 and review_id in again.stderr


def test_review_errors_are_clear(server, repo, probe, tmp_path):  # noqa: F811
    cases = [
        (["--a", "base", "--b", "base"], "name the same adapter"),
        (["--a", "base", "--b", "nope@9"], "has no adapter 'nope@9'"),
        (["--a", "base", "--b", probe, "--since", "2030-01-01"], "no added source lines"),
    ]
    for args, message in cases:
        since = [] if "--since" in args else ["--since", SINCE]
        done = codeloop(server, "review", "create", "--repo", str(repo), *since, *args, "--server", server.url, "--quiet")
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    unknown = codeloop(server, "review", "report", "rev-000000000000", "--server", server.url)
    assert unknown.returncode == 2 and "rev-000000000000" in unknown.stderr
    down = codeloop(server, "review", "list", "--server", "http://127.0.0.1:9")
    assert down.returncode == 2 and "127.0.0.1:9" in down.stderr


def _synthetic_review(url: str, a: str, b: str, n: int) -> str:
    tasks = [{"path": f"m{i}.py", "language": "python", "prefix": f"def f{i}():\n    ", "suffix": "\n",
              "expected": f"return {i}", "answer_a": f"return {i} + 1", "answer_b": f"return {i}"} for i in range(n)]
    r = httpx.post(url + "/v1/reviews", json={"a": a, "b": b, "tasks": tasks}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_publish_review_promotes_only_on_the_reviewers_verdict(server, probe, tmp_path):
    """The trainer's `review` action: promoted when the reviewers found the candidate better,
    left registered when the review was closed undecided or deleted."""
    config = PublishConfig(action="review")
    results = {"base": {}, "candidate": {}}  # no held-out lines: the gate cannot pass, the review decides
    folder = tmp_path / "candidate"
    folder.mkdir()
    api = ApiClient(server.url)
    try:
        undecided = _synthetic_review(server.url, "base", probe, 12)
        vote_all(server.url, undecided, "sam", ["tie"])
        decision = publish(api, probe, folder, None, results, config, registered=True,
                           review=lambda control: wait_for_verdict(api, undecided, wait_s=5, poll_s=0.2, echo=lambda _: None))
        assert decision.action == "registered" and "too few decided tasks" in decision.reason
        assert api.adapters()["live"] in (None, "base")

        gone = _synthetic_review(server.url, "base", probe, 12)  # deleted while the trainer waits on it
        httpx.delete(f"{server.url}/v1/reviews/{gone}", timeout=30).raise_for_status()
        decision = publish(api, probe, folder, None, results, config, registered=True,
                           review=lambda control: wait_for_verdict(api, gone, wait_s=5, poll_s=0.2, echo=lambda _: None))
        assert decision.action == "registered" and f"{gone} was deleted" in decision.reason

        better = _synthetic_review(server.url, "base", probe, 12)
        for reviewer in ("sam", "kim"):
            shown = []
            while (nxt := httpx.get(f"{server.url}/v1/reviews/{better}/next", params={"reviewer": reviewer}).json())["task"]:
                side = "left" if nxt["task"]["left"] == f"return {nxt['task']['path'][1:-3]}" else "right"  # b's answer
                httpx.post(f"{server.url}/v1/reviews/{better}/votes",
                           json={"task_id": nxt["task"]["task_id"], "choice": side, "reviewer": reviewer}).raise_for_status()
                shown.append(side)
            assert "left" in shown and "right" in shown  # left/right is shuffled per task
        decision = publish(api, probe, folder, None, results, config, registered=True,
                           review=lambda control: wait_for_verdict(api, better, wait_s=5, poll_s=0.2, echo=lambda _: None))
        assert decision.action == "promoted" and decision.review_id == better, decision.reason
        assert api.adapters()["live"] == probe
        gate = json.loads((folder / "codeloop.json").read_text())["gate"]
        assert gate["decision"] == "do_not_promote"  # the automatic gate had nothing to judge; people decided
    finally:
        api.promote("base")
        api.close()
