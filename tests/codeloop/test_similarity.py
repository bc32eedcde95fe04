"""Edit similarity (shared by `codeloop eval`, the trainer and the review report): the fast
edit distance gives exactly what the textbook table gives."""
from __future__ import annotations

import random

from codeloop.similarity import edit_similarity, levenshtein, trimmed_lines


def _table(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def test_levenshtein_matches_the_dynamic_programming_table():
    rng = random.Random(7)
    for _ in range(3000):
        alphabet = rng.choice(["ab", "abc ", "def x():\n\t", "é😀z"])
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 70)))
        if rng.random() < 0.4:  # mostly alike, as two answers for one line are
            b = a[: rng.randint(0, len(a))] + b[:4] + a[rng.randint(0, len(a)):]
        assert levenshtein(a, b) == _table(a, b) == levenshtein(b, a), (a, b)


def test_edit_similarity():
    assert edit_similarity("kitten", "sitting") == 1 - 3 / 7
    assert edit_similarity("", "") == 1.0 and edit_similarity("abc", "") == 0.0
    assert edit_similarity("x" * 5000 + "a", "x" * 5000 + "b") == 1 - 1 / 5001


def test_trimmed_lines():
    assert trimmed_lines("\n  \n  x = 1  \n\ty\n\n") == ["  x = 1", "\ty"]
    assert trimmed_lines("   ") == []
