"""What a suggestion looks like after post-processing: one rule per group of cases."""
from __future__ import annotations

import pytest

from server.postprocess import (
    balance_brackets,
    block_ended,
    cut_at_stop,
    cut_repetition,
    drop_echo,
    cut_suffix_overlap,
    fix_cursor_line_indent,
    cut_to_block,
    is_garbage,
    postprocess,
    strip_trailing_whitespace,
    wants_multiline,
)

FIB_PREFIX = "def fibonacci(n):\n"
FIB_OUTPUT = (
    "    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n\n"
    "def main():\n    print(fibonacci(10))\n"
)
FIB_BODY = "    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)"


def test_realistic_fibonacci() -> None:
    assert postprocess(FIB_OUTPUT, FIB_PREFIX, "", language="python") == FIB_BODY


def test_realistic_fibonacci_with_suffix_and_stop() -> None:
    out = FIB_OUTPUT.replace("def main", "<|endoftext|>def main")
    assert postprocess(out, FIB_PREFIX, "\n\nprint(1)\n", stop=["<|endoftext|>"]) == FIB_BODY


# --- stop strings ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("a<EOT>b", ["<EOT>"], "a"),
        ("a<|file_sep|>b<|endoftext|>", ["<|endoftext|>", "<|file_sep|>"], "a"),
        ("abc", ["x"], "abc"),
        ("abc", [""], "abc"),  # an empty stop string stops nothing
        ("<EOT>", ["<EOT>"], ""),
    ],
)
def test_cut_at_stop(text: str, stop: list[str], expected: str) -> None:
    assert cut_at_stop(text, stop) == expected


# --- single line or block --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("prefix", "suffix", "expected"),
    [
        ("x = foo(", ")\n", False),  # mid-line: code on both sides
        ("    return fib", "\n", False),  # code that opens nothing
        ("    ", "\n", True),  # indentation only
        ("def f():\n", "", True),  # empty line
        ("def f(n):", "\n", True),  # Python block opener
        ("function f() {", "\n}", True),  # brace
        ("const g = (a) =>", "", True),
        ("items.each do", "", True),
        ("if x then", "", True),
        ("x = [", "", True),
        ("    } else", "", True),
        ("    return done", "", False),  # "done" ends a word, not a block opener
        ("if (x) {", " y }", False),  # opener, but the cursor is mid-line
    ],
)
def test_wants_multiline(prefix: str, suffix: str, expected: bool) -> None:
    assert wants_multiline(prefix, suffix) is expected


def test_single_line_mode_keeps_first_line() -> None:
    assert postprocess("(n - 1)\n    x = 2", "    return fib", "\n") == "(n - 1)"


@pytest.mark.parametrize(
    ("text", "prefix", "language", "expected"),
    [
        # Python: ends at the first line indented less than the block.
        (FIB_OUTPUT, FIB_PREFIX, "python", FIB_BODY),
        ("\n    return 1\nx = 2", "def f():", "python", "\n    return 1"),
        ("return 1\n\n    y = 2\nz = 3", "def f():\n    ", "python", "return 1\n\n    y = 2"),
        # A dedented closer ends the block and is kept.
        ("\n    a,\n    b,\n)\nprint(x)", "x = foo(", "python", "\n    a,\n    b,\n)"),
        ("\n  x = 1\nend\nputs 2", "def f", "ruby", "\n  x = 1\nend"),
        # Two blank lines in a row end it; leading blank lines do not.
        ("a = 1\n\n\nb = 2", "", "python", "a = 1"),
        ("\n\nclass B:\n    pass", "class A:\n    pass\n", "python", "\n\nclass B:\n    pass"),
        # Brace languages: the closing brace ends the block.
        ("\n  return 1;\n}\n\nfunction g() {}", "function f() {", "javascript",
         "\n  return 1;\n}"),
        ("return 1;\n}\nfunction g() {}", "function f() {\n  ", "javascript", "return 1;\n}"),
        ("x := 1\n\treturn x\n}\n\nfunc g() {}", "func f() int {\n\t", "go",
         "x := 1\n\treturn x\n}"),
        # Badly indented brace code still stops where the braces close.
        ("\nreturn 1;\n}\nfoo();", "function f() {", "javascript", "\nreturn 1;\n}"),
    ],
)
def test_cut_to_block(text: str, prefix: str, language: str, expected: str) -> None:
    assert cut_to_block(text, prefix, language=language) == expected


BLOCK_ENDS = [
    (FIB_OUTPUT, FIB_PREFIX, "python"),
    ("\n    return 1\nx = 2\ny = 3\n", "def f():", "python"),
    ("\n    a,\n    b,\n)\nprint(x)\nprint(y)\n", "x = foo(", "python"),
    ("  x = 1\nend\nputs 2\nputs 3\n", "def f\n", "ruby"),
    ("a = 1\n\n\nb = 2\n", "", "python"),
    ("\n  return 1;\n}\n\nfunction g() {}\n", "function f() {", "javascript"),
    ("x := 1\n\treturn x\n}\n\nfunc g() {}\n", "func f() int {\n\t", "go"),
    (" return a + b\n\n# Example usage:\nadd(1, 2)\n", "def add(a, b):\n    ", "python"),
]


@pytest.mark.parametrize(("text", "prefix", "language"), BLOCK_ENDS)
def test_an_engine_stopping_where_the_block_ended_changes_nothing_shown(text: str, prefix: str, language: str) -> None:
    """Cut the raw output at any point where block_ended says so: the suggestion is the one
    the whole output gives. And it does say so before the end of each of these outputs."""
    assert wants_multiline(prefix, "")
    whole = postprocess(text, prefix, "", language=language)
    ended = [k for k in range(len(text) + 1) if block_ended(text[:k], prefix, language=language)]
    assert ended and ended[0] < len(text), "the block's end was never noticed"
    for k in ended:
        assert postprocess(text[:k], prefix, "", language=language) == whole, k


@pytest.mark.parametrize(
    ("text", "prefix", "language"),
    [
        ("    if n < 2:\n        return n\n", FIB_PREFIX, "python"),  # still inside
        (" return a + b\n\n# Exam", "def add(a, b):\n    ", "python"),  # the dedented line is not complete yet
        ("return 1;\n}", "function f() {\n  ", "javascript"),  # the closing line may still grow
        ("", "def f():\n    ", "python"),
    ],
)
def test_block_ended_waits_for_complete_lines(text: str, prefix: str, language: str) -> None:
    assert not block_ended(text, prefix, language=language)


def test_cut_to_block_python_does_not_use_brace_rule() -> None:
    text = "\n    b)\n    c = 1"
    assert cut_to_block(text, "x = f(a,", language="python") == text
    assert cut_to_block(text, "x = f(a,", language="javascript") == "\n    b)"


# --- suffix overlap --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "prefix", "suffix", "expected"),
    [
        ("foo(a, b)", "x = ", ")", "foo(a, b"),
        ("a, b);", "foo(", ");\n", "a, b"),
        ('"hello"]', "xs = [", '"]', '"hello'),
        ("return x + y", "    ", " + y\n", "return x"),
        ("x = 1", "", "1 + y", "x = 1"),  # a lone letter or digit is not an overlap
        ("y = 2\n    return x", "    ", "\n    return x\n", "y = 2"),
        # A line equal to the suffix's first non-empty line, indentation included.
        ("a = 1\nreturn a\nfoo()", "def f():\n    ", "\n    return a\n", "a = 1\nreturn a\nfoo()"),
        ("a = 1\n    return a\nfoo()", "def f():\n    ", "\n\n    return a\n", "a = 1"),
        ("return a", "def f():\n    ", "\n    return a\n", ""),  # all duplicate
        ("x();\n}", "function f() {\n  ", "\n}\n", "x();"),
        ("if (a) {\n    b();\n  }", "function f() {\n  ", "\n}\n", "if (a) {\n    b();\n  }"),
    ],
)
def test_cut_suffix_overlap(text: str, prefix: str, suffix: str, expected: str) -> None:
    assert cut_suffix_overlap(text, prefix, suffix) == expected


def test_postprocess_removes_closing_paren_overlap() -> None:
    assert postprocess("a, b)", "result = foo(", ")") == "a, b"


# --- repetition ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        (" def fibonacci(n):\n    return 1", "def fibonacci(n):\n    ", ""),
        ("def fibonacci(n):\n    pass", "def fibonacci(n):\n", ""),
        ("\ndef fibonacci(n):\n    pass", "def fibonacci(n):", ""),
        ("x += 1\n    x += 1\n    x += 1", "    ", "x += 1"),
        ("a()\nb()\nb()\nc()", "", "a()\nb()"),
        # Not repetitions: brackets alone, different indentation, non-consecutive lines.
        ("}", "  if (a) {\n    x();\n  }\n  ", "}"),
        ("    }\n}", "", "    }\n}"),
        ("a()\nb()\na()", "", "a()\nb()\na()"),
        ("    return n", "def f(n):\n", "    return n"),
    ],
)
def test_cut_repetition(text: str, prefix: str, expected: str) -> None:
    assert cut_repetition(text, prefix) == expected


@pytest.mark.parametrize(
    ("text", "prefix", "expected"),
    [
        # The model restarts the statement it was given: the echo goes, the continuation stays.
        (" def fibonacci(n):\n    return n", "def fibonacci(n):\n    ", "return n"),
        ("\ndef fibonacci(n):\n    if n < 2:\n        return n", "def fibonacci(n):\n", "    if n < 2:\n        return n"),
        ("class A:\n    def f(self):\n        pass", "class A:\n    def f(self):\n", "        pass"),
        # Only an echo at the start counts, and only of the prefix's last lines.
        ("    return n", "def f(n):\n", "    return n"),
        ("def g():\n    pass", "def f(n):\n", "def g():\n    pass"),
        # Mid-line cursor: nothing is an echo.
        ("def f(n):", "x = ", "def f(n):"),
        # Brackets alone are not an echo worth dropping.
        ("}\n}", "  }\n", "}\n}"),
    ],
)
def test_drop_echo(text: str, prefix: str, expected: str) -> None:
    assert drop_echo(text, prefix) == expected


def test_postprocess_restart_keeps_the_continuation() -> None:
    prefix = "def fibonacci(n):\n    "
    assert postprocess(" def fibonacci(n):\n    return n", prefix, "", language="python") == "return n"


def test_postprocess_loop_is_cut() -> None:
    out = "\tfmt.Println(i)\n\tfmt.Println(i)\n\tfmt.Println(i)"
    prefix = "for i := 0; i < 3; i++ {\n"
    assert postprocess(out, prefix, "\n}", language="go") == "\tfmt.Println(i)"


# --- brackets --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "prefix", "suffix", "multiline", "expected"),
    [
        ("a, b)", "foo(", ")", False, "a, b"),  # the suffix closes it already
        ("a, b)", "foo(", "", False, "a, b)"),  # the prefix opened it, nothing closes it
        ("x)) + 1", "f(g(", ")", False, "x)"),  # may close one: the suffix closes the other
        ("x) + 1", "f(g(", "", False, "x) + 1"),
        ("a]", "foo(", "", False, "a"),  # wrong kind
        ("bar(1", "x = foo(", ")", False, "bar"),  # left open: the suffix closes foo's only
        ("bar(1", "x = ", ")", False, "bar(1"),  # the suffix closes it
        ("f(a, g(b)", "y = ", "", False, "f"),
        ("items[0]", "y = ", "", False, "items[0]"),
        # Multi-line: cut back to the last line where what it opened is closed.
        ("a = 1\nb = g(\n    2,", "", "", True, "a = 1"),
        ("\n  y();\n} else {\n  z();", "if (x) {", "\n}", True, "\n  y();\n"),
        ("\n  y();\n}", "if (x) {", "", True, "\n  y();\n}"),
        ("\n  y();\n}", "if (x) {", "\n}", True, "\n  y();\n"),
        ("g(\n  1,", "", "", True, "g(\n  1,"),  # nothing balanced to go back to: kept
    ],
)
def test_balance_brackets(
    text: str, prefix: str, suffix: str, multiline: bool, expected: str
) -> None:
    assert balance_brackets(text, prefix, suffix, multiline=multiline) == expected


def test_postprocess_go_block_with_closing_brace() -> None:
    prefix = "package main\n\nfunc add(a, b int) int {\n"
    out = "\treturn a + b\n}\n\nfunc main() {\n\tfmt.Println(add(1, 2))\n}\n"
    assert postprocess(out, prefix, "", language="go") == "\treturn a + b\n}"
    # With the closing brace already in the file, the suggestion does not repeat it.
    assert postprocess(out, prefix, "\n}\n", language="go") == "\treturn a + b"


def test_postprocess_javascript_object() -> None:
    prefix = "const config = {"
    out = "\n  port: 8080,\n  host: 'localhost',\n};\n\nmodule.exports = config;\n"
    assert postprocess(out, prefix, "", language="javascript") == (
        "\n  port: 8080,\n  host: 'localhost',\n};"
    )


# --- whitespace and garbage ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  x = 1  \n  y = 2\t\n\n\n", "  x = 1\n  y = 2"),
        ("\n    return 1   ", "\n    return 1"),
        ("a\r\nb\r\n", "a\nb"),
        ("   ", ""),
    ],
)
def test_strip_trailing_whitespace(text: str, expected: str) -> None:
    assert strip_trailing_whitespace(text) == expected


@pytest.mark.parametrize(
    ("text", "garbage"),
    [
        ("", True),
        ("  \n\t ", True),
        ("x = \ufffd", True),
        ("x\x00y", True),
        ("x\x1b[0m", True),
        ("a\rb", True),
        ("----------", True),
        ("....", True),
        (",,,,", True),
        ("}}{{)(][)(", True),
        (");", False),
        ("})", False),
        ("))))", False),  # closing a deep nest is fine
        ("x = 1", False),
        ("\tfoo()\n\tbar()", False),
        ("print('日本語')", False),
    ],
)
def test_is_garbage(text: str, garbage: bool) -> None:
    assert is_garbage(text) is garbage


@pytest.mark.parametrize(
    "text", ["\ufffd\ufffd", "   \n  ", "=====================", "x\x07y"]
)
def test_postprocess_returns_empty_for_garbage(text: str) -> None:
    assert postprocess(text, "x = ", "") == ""


def test_postprocess_keeps_first_line_indent() -> None:
    assert postprocess("    return 1  \n", "def f():\n", "") == "    return 1"


@pytest.mark.parametrize("text, prefix, expected", [
    # What SmolLM2 wrote after "def fibonacci(n):\n    ": one indent too many, kept relative.
    ("     if n == 0:\n             return", "def fibonacci(n):\n    ", "if n == 0:\n        return"),
    ("if n == 0:\n        return", "def f(n):\n    ", "if n == 0:\n        return"),  # already right
    ("    x = 1", "def f():\n", "    x = 1"),  # column 0: the model's indent is the indent
    ("  + 1", "x = y", "  + 1"),  # mid-line: untouched
    ("  a\nb", "if x:\n  ", "a\nb"),  # a later line indented less is left alone
])
def test_fix_cursor_line_indent(text: str, prefix: str, expected: str) -> None:
    assert fix_cursor_line_indent(text, prefix) == expected
