"""An answer the engine cut short (``max_tokens`` or the latency budget) ends where code can end.

On a slow CPU the 2 s budget stops the model mid-statement: "for" with nothing after it, or
``return fib(n - 1) + fib(n``. Ghost text like that is wrong as shown, so a cut answer goes back
to its last complete line, and a cut first line back to the last token after which it reads as
a whole statement (its own brackets closed, no operator, comma or keyword left dangling); when
none is left, nothing is shown. Guessing, on purpose: the text is not parsed.
"""
from __future__ import annotations

import re

__all__ = ["trim_truncated"]

# Words after which a statement cannot stop (in the languages codeloop completes most).
_DANGLING_WORDS = frozenset({
    "and", "or", "not", "in", "is", "if", "elif", "else", "for", "while", "with", "as", "from",
    "import", "def", "class", "lambda", "await", "async", "raise", "assert", "del", "yield",
    "try", "except", "case", "match", "new", "const", "let", "var", "function", "func", "fn",
    "then", "do", "switch", "typeof", "instanceof", "extends", "implements", "package", "struct",
    "type", "interface", "enum", "pub", "mut", "impl", "use", "go", "defer", "select",
})
# Possessive quantifiers and look-behinds keep every pattern linear (tests/feedback/test_linear_time.py).
_DANGLING_END = re.compile(r"(?:[-+*/%=<>!&|^~,.(\[{@\\?]|->|=>|::)\s*+$")
_BLOCK_KEYWORDS = frozenset({
    "if", "elif", "else", "for", "while", "def", "class", "with", "try", "except", "finally",
    "match", "case", "switch", "function", "fn", "func", "async",
})
_WORD_AT_START = re.compile(r"(?<!\s)\s*+(\w++)")
_WORD_AT_END = re.compile(r"(?<!\w)(\w++)\s*+$")
_WORD_START = re.compile(r"\w+")
_TOKEN_END = re.compile(r"\w+|[^\w\s]")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def trim_truncated(text: str, current_line: str) -> str:
    """``text`` without a half statement at its end. ``current_line``: what the cursor's line
    holds before the cursor (the answer's first line continues it)."""
    head, newline, last = text.rpartition("\n")
    if not last.strip():
        return text
    if newline and head.strip():
        # Back to the last complete line; not one that opens a block whose body was cut.
        lines = head.split("\n")
        while len(lines) > 1 and lines[-1].rstrip().endswith((":", "{")):
            lines.pop()
        return "\n".join(lines)
    start = head + newline  # only whitespace before the partial line
    for end in reversed([m.end() for m in _TOKEN_END.finditer(last)]):
        # A name right before "(", "[", "." or "=" is half of a call, index, attribute or assignment.
        if last[end:].lstrip()[:1] in ("(", "[", ".", "="):
            continue
        if _reads_whole(current_line if not newline else "", last[:end]):
            return start + last[:end]
    # At least the end of the word being typed ("os.pa" -> "th"): a token that makes sense.
    word = _WORD_START.match(last)
    if not newline and word and (current_line[-1:].isalnum() or current_line.endswith("_")):
        return word.group(0)
    return ""


def _reads_whole(before: str, piece: str) -> bool:
    if _unclosed(before, piece):
        return False
    line = (before + piece).rstrip()
    first = _WORD_AT_START.match(line)
    if first and first.group(1) in _BLOCK_KEYWORDS:  # `for x in y` is whole only with its ":" or "{"
        return line.endswith((":", "{"))
    if _DANGLING_END.search(line) and not line.endswith(("++", "--")):
        return False
    word = _WORD_AT_END.search(line)
    return not (word and word.group(1) in _DANGLING_WORDS)


def _unclosed(before: str, piece: str) -> bool:
    """Whether the line ends inside a string, or ``piece`` leaves a bracket it opened open
    (closing the prefix's brackets is fine). Brackets inside strings do not count."""
    stack: list[str] = []
    quote = ""
    escaped = False
    for i, c in enumerate(before + piece):
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif i < len(before):
            continue
        elif c in "([{":
            stack.append(c)
        elif c in _PAIRS and stack and stack[-1] == _PAIRS[c]:
            stack.pop()
    return bool(stack) or bool(quote)
