"""Turn raw model output into the suggestion a Copilot-like client should show.

``postprocess`` applies, in order: stop strings; a cut answer's half statement; an echo of the
prefix; the cursor line's indent; a first line that leaves the block, and Markdown or prose
(server/not_code.py); one line or one block; repetition; overlap
with the suffix; bracket balance; trailing whitespace; and finally returns "" for garbage.
Each step only ever shortens the text, so the result is always a prefix of the model output
(minus trailing whitespace and a suffix overlap). Each step is a public helper, tested alone.

Simplifications, on purpose: brackets inside strings and comments are counted like code (the
text is not parsed), tabs count as 4 columns of indentation, and "\\r" at a line end is
dropped with the other trailing whitespace.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from server.not_code import cut_non_code, leaves_block
from server.truncated import trim_truncated

__all__ = [
    "balance_brackets",
    "block_ended",
    "cut_at_stop",
    "cut_repetition",
    "cut_suffix_overlap",
    "cut_to_block",
    "fix_cursor_line_indent",
    "is_garbage",
    "postprocess",
    "strip_trailing_whitespace",
    "wants_multiline",
]

_PAIRS = {")": "(", "]": "[", "}": "{"}
_BRACKET = re.compile(r"[()\[\]{}]")
_OPENER_ENDINGS = (":", "{", "(", "[", "=>")
_OPENER_WORD = re.compile(r"(?:^|\W)(?:do|then|else|begin)$")
_CLOSER_WORD = re.compile(r"(?:end|fi|done|esac)\b")
_REPEATED_PUNCTUATION = re.compile(r"([^)\]}])\1{3}")  # "----", "....": not "))))"
# Languages whose blocks end by indentation alone; elsewhere closing braces end them too.
_INDENT_LANGUAGES = frozenset({"python", "yaml", "nim", "haskell", "fsharp", "coffeescript"})
_MAX_OVERLAP = 200


def postprocess(
    text: str,
    prefix: str,
    suffix: str,
    *,
    language: str | None = None,
    stop: Sequence[str] = (),
    truncated: bool = False,
) -> str:
    """The suggestion to show for ``text`` generated between ``prefix`` and ``suffix``;
    ``truncated``: the engine cut it (max tokens or the latency budget), so its end may be
    half a statement (server/truncated.py)."""
    cut = cut_at_stop(text, stop)
    text = trim_truncated(cut, _current_line(prefix)) if truncated and cut == text else cut
    text = drop_echo(text, prefix)
    text = fix_cursor_line_indent(text, prefix)
    multiline = wants_multiline(prefix, suffix)
    if multiline and leaves_block(text, prefix):
        return ""
    text = cut_non_code(text, prefix, language)
    text = cut_to_block(text, prefix, language=language) if multiline else text.split("\n")[0]
    text = cut_repetition(text, prefix)
    text = cut_suffix_overlap(text, prefix, suffix)
    text = balance_brackets(text, prefix, suffix, multiline=multiline)
    text = strip_trailing_whitespace(text)
    return "" if is_garbage(text) else text


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the earliest occurrence of any stop string."""
    cuts = [i for s in stop if s and (i := text.find(s)) != -1]
    return text[: min(cuts)] if cuts else text


def wants_multiline(prefix: str, suffix: str) -> bool:
    """Whether a suggestion may span lines.

    Not in the middle of a line (code both before and after the cursor), nor after code that
    does not open a block; yes on an empty or indentation-only line, or after a block opener
    (``:`` ``{`` ``(`` ``[`` ``=>`` ``do`` ``then`` ``else`` ``begin``).
    """
    current = _current_line(prefix)
    if not current.strip():
        return True
    if suffix.split("\n", 1)[0].strip():
        return False
    line = current.rstrip()
    return line.endswith(_OPENER_ENDINGS) or bool(_OPENER_WORD.search(line))


def cut_to_block(text: str, prefix: str, *, language: str | None = None) -> str:
    """Keep only the block the cursor is in.

    The block's indentation is that of its first non-empty line (after the cursor's line when
    the cursor follows a block opener). It ends before the first later line indented less,
    unless that line closes the block (``}``, ``)``, ``]``, ``end``…), which is kept. Outside
    indentation-only languages it also ends after a line that closes a bracket the text did
    not open. Two blank lines in a row end it too.
    """
    lines = text.split("\n")
    current = _current_line(prefix)
    full = [current + lines[0], *lines[1:]]  # whole lines; the first continues the cursor's
    first_body = 1 if current.strip() else 0
    braces = (language or "").lower() not in _INDENT_LANGUAGES
    block_indent: int | None = None
    depth, blanks, seen_code = 0, 0, False
    for i, line in enumerate(full):
        if not line.strip():
            blanks += 1
            if blanks == 2 and seen_code:
                return "\n".join(lines[: i - 1])
            continue
        blanks, seen_code = 0, True
        if i >= first_body:
            indent = _indent(line)
            if block_indent is None:
                block_indent = indent
            elif indent < block_indent:
                return "\n".join(lines[: i + 1 if _closes_block(line) else i])
        depth += _bracket_delta(lines[i])
        if braces and depth < 0:
            return "\n".join(lines[: i + 1])
    return text


def block_ended(text: str, prefix: str, *, language: str | None = None) -> bool:
    """Whether the block the cursor is in has ended within the complete lines of `text` (raw
    model output so far), so that `cut_to_block` will cut whatever is generated from here
    on: an engine can stop. Only complete lines count: the line that ends the block may
    still turn out to close it (``en`` → ``end``) and be kept.
    """
    text = fix_cursor_line_indent(drop_echo(text, prefix), prefix)
    complete = text[: text.rfind("\n") + 1]
    if not complete:
        return False
    complete = complete[:-1]  # without the newline that completes the last line
    return len(cut_to_block(complete, prefix, language=language)) < len(complete)


def drop_echo(text: str, prefix: str) -> str:
    """Drop the prefix's last lines when the model starts by repeating them, keep what follows.

    Small models often restart the statement they were given (``def f(n):`` → ``\ndef f(n):\n
    body``). On an empty or indentation-only cursor line, leading lines equal to the prefix's
    last non-empty lines are removed, so the suggestion is the continuation; the cursor line's
    indentation is not repeated.
    """
    current = _current_line(prefix)
    if current.strip():
        return text
    before = [ln.strip() for ln in prefix[: len(prefix) - len(current)].split("\n") if ln.strip()]
    lines = (current + text).split("\n")
    i, echoed = 0, 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    # The longest run of leading lines that equals the end of the prefix.
    for k in range(min(len(before), len(lines) - i), 0, -1):
        run = [ln.strip() for ln in lines[i : i + k]]
        if run == before[-k:] and all(run) and any(_meaningful(ln) for ln in run):
            echoed = k
            break
    if not echoed:
        return text
    rest = lines[i + echoed :]
    if rest and rest[0].startswith(current):
        rest[0] = rest[0][len(current) :]
    return "\n".join(rest)


def fix_cursor_line_indent(text: str, prefix: str) -> str:
    """On an indented, otherwise empty cursor line, do not indent again.

    The cursor already sits at the indentation the editor chose; a model that starts with
    more whitespace (SmolLM2 after "def f():\n    " writes "     if ...") would push the
    suggestion too far right. The first line's leading whitespace goes, and later lines move
    left by as much, keeping their indentation relative to the first.
    """
    current = _current_line(prefix)
    if not current or current.strip():
        return text
    first = text.partition("\n")[0]
    extra = first[: len(first) - len(first.lstrip(" \t"))]
    if not extra or not first.strip():
        return text
    lines = [line[len(extra):] if line.startswith(extra) else line for line in text.split("\n")]
    return "\n".join(lines)


def cut_repetition(text: str, prefix: str) -> str:
    """Cut where the model restarts or loops.

    A first line that repeats the prefix's last non-empty line (the model starting over) and a
    line equal to the line before it are cut, with everything after. Only lines with a letter
    or digit count: a repeated ``}`` is usually right.
    """
    lines = text.split("\n")
    current = _current_line(prefix)
    full = [current + lines[0], *lines[1:]]
    if not current.strip():
        before = prefix[: len(prefix) - len(current)]
        previous = next((ln for ln in reversed(before.split("\n")) if ln.strip()), "")
        first = next((i for i, ln in enumerate(full) if ln.strip()), None)
        line = full[first] if first is not None else ""
        if _meaningful(line) and line.strip() == previous.strip():
            return "\n".join(lines[:first])
    for i in range(1, len(full)):
        if _meaningful(full[i]) and full[i].rstrip() == full[i - 1].rstrip():
            return "\n".join(lines[:i])
    return text


def cut_suffix_overlap(text: str, prefix: str, suffix: str) -> str:
    """Remove text the suffix already holds.

    When the cursor ends its line, a line equal (indentation included) to the suffix's first
    non-empty line is cut with everything after it. Then, if the end of the text equals the
    start of the suffix, that overlap is removed; a one- or two-character overlap only when it
    is punctuation (``)``, ``;``…), so ``x = 1`` before ``1 + y`` keeps its ``1``.
    """
    suffix_lines = suffix.split("\n")
    target = next((ln.rstrip() for ln in suffix_lines[1:] if ln.strip()), None)
    if target is not None and not suffix_lines[0].strip():
        lines = text.split("\n")
        full = [_current_line(prefix) + lines[0], *lines[1:]]
        same = next((i for i, line in enumerate(full) if line.rstrip() == target), None)
        if same is not None:
            text = "\n".join(lines[:same])
    text = text.rstrip()
    for k in range(min(len(text), len(suffix), _MAX_OVERLAP), 0, -1):
        overlap = suffix[:k]
        if text.endswith(overlap) and _removable_overlap(overlap):
            return text[:-k]
    return text


def balance_brackets(text: str, prefix: str, suffix: str, *, multiline: bool) -> str:
    """Never return brackets that break the file's balance.

    Let P be the brackets open at the end of the prefix and S the suffix's closers that close
    nothing in the suffix. The text may close at most ``len(P) - len(S)`` of P's brackets
    (innermost first, matching kinds); a closer beyond that, or a mismatched one, is cut off
    with everything after it. Brackets the text opens must be closed by it, except
    ``len(S) - len(P)`` of them that the suffix will close. If some stay open, a single line is
    cut just before the first of them, and several lines are cut back to the last line end at
    which they are closed, unless that would leave nothing (then the text is kept).
    """
    prefix_open = _open_brackets(prefix)
    suffix_closers = _unmatched_closers(suffix)
    closable = max(0, len(prefix_open) - suffix_closers)
    opened: list[str] = []
    sizes = [0]  # sizes[i]: brackets the text has open after text[:i]
    for i, ch in enumerate(text):
        if ch in "([{":
            opened.append(ch)
        elif ch in _PAIRS:
            if opened and opened[-1] == _PAIRS[ch]:
                opened.pop()
            elif not opened and closable and prefix_open and prefix_open[-1] == _PAIRS[ch]:
                prefix_open.pop()
                closable -= 1
            else:
                text, sizes = text[:i], sizes[: i + 1]
                break
        sizes.append(len(opened))
    allowed = max(0, suffix_closers - len(prefix_open))
    if sizes[-1] <= allowed:
        return text
    if not multiline:
        last_ok = max(i for i, n in enumerate(sizes) if n <= allowed)
        return text[:last_ok]
    ends = [m.start() for m in re.finditer("\n", text)]
    good = [e for e in ends if sizes[e] <= allowed and text[:e].strip()]
    return text[: good[-1]] if good else text


def strip_trailing_whitespace(text: str) -> str:
    """Strip every line's end and trailing blank lines; the first line's indent is kept."""
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def is_garbage(text: str) -> bool:
    """Whether ``text`` is not worth showing.

    Empty or blank; holding U+FFFD (a broken character) or a control character other than tab
    and newline; or punctuation only that is long (over 8 characters) or repeats a non-closing
    character four times (``----``, ``....``). Short punctuation such as ``);`` is kept.
    """
    if not text.strip() or "\ufffd" in text:
        return True
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n" for c in text):
        return True
    dense = "".join(text.split())
    if any(c.isalnum() for c in dense):
        return False
    return len(dense) > 8 or _REPEATED_PUNCTUATION.search(dense) is not None


def _current_line(prefix: str) -> str:
    return prefix[prefix.rfind("\n") + 1 :]


def _indent(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip())


def _closes_block(line: str) -> bool:
    stripped = line.strip()
    return stripped[:1] in _PAIRS or _CLOSER_WORD.match(stripped) is not None


def _meaningful(line: str) -> bool:
    return any(c.isalnum() for c in line)


def _removable_overlap(overlap: str) -> bool:
    core = overlap.strip()
    return bool(core) and (len(core) >= 3 or not any(c.isalnum() for c in core))


def _bracket_delta(text: str) -> int:
    return sum(1 if b in "([{" else -1 for b in _BRACKET.findall(text))


def _open_brackets(text: str) -> list[str]:
    """Openers still open at the end of ``text``, outermost first (stray closers ignored)."""
    stack: list[str] = []
    for b in _BRACKET.findall(text):
        if b in "([{":
            stack.append(b)
        elif stack and stack[-1] == _PAIRS[b]:
            stack.pop()
    return stack


def _unmatched_closers(text: str) -> int:
    """How many closers in ``text`` close nothing opened within it (stray ones ignored)."""
    depth = count = 0
    for b in _BRACKET.findall(text):
        if b in "([{":
            depth += 1
        elif depth:
            depth -= 1
        else:
            count += 1
    return count
