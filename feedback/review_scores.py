"""Automatic scores of a blind review's answers against what the author wrote.

Per answer: exact match of the first line, edit similarity of the lines the answer spans, and
CodeBLEU (Ren et al. 2020; the `codebleu` package, pinned with the tree-sitter grammars it
works with) where the language has a grammar installed. The report sets them beside the
people's votes: a task where people and edit similarity disagree is worth a look.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from codeloop.similarity import edit_similarity, trimmed_lines

from .review_rows import TaskAnswers

log = logging.getLogger("codeloop.feedback")

CODEBLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)  # n-gram, weighted n-gram, syntax, data flow
# Editors' language ids (trainer/config.py SOURCE_EXTENSIONS) -> codebleu's names; the others
# (typescript, kotlin, ...) have no grammar in codebleu 0.7.0.
_CODEBLEU_NAMES = {
    "python": "python", "javascript": "javascript", "javascriptreact": "javascript", "java": "java",
    "csharp": "c_sharp", "c_sharp": "c_sharp", "php": "php", "c": "c", "cpp": "cpp", "go": "go", "ruby": "ruby",
    "rust": "rust",
}


@dataclass(frozen=True)
class AnswerScore:
    exact_match: bool
    edit_sim: float
    codebleu: float | None  # None: no grammar for the task's language

    def to_dict(self) -> dict:
        return asdict(self)


def first_line(text: str) -> str:
    """The first non-blank line, stripped: the cursor's indentation belongs to the prefix."""
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


def compared_spans(answer: str, expected: str) -> tuple[str, str]:
    """The answer's lines and as many of the expected ones: a suggestion that stops early is
    judged on what it offered, not on the lines it left to the author."""
    got = trimmed_lines(answer)
    want = trimmed_lines(expected)[: max(1, len(got))]
    for lines in (got, want):
        if lines:
            lines[0] = lines[0].strip()
    return "\n".join(got), "\n".join(want)


def score_answer(answer: str, expected: str, language: str | None) -> AnswerScore:
    got, want = compared_spans(answer, expected)
    return AnswerScore(exact_match=first_line(answer) == first_line(expected), edit_sim=edit_similarity(got, want),
                       codebleu=codebleu(got, want, language))


def score_tasks(tasks: Sequence[TaskAnswers]) -> dict[int, tuple[AnswerScore, AnswerScore]]:
    """task_id -> (A's score, B's score). Tasks never change, so callers may keep the result."""
    return {t.task_id: (score_answer(t.answer_a, t.expected, t.language), score_answer(t.answer_b, t.expected, t.language))
            for t in tasks}


def codebleu(answer: str, expected: str, language: str | None) -> float | None:
    """CodeBLEU of `answer` against `expected`; None where `language` has no grammar installed."""
    name = codebleu_language(language)
    if name is None:
        return None
    from codebleu import calc_codebleu

    try:
        return float(calc_codebleu([expected], [answer], lang=name, weights=CODEBLEU_WEIGHTS)["codebleu"])
    except Exception as exc:  # a parser's failure on odd code must not cost the whole report
        log.debug("codebleu failed on a %s answer: %s", language, exc)
        return None


@functools.cache
def codebleu_language(language: str | None) -> str | None:
    """codebleu's name for an editor's language id when its tree-sitter grammar is installed."""
    name = _CODEBLEU_NAMES.get((language or "").lower())
    if name is None:
        return None
    try:
        from codebleu.utils import get_tree_sitter_language

        _quiet_codebleu()
        get_tree_sitter_language(name)
    except Exception:  # codebleu or the grammar not installed, or a grammar this tree-sitter cannot load
        log.info("codebleu: no usable grammar for %s; its scores are null", language)
        return None
    return name


def _quiet_codebleu() -> None:
    """codebleu warns through `logging.warning()` (the root logger, which that call also sets
    up with a handler when it has none) whenever a reference has no data flow, i.e. for most
    one-line answers. Its module gets a logger of its own, kept at ERROR."""
    from codebleu import dataflow_match

    quiet = logging.getLogger("codebleu")
    quiet.setLevel(logging.ERROR)
    dataflow_match.logging = quiet  # type: ignore[attr-defined]  # only .warning() is called on it
