"""Token healing: where the prompt ends, and which stops wait until the re-written part is past."""
from __future__ import annotations

import pytest

from codeloop.token_healing import heal, split_stops, still_rewriting, strip_removed


@pytest.mark.parametrize("prefix, prompt, removed", [
    ("def f(x):\n    ", "def f(x):", "\n    "),  # after the auto-indent: back to before the newline
    ("def f(x):\n\n        ", "def f(x):", "\n\n        "),  # blank lines: one token with the indent
    ("    ", "", "    "),  # indentation on the first line of a file
    ("def f(x):\n    retu", "def f(x):\n   ", " retu"),  # inside a word: the word and its space
    ("x = self.fo", "x = self.", "fo"),
    ("x = ", "x =", " "),  # one space after an operator
    ("x =  ", "x =  ", ""),  # several spaces: not how text is tokenized either way; left alone
    ("def f(x):\n", "def f(x):", "\n"),  # at a line start: the line break is written again
    ("x = 1\n\n", "x = 1", "\n\n"),  # after a blank line too
    ("print(", "print(", ""),  # after punctuation
    ("", "", ""),
])
def test_heal(prefix, prompt, removed):
    healed = heal(prefix)
    assert (healed.prompt_prefix, healed.removed) == (prompt, removed)
    assert healed.prompt_prefix + healed.removed == prefix


def test_heal_leaves_a_long_token_alone():
    word = "x" * 40
    assert heal("y = " + word).removed == ""


def test_heal_ends_the_prompt_where_the_tokenizer_ends_a_token(smol_tokenizer):
    """The reason it exists: the healed prompt's tokens are a prefix of the whole line's tokens."""
    tok = smol_tokenizer
    for prefix, line in [("def f(x):\n    ", "return x"), ("class A:\n    def g(self):\n        ", "self.x = 1"),
                         ("def f(x):\n    retu", "rn x"), ("class A:\n    x = 1\n\n    ", "def g(self):")]:
        healed = heal(prefix)
        whole = tok(prefix + line, add_special_tokens=False)["input_ids"]
        start = tok(healed.prompt_prefix, add_special_tokens=False)["input_ids"]
        unhealed = tok(prefix, add_special_tokens=False)["input_ids"]
        assert whole[: len(start)] == start
        assert whole[: len(unhealed)] != unhealed  # the cursor's end is not a token boundary


def test_split_stops_keeps_a_newline_stop_for_after_the_rewritten_newline():
    early, late = split_stops(("\n", "<|endoftext|>", "\n\n", "  ", "   x"), "\n    ")
    # "\n\n" cannot match there (a space follows the newline); "   x" can start inside it
    assert early == ("<|endoftext|>", "\n\n")
    assert set(late) == {"\n", "  ", "   x"}
    assert split_stops(("\n",), " retu") == (("\n",), ())


def test_strip_removed():
    assert strip_removed("\n    return x", "\n    ") == "return x"
    assert strip_removed("\n  return x", "\n    ") is None
    assert strip_removed(" return", " retu") == "rn"
    # removed whitespace: a new line at the cursor's indentation, whatever blank lines come first
    assert strip_removed("\n    def g():", "\n\n    ") == "def g():"
    assert strip_removed("\n\n\n    def g():", "\n    ") == "def g():"
    assert strip_removed("\n  def g():", "\n\n    ") is None  # another indentation
    assert strip_removed(" # note\n    x", "\n    ") is None  # went on with the line before
    # more blank lines than the editor shows: dropped, the code goes on the cursor's line
    assert strip_removed("\n\n\n__all__ = []", "\n\n") == "__all__ = []"
    assert strip_removed("\n    \n    def g():", "\n    ") == "def g():"
    assert strip_removed("\n\n", "\n\n") is None  # nothing written yet after the line breaks
    # a cursor at a line start takes the answer's indentation as part of the suggestion
    assert strip_removed("\n    return x", "\n") == "    return x"


def test_still_rewriting():
    assert still_rewriting("\n  ", "\n    ") and still_rewriting("\n\n", "\n    ") and still_rewriting("", " retu")
    assert still_rewriting(" ret", " retu") and not still_rewriting("\n    x", "\n    ")
