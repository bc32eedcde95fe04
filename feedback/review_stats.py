"""Statistics of a blind review, and the report that puts them together.

Each task gets a verdict from its votes (a, b or tie; skips abstain). B's win rate is B's
wins over the decisive verdicts, with a Wilson interval; the sign test asks whether that
split could be a coin's (ties left out, as in McNemar's test). How far reviewers agree is
the share of agreeing pairs of votes on a task and Fleiss' kappa, which discounts the
agreement that chance alone would give. Below MIN_DECISIVE decisive tasks no verdict is given:
with 9 of 9 for one side the sign test can reach p = 0.004, but one reviewer's taste on nine
lines says little about an adapter.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean

from .review_rows import CHOICES, TaskAnswers
from .review_scores import AnswerScore
from .stats import sign_test, wilson_interval

MIN_DECISIVE = 10
ALPHA = 0.05
VERDICTS = ("a", "b", "tie")  # what a task's non-skip votes may say


def task_verdict(votes: Mapping[str, int]) -> str | None:
    """The most chosen of a, b and tie among the task's non-skip votes; a draw at the top (an
    even split between a and b, or a side level with tie) is a tie. None with no such votes."""
    counts = {c: votes.get(c, 0) for c in VERDICTS}
    top = max(counts.values())
    if top == 0:
        return None
    leaders = [c for c, n in counts.items() if n == top]
    return leaders[0] if len(leaders) == 1 else "tie"


def pairwise_agreement(items: Sequence[Sequence[int]]) -> float | None:
    """Of all pairs of votes cast on the same task, the share that chose the same; `items` are
    per task the votes per category. None without a task of two votes or more."""
    agreeing = sum(n * (n - 1) for counts in items for n in counts)
    pairs = sum(sum(counts) * (sum(counts) - 1) for counts in items)
    return agreeing / pairs if pairs else None


def fleiss_kappa(items: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa over tasks with two votes or more (the number may differ between tasks:
    each task's agreement is its own share of agreeing pairs, the categories' shares pool all
    votes). None where it is undefined: no such task, or every vote in one category."""
    rated = [counts for counts in items if sum(counts) >= 2]
    if not rated:
        return None
    observed = fmean(sum(n * (n - 1) for n in counts) / (sum(counts) * (sum(counts) - 1)) for counts in rated)
    total = sum(sum(counts) for counts in rated)
    by_category = [sum(column) / total for column in zip(*rated)]
    expected = sum(p * p for p in by_category)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def overall_verdict(a_wins: int, b_wins: int, p_value: float) -> str:
    if a_wins + b_wins < MIN_DECISIVE:
        return "too_few_votes"
    if p_value < ALPHA:
        return "b_better" if b_wins > a_wins else "a_better"
    return "no_difference"


def _automatic(a: AnswerScore, b: AnswerScore) -> str:
    """The side the machine would pick: the closer edit similarity."""
    return "a" if a.edit_sim > b.edit_sim else "b" if b.edit_sim > a.edit_sim else "tie"


def _mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return fmean(known) if known else None


def build_report(summary: Mapping, tasks: Sequence[TaskAnswers], votes: Mapping[int, Mapping[str, int]],
                 scores: Mapping[int, tuple[AnswerScore, AnswerScore]]) -> dict:
    """The report of GET /v1/reviews/{id}: `summary`'s fields, then the figures. `votes`:
    task_id -> votes per choice; `scores`: task_id -> (A's, B's) from review_scores.score_tasks."""
    none = dict.fromkeys(CHOICES, 0)
    details, agreement_items, disagreements = [], [], []
    verdicts = dict.fromkeys(("a", "b", "tie", "skip"), 0)
    for task in tasks:
        counts = {**none, **votes.get(task.task_id, {})}
        verdict = None if task.identical else task_verdict(counts)
        if verdict is not None:
            verdicts[verdict] += 1
        elif not task.identical and counts["skip"]:
            verdicts["skip"] += 1  # looked at, and nobody would choose
        if not task.identical and sum(counts[c] for c in VERDICTS) >= 2:
            agreement_items.append([counts[c] for c in VERDICTS])
        score_a, score_b = scores[task.task_id]
        automatic = _automatic(score_a, score_b)
        if verdict in ("a", "b") and verdict != automatic:
            disagreements.append({"task_id": task.task_id, "path": task.path, "line": task.line,
                                  "people": verdict, "automatic": automatic})
        details.append({"task_id": task.task_id, "path": task.path, "line": task.line, "identical": task.identical,
                        "votes": counts, "verdict": verdict, "a": score_a.to_dict(), "b": score_b.to_dict()})
    shown = [scores[t.task_id] for t in tasks if not t.identical]
    arms = {}
    for side, adapter, index in (("a", summary["a"], 0), ("b", summary["b"], 1)):
        sides = [pair[index] for pair in shown]
        arms[side] = {"adapter": adapter, "wins": verdicts[side],
                      "exact_match": _mean([float(s.exact_match) for s in sides]),
                      "edit_sim": _mean([s.edit_sim for s in sides]),
                      "codebleu": _mean([s.codebleu for s in sides])}
    a_wins, b_wins = verdicts["a"], verdicts["b"]
    decisive = a_wins + b_wins
    p_value = sign_test(b_wins, a_wins)
    return {
        **summary,
        "arms": arms,
        "ties": verdicts["tie"],
        "skips": verdicts["skip"],
        # Raw counts of votes on shown tasks (identical ones take none).
        "vote_counts": {c: sum(v.get(c, 0) for v in votes.values()) for c in CHOICES},
        "win_rate_b": b_wins / decisive if decisive else None,
        "win_rate_b_ci": list(wilson_interval(b_wins, decisive)) if decisive else None,
        "sign_test_p": p_value if decisive else None,
        "agreement": {"tasks": len(agreement_items), "pairwise": pairwise_agreement(agreement_items),
                      "fleiss_kappa": fleiss_kappa(agreement_items)},
        "verdict": overall_verdict(a_wins, b_wins, p_value),
        "disagreements": disagreements,
        "tasks_detail": details,
    }
