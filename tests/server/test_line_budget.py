"""The line budget (line_latency_ms): past its deadline, a multi-line answer ends with the
line it has completed. Plain functions here; the real server's answer in test_http_completions.py."""
from __future__ import annotations

import time

from server.completions import LineBudget, generation_params, line_budget_fired
from server.schemas import CompletionRequest

BLOCK = "if n < 2:\n        return False\n"


def test_before_its_deadline_the_answer_goes_on():
    budget = LineBudget(time.monotonic() + 60)
    assert not budget(BLOCK) and not budget.fired


def test_past_its_deadline_it_ends_at_the_first_complete_line():
    budget = LineBudget(time.monotonic() - 1)
    assert not budget("if n < 2:")  # no line is complete yet
    assert not budget("\n")  # the rest of the cursor's line was empty: nothing complete to show
    assert not budget("   \n    ")
    assert budget("if n < 2:\n") and budget.fired


def test_the_check_it_wraps_still_ends_the_answer_and_is_not_its_doing():
    budget = LineBudget(time.monotonic() + 60, inner=lambda text: "return" in text)
    assert budget(BLOCK) and not budget.fired  # the block check's stop is the model's end, not a cut


def test_only_requests_that_ask_for_it_get_one():
    body = {"segments": {"prefix": "def f(n):\n    ", "suffix": ""}}
    plain = generation_params(CompletionRequest(**body), 32, (), "def f(n):\n    ", "", "python", time.monotonic())
    hurried = generation_params(CompletionRequest(**body, line_latency_ms=200), 32, (), "def f(n):\n    ", "", "python",
                                time.monotonic())
    assert not isinstance(plain.stop_check, LineBudget)
    assert isinstance(hurried.stop_check, LineBudget) and hurried.stop_check.inner is not None
    assert not line_budget_fired(plain) and not line_budget_fired(hurried)
