"""Blind review's statistics against cases worked by hand or in textbooks, and its report."""
from __future__ import annotations

import logging

import pytest

from feedback.review_rows import TaskAnswers
from feedback.review_scores import codebleu, codebleu_language, score_answer, score_tasks
from feedback.review_stats import build_report, fleiss_kappa, overall_verdict, pairwise_agreement, task_verdict
from feedback.stats import sign_test, wilson_interval

FUNCTION = "def total(items):\n    result = 0\n    for item in items:\n        result += item.price\n    return result\n"


def test_sign_test_is_the_exact_two_sided_binomial():
    assert sign_test(9, 1) == pytest.approx(0.021484375)  # 2 * (1 + 10) / 2**10
    assert sign_test(1, 9) == sign_test(9, 1)
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(600, 500) == pytest.approx(0.00281954499, rel=1e-9)  # past 1000 pairs: log space, as exact
    with pytest.raises(ValueError):
        sign_test(-1, 3)


def test_task_verdict_is_the_most_chosen_and_a_draw_is_a_tie():
    assert task_verdict({"a": 2, "b": 1}) == "a"
    assert task_verdict({"b": 1, "skip": 5}) == "b"  # skips abstain
    assert task_verdict({"a": 2, "b": 2}) == "tie"  # an even split between a and b
    assert task_verdict({"a": 1, "tie": 1}) == "tie"
    assert task_verdict({"tie": 2, "a": 1, "b": 1}) == "tie"
    assert task_verdict({"a": 2, "b": 1, "tie": 1}) == "a"
    assert task_verdict({"skip": 3}) is None and task_verdict({}) is None


def test_fleiss_kappa_of_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories; kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    assert pairwise_agreement(table) == pytest.approx(0.37802, abs=1e-4)  # P-bar: equal raters per subject


def test_agreement_edge_cases():
    assert fleiss_kappa([[2, 0, 0], [0, 2, 0]]) == pytest.approx(1.0)  # perfect, with chance at 1/2
    assert fleiss_kappa([[1, 1, 0], [1, 1, 0]]) == pytest.approx(-1.0)  # always split
    assert fleiss_kappa([[3, 0, 0], [2, 0, 0]]) is None  # one category only: chance agreement is 1
    assert fleiss_kappa([[1, 0, 0]]) is None and fleiss_kappa([]) is None
    # Pairs are pooled: 3 agreeing votes give 3 agreeing pairs of 3; a 1-1 split 0 of 1.
    assert pairwise_agreement([[3, 0, 0], [1, 1, 0]]) == pytest.approx(6 / 8)


def test_overall_verdict_needs_ten_decisive_tasks_and_a_significant_split():
    assert overall_verdict(0, 9, sign_test(9, 0)) == "too_few_votes"  # p = 0.004, but 9 lines
    assert overall_verdict(0, 10, sign_test(10, 0)) == "b_better"
    assert overall_verdict(9, 1, sign_test(1, 9)) == "a_better"
    assert overall_verdict(4, 6, sign_test(6, 4)) == "no_difference"


def test_codebleu_is_one_for_identical_code_and_lower_for_other_code():
    assert codebleu(FUNCTION, FUNCTION, "python") == pytest.approx(1.0)
    other = "def total(items):\n    return sum(i.price for i in items)\n"
    assert 0 < codebleu(other, FUNCTION, "python") < 0.8
    assert codebleu(FUNCTION, FUNCTION, "typescript") is None  # no grammar in codebleu
    assert codebleu(FUNCTION, FUNCTION, None) is None
    assert codebleu_language("rust") is None  # codebleu knows it, tree-sitter-rust is not installed


def test_codebleu_does_not_log_through_the_root_logger(caplog):
    with caplog.at_level(logging.WARNING):
        codebleu("x = 1", "y = 2", "python")  # no data flow in the reference: codebleu would warn
    assert not [r for r in caplog.records if "data-flow" in r.getMessage()]


def test_automatic_scores_judge_the_lines_the_answer_offers():
    expected = "result = compute(x)\n    return result\n"
    one_line = score_answer("result = compute(x)", expected, "python")
    assert one_line.exact_match and one_line.edit_sim == 1.0  # stopping early is no fault
    wrong = score_answer("\n    result = compute(y)\n", expected, "python")  # first non-blank line, stripped
    assert not wrong.exact_match and wrong.edit_sim == pytest.approx(1 - 1 / 19)
    assert score_answer("x", "x", "cobol").codebleu is None


def _task(task_id: int, a: str, b: str, expected: str = "return x", identical: bool = False) -> TaskAnswers:
    return TaskAnswers(task_id, f"f{task_id}.py", task_id * 10, "python", expected, a, b, identical)


def test_report_counts_verdicts_votes_and_disagreements():
    tasks = [_task(i, "return y", "return x") for i in range(1, 12)]  # B is right on 1..11 ...
    tasks[0] = _task(1, "return x", "return y")  # ... but on task 1 A is
    tasks.append(_task(12, "return x", "return x ", identical=True))
    votes = {i: {"b": 2} for i in range(2, 11)}  # 9 tasks for B, two votes each
    votes[1] = {"b": 1}  # people prefer B where the machine prefers A: a disagreement
    votes[11] = {"a": 1, "tie": 1}  # a draw between a and tie: tie
    votes[5] = {"b": 1, "a": 1, "skip": 1}  # an a-b split: tie
    votes[3] = {"skip": 2}  # only skips: no verdict, counted as skipped
    summary = {"id": "rev-x", "a": "base", "b": "cand@1", "votes": 99}
    report = build_report(summary, tasks, votes, score_tasks(tasks))

    assert report["arms"]["b"]["wins"] == 8 and report["arms"]["a"]["wins"] == 0
    assert report["ties"] == 2 and report["skips"] == 1
    assert report["vote_counts"] == {"a": 2, "b": 16, "tie": 1, "skip": 3}  # raw counts
    assert report["win_rate_b"] == 1.0 and report["win_rate_b_ci"] == list(wilson_interval(8, 8))
    assert report["sign_test_p"] == pytest.approx(2 / 256)
    assert report["verdict"] == "too_few_votes"  # 8 decisive tasks
    assert report["disagreements"] == [{"task_id": 1, "path": "f1.py", "line": 10, "people": "b", "automatic": "a"}]
    # Means over the 11 shown tasks: A exact on 1 of them, B on 10; codebleu where python.
    assert report["arms"]["a"]["exact_match"] == pytest.approx(1 / 11)
    assert report["arms"]["b"]["exact_match"] == pytest.approx(10 / 11)
    assert report["arms"]["b"]["codebleu"] > report["arms"]["a"]["codebleu"]
    # Agreement over tasks with two non-skip votes or more: the seven 2-0 tasks, 5 and 11 (split).
    assert report["agreement"]["tasks"] == 9
    assert report["agreement"]["pairwise"] == pytest.approx(7 * 2 / (9 * 2))
    detail = {d["task_id"]: d for d in report["tasks_detail"]}
    assert detail[12]["identical"] and detail[12]["verdict"] is None
    assert detail[3]["verdict"] is None and detail[3]["votes"] == {"a": 0, "b": 0, "tie": 0, "skip": 2}
    assert detail[1]["a"]["exact_match"] is True and detail[1]["b"]["edit_sim"] < 1


def test_report_of_a_review_without_votes():
    tasks = [_task(1, "return y", "return x")]
    report = build_report({"a": "base", "b": "cand@1"}, tasks, {}, score_tasks(tasks))
    assert report["verdict"] == "too_few_votes"
    assert report["win_rate_b"] is None and report["win_rate_b_ci"] is None and report["sign_test_p"] is None
    assert report["agreement"] == {"tasks": 0, "pairwise": None, "fleiss_kappa": None}
    assert report["vote_counts"] == {"a": 0, "b": 0, "tie": 0, "skip": 0}
