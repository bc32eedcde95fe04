"""Suggestions that are not code for the cursor: a chat model's Markdown and prose, and a first
line that leaves the block the cursor is in.

A small instruct model prompted with code alone still writes like a chat answer at times:
"# Example usage:", a Markdown fence, "This function returns ...". Ghost text like that is never
what an engineer typing wants, so the suggestion ends before the first such line (and is empty
when that is its first line). Guessing, on purpose: lines inside a string or docstring, and
comments other than those that start an example, are left alone.
"""
from __future__ import annotations

import re

__all__ = ["cut_non_code", "leaves_block"]

_FENCE = re.compile(r"^\s*(?:```|~~~)")
# A capitalised sentence of words: "Here is the code:", "This function returns the sum." (or
# one of six words or more without the full stop).
_PROSE = re.compile(r"^\s*[A-Z][a-z']*(?:[ ,;-]+[A-Za-z'][a-z']*){3,}[.!?:]\s*$")
_LONG_PROSE = re.compile(r"^\s*[A-Z][a-z']*(?:[ ,;-]+[A-Za-z'][a-z']*){5,}\s*$")
# A comment at the left margin that starts a section of examples or tests after the code.
_EXAMPLE_COMMENT = re.compile(r"^(?:#|//|--)\s*(?:example|usage|test|tests|output|sample|driver|main)\b.*$", re.I)
_PROSE_LANGUAGES = frozenset({"markdown", "plaintext", "text", "restructuredtext", "rst", "latex", "tex",
                               "asciidoc", "org", "mdx", "git-commit", "html"})
_TRIPLE_QUOTES = re.compile(r'"""|\'\'\'')


def cut_non_code(text: str, prefix: str, language: str | None = None) -> str:
    """``text`` up to (without) its first Markdown fence, prose line or example-section comment
    (in a document of prose, e.g. Markdown, nothing is cut)."""
    if (language or "").lower() in _PROSE_LANGUAGES:
        return text
    in_string = len(_TRIPLE_QUOTES.findall(prefix)) % 2 == 1
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not in_string and (i > 0 or not _continues_code(prefix)):
            if _FENCE.match(line) or _PROSE.match(line) or _LONG_PROSE.match(line) or _EXAMPLE_COMMENT.match(line):
                return "\n".join(lines[:i]).rstrip()
        in_string ^= len(_TRIPLE_QUOTES.findall(line)) % 2 == 1
    return text


def leaves_block(text: str, prefix: str) -> bool:
    """Whether the suggestion's first line of code is indented less than the cursor's line,
    when that line holds only indentation (the editor's auto-indent put the cursor in a
    block): a new top-level ``def`` typed into a function body."""
    current = prefix[prefix.rfind("\n") + 1:]
    if current.strip() or not current:
        return False
    first = next((line for line in text.split("\n") if line.strip()), None)
    if first is None:
        return False
    # The first line continues the cursor's (its indentation is added to the cursor's).
    line = current + first if text.split("\n", 1)[0].strip() else first
    return _indent(line) < _indent(current)


def _continues_code(prefix: str) -> bool:
    """Whether the cursor is in the middle of a line of code (its first line then continues
    that line, and cannot be a prose line of its own)."""
    return bool(prefix[prefix.rfind("\n") + 1:].strip())


def _indent(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())
