"""Blind review over HTTP, on real server processes and their real DuckDB files: create, the
reviewer's next task (which must never say which adapter wrote which), votes, close, report,
delete, forget; with auth off (the session's server) and on, and across a restart."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import duckdb
import httpx
import pytest

from tests.conftest import start_server
from tests.server.test_auth import bearer, eventually, new_token

pytestmark = pytest.mark.slow
MARK = "AUTHOR_ONLY"  # in `expected` alone: no answer, prefix or suffix holds it


def make_tasks(n: int, identical: tuple[int, ...] = ()) -> list[dict]:
    """Task i: B answers what the author wrote, A does not; `identical` tasks' answers differ
    only in blanks."""
    tasks = []
    for i in range(1, n + 1):
        right = f"return compute_{i}(x)"
        tasks.append({
            "path": f"pkg/mod_{i}.py", "language": "python", "commit": "c0ffee", "line": 52,
            "prefix": "".join(f"line_{k} = {k}\n" for k in range(50)) + f"def f_{i}(x):\n    ",
            "suffix": "\n" + "".join(f"after_{k} = {k}\n" for k in range(20)),
            "expected": f"{right}\n    {MARK}_{i} = 1",
            "answer_a": right + "  " if i in identical else f"return wrong_{i}(x)",
            "answer_b": right,
        })
    return tasks


def adapters() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"hidden-live-{tag}@1", f"hidden-cand-{tag}@2"


def create(server, tasks: list[dict], headers: dict | None = None, **extra) -> dict:
    a, b = adapters()
    r = httpx.post(server.url + "/v1/reviews", json={"a": a, "b": b, "repo": "/src/app", "since": "2026-01-01",
                                                      "tasks": tasks, **extra}, headers=headers or {}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


def next_task(server, review_id: str, reviewer: str | None, headers: dict | None = None) -> httpx.Response:
    params = {} if reviewer is None else {"reviewer": reviewer}
    return httpx.get(f"{server.url}/v1/reviews/{review_id}/next", params=params, headers=headers or {}, timeout=30)


def vote(server, review_id: str, task_id: int, choice: str, reviewer: str | None, headers: dict | None = None) -> httpx.Response:
    body = {"task_id": task_id, "choice": choice, **({} if reviewer is None else {"reviewer": reviewer})}
    return httpx.post(f"{server.url}/v1/reviews/{review_id}/votes", json=body, headers=headers or {}, timeout=30)


def report(server, review_id: str, headers: dict | None = None) -> dict:
    r = httpx.get(f"{server.url}/v1/reviews/{review_id}", headers=headers or {}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def vote_all(server, review_id: str, reviewer: str, tasks: list[dict], pick) -> dict[int, bool]:
    """Vote on every task the reviewer is handed; `pick(left_is_b)` chooses. task_id -> left is A."""
    seen = {}
    while (task := next_task(server, review_id, reviewer).json()["task"]) is not None:
        left_is_a = task["left"] == tasks[task["task_id"] - 1]["answer_a"]
        seen[task["task_id"]] = left_is_a
        r = vote(server, review_id, task["task_id"], pick(not left_is_a), reviewer)
        assert r.status_code == 201, r.text
    return seen


def test_create_answers_the_summary_and_the_list_has_it_first(server):
    tasks = make_tasks(5, identical=(2, 4))
    review = create(server, tasks)
    assert review["id"].startswith("rev-") and len(review["id"]) == 16
    assert review["name"] == f"{review['b']} vs {review['a']}" and review["status"] == "open"
    assert (review["tasks"], review["identical"], review["shown"]) == (5, 2, 3)
    assert (review["voted_tasks"], review["votes"]) == (0, 0) and review["url"] == f"/review/{review['id']}"
    assert review["repo"] == "/src/app" and review["since"] == "2026-01-01" and review["created_at"] > 1.7e9
    named = create(server, make_tasks(1), name="Friday's review")
    listed = httpx.get(server.url + "/v1/reviews").json()["reviews"]
    assert [r["id"] for r in listed[:2]] == [named["id"], review["id"]]
    assert listed[0]["name"] == "Friday's review"


@pytest.mark.parametrize("change, needle", [
    ({"b": "SAME"}, "two different adapters"),
    ({"tasks": []}, "tasks"),
    ({"tasks": [{**make_tasks(1)[0], "path": "p" * 1001}]}, "path"),
    ({"tasks": [{**make_tasks(1)[0], "answer_a": "x" * 20_001}]}, "answer_a"),
    ({"tasks": [{**make_tasks(1)[0], "secret_sauce": 1}]}, "secret_sauce"),
    ({"tasks": [{k: v for k, v in make_tasks(1)[0].items() if k != "expected"}]}, "expected"),
])
def test_bad_reviews_are_refused(server, change, needle):
    body = {"a": "SAME", "b": "other", "tasks": make_tasks(1), **change}
    r = httpx.post(server.url + "/v1/reviews", json=body, timeout=30)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]


def test_a_lone_surrogate_is_refused_not_a_500(server):
    body = json.dumps({"a": "x", "b": "y", "tasks": make_tasks(1)}).replace("return wrong_1", "return \\ud800")
    r = httpx.post(server.url + "/v1/reviews", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 422 and "answer_a" in r.json()["error"]  # no database column could hold it


def test_next_never_says_which_adapter_wrote_which(server):
    tasks = make_tasks(4, identical=(2,))
    review = create(server, tasks)
    handed = []
    while True:
        r = next_task(server, review["id"], "eve")
        assert r.status_code == 200, r.text
        text = r.text  # the raw answer: nothing in it may name the adapters or the sides
        for leak in (review["a"], review["b"], "hidden-", MARK, "answer_a", "answer_b", "a_on_left", "expected", "adapter"):
            assert leak not in text, leak
        body = r.json()
        assert body["review"] == {"id": review["id"], "name": f"Review {review['id']}", "status": "open"}
        assert body["progress"] == {"done": len(handed), "total": 3}
        task = body["task"]
        if task is None:
            break
        handed.append(task["task_id"])
        source = tasks[task["task_id"] - 1]
        assert {task["left"], task["right"]} == {source["answer_a"], source["answer_b"]}
        assert task["before"] == "\n".join(source["prefix"].split("\n")[-30:]) and task["before"].endswith("    ")
        assert task["after"] == "\n".join(source["suffix"].split("\n")[:10])
        assert (task["path"], task["language"], task["line"]) == (source["path"], "python", 52)
        done = vote(server, review["id"], task["task_id"], "skip", "eve")
        assert done.status_code == 201 and done.json()["expected"] == source["expected"]  # shown after the vote
    assert handed == [1, 3, 4]  # in order, the identical task left out


def test_votes_map_left_and_right_to_a_and_b_and_are_counted_once(server):
    tasks = make_tasks(12, identical=(3,))
    review = create(server, tasks)
    rid = review["id"]
    sides = {}
    for reviewer in ("r1", "r2"):  # both always choose B, wherever the page put it
        sides[reviewer] = vote_all(server, rid, reviewer, tasks, lambda left_is_b: "left" if left_is_b else "right")
    assert sides["r1"] == sides["r2"] and len(sides["r1"]) == 11  # the sides stay where they were drawn

    first = next_task(server, rid, "r3").json()["task"]["task_id"]
    assert vote(server, rid, first, "tie", "r3").json()["progress"] == {"done": 1, "total": 11}
    second = vote(server, rid, first, "left", "r3")
    assert second.status_code == 409 and "already voted" in second.json()["error"]
    assert vote(server, rid, 3, "left", "r3").status_code == 409  # identical answers: not voted on
    assert vote(server, rid, 99, "left", "r3").status_code == 404
    assert vote(server, rid, 1, "both", "r3").status_code == 422
    assert vote(server, "rev-000000000000", 1, "left", "r3").status_code == 404
    assert vote(server, rid, 2, "skip", "r3").status_code == 201

    rep = report(server, rid)
    assert rep["vote_counts"] == {"a": 0, "b": 22, "tie": 1, "skip": 1}  # every vote cast, once
    assert (rep["voted_tasks"], rep["shown"]) == (11, 11)
    assert rep["arms"]["b"]["wins"] == 11 and rep["arms"]["a"]["wins"] == 0 and rep["ties"] == 0
    assert rep["arms"]["a"]["adapter"] == review["a"] and rep["arms"]["b"]["adapter"] == review["b"]
    assert rep["sign_test_p"] == pytest.approx(2 / 2**11) and rep["verdict"] == "b_better"
    assert rep["win_rate_b"] == 1.0 and rep["win_rate_b_ci"][1] == 1.0
    assert rep["arms"]["b"]["exact_match"] == 1.0 and rep["arms"]["a"]["exact_match"] == 0.0
    assert rep["arms"]["b"]["edit_sim"] == 1.0 and 0 < rep["arms"]["b"]["codebleu"] <= 1.0
    assert rep["agreement"]["tasks"] == 11 and rep["agreement"]["pairwise"] < 1.0  # r3's tie disagrees once
    assert rep["disagreements"] == []  # people and edit similarity both prefer B
    detail = {d["task_id"]: d for d in rep["tasks_detail"]}
    assert detail[3]["identical"] and detail[3]["votes"] == {"a": 0, "b": 0, "tie": 0, "skip": 0}
    assert detail[first]["votes"]["tie"] == 1 and detail[first]["verdict"] == "b"


def test_a_closed_review_takes_no_votes(server):
    review = create(server, make_tasks(2))
    rid = review["id"]
    assert vote(server, rid, 1, "left", "dora").status_code == 201
    closed = httpx.post(f"{server.url}/v1/reviews/{rid}/close", timeout=30)
    assert closed.status_code == 200 and closed.json()["status"] == "closed" and closed.json()["votes"] == 1
    refused = vote(server, rid, 2, "left", "dora")
    assert refused.status_code == 409 and "closed" in refused.json()["error"]
    handed = next_task(server, rid, "dora").json()
    assert handed["task"] is None and handed["review"]["status"] == "closed"
    assert httpx.post(f"{server.url}/v1/reviews/{rid}/close", timeout=30).status_code == 200  # again: no change
    assert report(server, rid)["vote_counts"]["a"] + report(server, rid)["vote_counts"]["b"] == 1


def test_a_reviewer_is_required_with_auth_off(server):
    rid = create(server, make_tasks(1))["id"]
    for r in (next_task(server, rid, None), vote(server, rid, 1, "left", None),
              next_task(server, rid, "tab\there"), next_task(server, rid, "x" * 201), next_task(server, rid, "   ")):
        assert r.status_code == 422 and "reviewer" in r.json()["error"]


def test_unknown_reviews_are_404(server):
    for r in (httpx.get(server.url + "/v1/reviews/rev-nope"), httpx.post(server.url + "/v1/reviews/rev-nope/close"),
              next_task(server, "rev-nope", "x")):
        assert r.status_code == 404, r.text


def test_delete_removes_the_review_with_its_tasks_and_votes(server):
    kept, rid = create(server, make_tasks(2))["id"], create(server, make_tasks(3))["id"]
    assert vote(server, rid, 1, "left", "erin").status_code == 201
    gone = httpx.delete(f"{server.url}/v1/reviews/{rid}", timeout=60)
    assert gone.status_code == 200, gone.text
    assert (gone.json()["deleted"], gone.json()["id"], gone.json()["tasks"], gone.json()["votes"]) == (True, rid, 3, 1)
    listed = [r["id"] for r in httpx.get(server.url + "/v1/reviews").json()["reviews"]]
    assert rid not in listed and kept in listed
    for r in (httpx.get(f"{server.url}/v1/reviews/{rid}"), next_task(server, rid, "erin"), vote(server, rid, 2, "left", "erin"),
              httpx.delete(f"{server.url}/v1/reviews/{rid}")):
        assert r.status_code == 404 and rid in r.json()["error"], r.text
    assert report(server, kept)["tasks"] == 2


def test_forget_removes_the_reviewers_votes(server):
    rid = create(server, make_tasks(3))["id"]
    who = f"reviewer-{uuid.uuid4().hex[:6]}"
    vote_all(server, rid, who, make_tasks(3), lambda left_is_b: "left")
    vote(server, rid, 1, "right", "stays")
    gone = httpx.delete(f"{server.url}/v1/users/{who}", timeout=120)
    assert gone.status_code == 200, gone.text
    assert gone.json()["review_votes"] == 3 and gone.json()["completions"] == 0
    rep = report(server, rid)
    assert sum(rep["vote_counts"].values()) == 1 and rep["voted_tasks"] == 1
    assert next_task(server, rid, who).json()["progress"]["done"] == 0  # may vote afresh
    assert httpx.delete(f"{server.url}/v1/users/{who}", timeout=120).status_code == 404  # nothing left


def test_votes_survive_a_restart_and_auth_decides_who_votes(model_dir, tmp_path):
    tasks = make_tasks(4)
    server = start_server(model_dir, tmp_path / "data")
    try:
        rid = create(server, tasks)["id"]
        left_is_a = vote_all(server, rid, "r1", tasks, lambda left_is_b: "left")
        before = report(server, rid)
    finally:
        server.stop()
    # The file itself: "left" was stored as the side the task had drawn to the left.
    con = duckdb.connect(str(server.data_dir / "telemetry.duckdb"), read_only=True)
    rows = con.execute("SELECT t.task_id, t.a_on_left, v.choice FROM review_votes v JOIN review_tasks t "
                       "USING (review_id, task_id) WHERE v.reviewer = 'r1' ORDER BY 1").fetchall()
    con.close()
    assert [(task_id, a_on_left) for task_id, a_on_left, _ in rows] == sorted(left_is_a.items())
    assert all(choice == ("a" if a_on_left else "b") for _, a_on_left, choice in rows)

    server = start_server(model_dir, server.data_dir)
    try:
        assert report(server, rid) == before
        assert next_task(server, rid, "r1").json()["task"] is None

        admin, user = bearer(new_token(server.data_dir, "boss", admin=True)), bearer(new_token(server.data_dir, "carol"))
        # The server re-reads the token file within a second: until then the newer token is unknown.
        eventually(lambda: httpx.get(server.url + "/v1/reviews", headers=user).status_code == 403)
        assert httpx.get(server.url + "/v1/reviews/" + rid).status_code == 401
        for r in (httpx.get(server.url + "/v1/reviews/" + rid, headers=user), httpx.get(server.url + "/v1/reviews", headers=user),
                  httpx.post(server.url + f"/v1/reviews/{rid}/close", headers=user),
                  httpx.delete(server.url + f"/v1/reviews/{rid}", headers=user),
                  httpx.post(server.url + "/v1/reviews", json={"a": "x", "b": "y", "tasks": tasks}, headers=user)):
            assert r.status_code == 403, r.text
        # The token's user votes, whatever reviewer the request names: r1 has voted on everything.
        handed = next_task(server, rid, "r1", headers=user).json()
        assert handed["progress"] == {"done": 0, "total": 4} and handed["task"]["task_id"] == 1
        assert vote(server, rid, 1, "tie", "r1", headers=user).status_code == 201
        assert vote(server, rid, 1, "tie", None, headers=user).status_code == 409  # carol again
        assert sum(report(server, rid, headers=admin)["vote_counts"].values()) == 5
        gone = httpx.delete(server.url + "/v1/users/carol", headers=admin, timeout=120)
        assert gone.status_code == 200 and gone.json()["review_votes"] == 1
        other = create(server, make_tasks(2), headers=admin)["id"]  # deleted by the admin: gone from the file below
        assert httpx.delete(server.url + f"/v1/reviews/{other}", headers=admin, timeout=60).status_code == 200
    finally:
        server.stop()
    # `codeloop forget` with no server running: in the file itself.
    done = subprocess.run([sys.executable, "-m", "codeloop.cli", "forget", "--user", "r1"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CODELOOP_CONFIG": os.devnull, "CODELOOP_PORT": "9",
                                            "CODELOOP_DATA_DIR": str(server.data_dir)})
    assert done.returncode == 0 and "deleted their 4 blind-review votes" in done.stdout, done.stdout + done.stderr
    con = duckdb.connect(str(server.data_dir / "telemetry.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM review_votes").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM review_tasks").fetchall() == [(4,)]  # the review stays
    assert con.execute("SELECT id FROM reviews").fetchall() == [(rid,)]  # the deleted one left nothing
    con.close()
