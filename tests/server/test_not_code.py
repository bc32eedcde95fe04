"""server/not_code.py: Markdown, prose and a first line that leaves the block are not shown."""
from __future__ import annotations

import pytest

from server.not_code import cut_non_code, leaves_block
from server.postprocess import postprocess

FUNC = "def add(a, b):\n"


@pytest.mark.parametrize("text, prefix, expected", [
    # What the default model wrote after the code in the issue: an example section, a fence, prose.
    ("    return a + b\n\n# Example usage:\nprint(add(1, 2))", FUNC, "    return a + b"),
    ("    return a + b\n```\n\nThis code adds two numbers.", FUNC, "    return a + b"),
    ("    return a + b\nThis function returns the sum of two numbers", FUNC, "    return a + b"),
    ("```python\ndef add(a, b):", "", ""),
    ("Here is the code:\n    return a + b", FUNC, ""),
    # Code and docstrings stay.
    ('    """\n    This function returns the sum of two numbers.\n    """\n    return a + b', FUNC,
     '    """\n    This function returns the sum of two numbers.\n    """\n    return a + b'),
    ("Returns the sum of a and b.\n    ", FUNC + '    """', "Returns the sum of a and b.\n    "),
    ("True if x else y", "z = ", "True if x else y"),
    ("    # add the two numbers\n    return a + b", FUNC, "    # add the two numbers\n    return a + b"),
    ("    return Point(a, b)", FUNC, "    return Point(a, b)"),
])
def test_cut_non_code(text, prefix, expected):
    assert cut_non_code(text, prefix) == expected


def test_prose_documents_keep_their_prose():
    text = "This section explains how the cache works."
    assert cut_non_code(text, "# Cache\n\n", "markdown") == text
    assert cut_non_code(text, "# Cache\n\n", "python") == ""


def test_a_first_line_that_leaves_the_block():
    inside = "def f(items):\n    total = 0\n    "
    assert leaves_block("\ndef main():\n    pass", inside)  # the new top-level def
    assert not leaves_block("for item in items:", inside)
    assert not leaves_block("def helper():", inside)  # a nested def at the cursor's indent
    assert not leaves_block("\ndef main():", "def f():\n    pass\n")  # the cursor is at the margin
    # Through postprocess: nothing is shown rather than a def outside the function.
    assert postprocess("\ndef main():\n    pass", inside, "", language="python") == ""
    assert postprocess("for item in items:\n        total += item", inside, "", language="python") != ""


def test_postprocess_drops_prose_after_a_block():
    raw = "    return a + b\n```\n\nThis code adds two numbers."
    assert postprocess(raw, FUNC, "", language="javascript") == "    return a + b"
