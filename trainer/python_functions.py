"""Which Python functions a commit touched, and where their bodies start (for mining).

    touched_functions(text, added) -> [(def line, body start after the docstring or None, last line)]
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator

Ranges = list[tuple[int, int]]  # added lines: (first line, count), 1-based
FunctionLines = tuple[int, int | None, int]  # def line, body start after the docstring (None: no body), last


def touched_functions(text: str, added: Ranges) -> list[FunctionLines] | None:
    """Functions (methods, nested ones) overlapping an added range; None if `text` does not parse."""
    functions = _parse_touched_only(text, added)
    if functions is not None:
        return functions
    try:  # the cheap way failed: parse the whole file
        return list(_functions_in(ast.parse(text).body, added, 0))
    except (SyntaxError, ValueError):
        return None


_DEF_LINE = re.compile(r"^([ \t]*)(?:async[ \t]+)?def[ \t]", re.M)
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")  # statement lists inside a statement


def _parse_touched_only(text: str, added: Ranges) -> list[FunctionLines] | None:
    """Touched functions, parsing only their own lines (found by indentation): a whole file
    costs ~4 ms to parse, most commits touch one function. The def nearest above each added
    range is parsed too: when a string or bracket reaches back to its indentation, its lines
    seem to end early, and the snippet does not parse. Then (None) the file is parsed whole.
    A `def` line inside a string may be taken for a function.
    """
    lines = text.split("\n")
    defs: list[tuple[int, int]] = []  # (1-based line, indentation) of each def line
    line_number, counted = 1, 0
    for match in _DEF_LINE.finditer(text):
        line_number += text.count("\n", counted, match.start())
        counted = match.start()
        defs.append((line_number, len(match.group(1))))
    found: list[FunctionLines] = []
    last_added = max(start + count - 1 for start, count in added)
    covered = 0  # lines up to here belong to a function already parsed
    for number, (first, indent) in enumerate(defs):
        if first > last_added:
            break
        if first <= covered:
            continue
        following = defs[number + 1][0] if number + 1 < len(defs) else len(lines) + 1
        nearest_above = any(first <= start < following for start, _ in added)
        # The function ends before the next def that is not inside it.
        bound = next((defs[j][0] for j in range(number + 1, len(defs)) if defs[j][1] <= indent), len(lines) + 1)
        if not (nearest_above or any(start < bound and first < start + count for start, count in added)):
            continue
        end = first
        for index in range(first, bound - 1):  # the lines after the def line (0-based)
            stripped = lines[index].lstrip()
            if not stripped or stripped[0] == "#":
                continue
            if len(lines[index]) - len(stripped) <= indent and stripped[0] not in ")]}":
                break
            end = index + 1
        if not nearest_above and not any(start <= end and first < start + count for start, count in added):
            continue
        snippet = "\n".join(line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[first - 1 : end])
        try:
            tree = ast.parse(snippet)
        except (SyntaxError, ValueError):
            return None
        if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        found += _functions_in(tree.body, added, first - 1)
        covered = end
    return found


def _functions_in(statements: list[ast.stmt], added: Ranges, offset: int) -> Iterator[FunctionLines]:
    """Functions (methods, nested ones) overlapping an added range, their lines + `offset`.
    Only statements that overlap one are entered: far cheaper than `ast.walk`."""
    for node in statements:
        if not hasattr(node, "lineno"):  # a `match` statement's `case`: only its body has lines
            yield from _functions_in(getattr(node, "body", []), added, offset)
            continue
        first, last = node.lineno + offset, node.end_lineno + offset
        if not any(start <= last and first < start + count for start, count in added):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body_start = _body_start(node)
            yield first, None if body_start is None else body_start + offset, last
        for block in _BLOCKS:
            children = getattr(node, block, None)
            if isinstance(children, list):
                yield from _functions_in(children, added, offset)


def _body_start(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int | None:
    """The first line of the body after the docstring; None when there is no such body."""
    body = node.body
    docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)
    if docstring:
        if len(body) == 1 or body[1].lineno <= body[0].end_lineno:
            return None
        return body[0].end_lineno + 1  # comments between docstring and code belong to the body
    return body[0].lineno if body[0].lineno > node.lineno else None
