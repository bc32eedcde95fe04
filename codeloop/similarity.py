"""How alike a suggestion is to what the author wrote: edit similarity, and the lines compared.

One definition for everyone who scores suggestions: the trainer's held-out evaluation and
`codeloop eval` (trainer/evaluate.py, trainer/repo_eval.py) and the server's blind-review
report (feedback/review_scores.py), so that their figures mean the same thing.
"""
from __future__ import annotations

__all__ = ["edit_similarity", "levenshtein", "trimmed_lines"]


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / length of the longer string (1.0 for two empty strings)."""
    if a == b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def levenshtein(a: str, b: str) -> int:
    """The edit distance (insertions, deletions, substitutions of one character).

    Myers' bit-parallel algorithm (Hyyrö's form for edit distance): a column of the dynamic
    programming table is one Python integer, so each character of `a` costs a dozen
    big-integer operations instead of len(b) interpreted steps. On 250-character answers it is
    ~60x faster than the textbook table (which made a 1000-task review report take 40 s).
    """
    # The common ends cost nothing; most pairs of answers share a lot of them.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end = 0
    while end < len(a) - start and end < len(b) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a, b = a[start:len(a) - end], b[start:len(b) - end]
    if len(a) < len(b):
        a, b = b, a  # the shorter one is the bit pattern
    m = len(b)
    if m == 0:
        return len(a)
    positions: dict[str, int] = {}
    for i, char in enumerate(b):
        positions[char] = positions.get(char, 0) | (1 << i)
    full, top = (1 << m) - 1, 1 << (m - 1)
    plus, minus, distance = full, 0, m  # vertical deltas of the column: +1 / -1 bits
    for char in a:
        eq = positions.get(char, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        hplus = minus | ~(xh | plus)
        hminus = plus & xh
        if hplus & top:
            distance += 1
        elif hminus & top:
            distance -= 1
        # Shift in a +1: the first row of the table grows by one per character of `a`.
        hplus = (hplus << 1) | 1
        hminus <<= 1
        plus = (hminus | ~(xv | hplus)) & full
        minus = hplus & xv & full
    return distance


def trimmed_lines(text: str) -> list[str]:
    """Lines without trailing blanks, leading and trailing empty lines dropped."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines
