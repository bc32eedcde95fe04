"""server/truncated.py: an answer the engine cut short ends where code can end."""
from __future__ import annotations

import pytest

from server.postprocess import postprocess
from server.truncated import trim_truncated


@pytest.mark.parametrize("text, line, expected", [
    ("for", "    ", ""),  # the dangling `for`
    (" i in range(", "    for", ""),
    ("return fibonacci(n - 1) + fibonacci(n", "    ", "return fibonacci(n - 1)"),
    ("if n <= 1:\n        return n\n    return fib", "    ", "if n <= 1:\n        return n"),
    ("x = self.", "    ", ""),
    # A block opener whose body was cut goes too (not the first line: it is the suggestion).
    ("if x:\n        return 1\n    else:\n        raise Index", "    ", "if x:\n        return 1"),
    ("if x:\n        ret", "    ", "if x:"),
    ("x = foo(1) + bar(", "    ", "x = foo(1)"),
    ("x += 1", "    ", "x += 1"),
    ("return", "    ", "return"),
    ("a, b)", "foo(", "a, b)"),  # closing the prefix's bracket is whole
    ('lo" + name', 'x = "hel', 'lo" + name'),  # so is closing its string
    ("print(\"don't", "    ", ""),  # an apostrophe inside a string is not a quote
    ("print(\"don't\")", "    ", "print(\"don't\")"),
    ("\n    for", "def f():", ""),
    ("if (ready) {", "  ", ""),
    ("i++", "  ", "i++"),
    ("", "    ", ""),
    # Nothing reads whole, but the word being typed can be finished: that much is shown.
    ("th.join(os.path.join(os.", "path = os.pa", "th"),
    ("th.join(os.path.join(os.", "path = os.", ""),
])
def test_trim_truncated(text, line, expected):
    assert trim_truncated(text, line) == expected


def test_only_a_truncated_answer_is_trimmed():
    prefix = "def f(n):\n    "
    assert postprocess("for", prefix, "", language="python") == "for"
    assert postprocess("for", prefix, "", language="python", truncated=True) == ""
    # An answer that ended at a stop string was not cut by the engine: nothing to trim.
    assert postprocess("x = y +\n\n\n", prefix, "", language="python", stop=["\n\n\n"], truncated=True) == "x = y +"
