"""Repository context in the FIM prompt: placement, the budget's share, dropping the least
relevant snippets first, against the real default tokenizer."""
from __future__ import annotations

from codeloop.fim import TEMPLATES, build_prompt, get_template, line_comment
from codeloop.snippets import Snippet

MODELS = Snippet("pkg/models.py", "class Account:\n    def balance_of(self, owner):\n        return self.ledger[owner]")
UTILS = Snippet("web/util.ts", "export function slugify(title: string) {\n  return title.toLowerCase();\n}")


def test_prefix_only_puts_commented_snippets_before_the_prefix(smol_tokenizer):
    built = build_prompt(TEMPLATES["prefix-only"], "acct = Account()\nacct.", "", smol_tokenizer, 512,
                         snippets=[UTILS, MODELS], filepath="app.py")
    assert built.text.endswith("acct = Account()\nacct.")
    assert built.text.startswith("// Compare this snippet from web/util.ts:\n// export function slugify")
    assert "# Compare this snippet from pkg/models.py:\n# class Account:\n#     def balance_of(self, owner):\n" in built.text
    # Least relevant first: the best snippet ends up nearest the prefix.
    assert built.text.index("web/util.ts") < built.text.index("pkg/models.py")
    assert built.context_snippets == 2
    assert built.context_tokens > 0 and built.prompt_tokens <= 512
    assert built.prefix == "acct = Account()\nacct."


def test_fim_template_keeps_its_sentinels_around_prefix_and_suffix(smol_tokenizer):
    t = TEMPLATES["smollm-fim"]
    built = build_prompt(t, "x = 1\n", "\ny = 2\n", smol_tokenizer, 512, snippets=[MODELS])
    assert built.text.startswith(t.prefix_marker + "# Compare this snippet from pkg/models.py:")
    assert built.text.endswith("owner]\nx = 1\n" + t.suffix_marker + "\ny = 2\n" + t.middle_marker)


def test_repository_tokens_where_the_family_has_them(smol_tokenizer):
    qwen = TEMPLATES["qwen"]
    built = build_prompt(qwen, "a = Account()\n", "", smol_tokenizer, 512, snippets=[MODELS], filepath="app.py")
    assert built.text.startswith("<|file_sep|>pkg/models.py\nclass Account:")
    assert built.text.index("<|file_sep|>app.py\n<|fim_prefix|>a = Account()\n") > 0
    # StarCoder (1) has the FIM tokens but no file separator: comments then.
    vocab = {"<fim_prefix>": 1, "<fim_suffix>": 2, "<fim_middle>": 3}
    assert get_template("starcoder", None, vocab).file_sep == ""
    assert get_template("starcoder", None, {**vocab, "<file_sep>": 4}).file_sep == "<file_sep>"


def test_no_snippets_leaves_the_prompt_as_before(smol_tokenizer):
    for t in TEMPLATES.values():
        plain = build_prompt(t, "def f():\n    ", "\n", smol_tokenizer, 256)
        empty = build_prompt(t, "def f():\n    ", "\n", smol_tokenizer, 256, snippets=[])
        assert plain == empty and plain.context_snippets == 0


def test_a_long_prefix_leaves_context_its_share_and_the_least_relevant_go_first(smol_tokenizer):
    prefix = "".join(f"value_{i} = compute({i})\n" for i in range(2000))
    many = [Snippet(f"m{i}.py", "\n".join(f"def helper_{i}_{j}(x):\n    return x + {j}" for j in range(8)))
            for i in range(6)]
    built = build_prompt(TEMPLATES["prefix-only"], prefix, "", smol_tokenizer, 1024, snippets=many, context_share=0.25)
    assert 0 < built.context_snippets < len(many)
    assert built.context_tokens <= 256
    assert built.prompt_tokens <= 1024
    kept = [s.filepath for s in many[len(many) - built.context_snippets:]]
    assert all(f"from {p}:" in built.text for p in kept)  # the most relevant ones (last) stay
    assert "from m0.py:" not in built.text
    assert built.text.endswith(prefix[-200:])


def test_a_short_file_lends_context_what_it_does_not_need(smol_tokenizer):
    many = [Snippet(f"m{i}.py", "\n".join(f"def helper_{i}_{j}(x):\n    return x + {j}" for j in range(8)))
            for i in range(6)]
    built = build_prompt(TEMPLATES["prefix-only"], "import m\n", "", smol_tokenizer, 1024, snippets=many,
                         context_share=0.1)
    assert built.context_tokens > 102  # more than its share: the prefix needs only a few tokens
    assert built.prompt_tokens <= 1024


def test_one_snippet_too_long_for_the_share_keeps_its_first_lines(smol_tokenizer):
    huge = Snippet("big.py", "\n".join(f"def fn_{j}(value):\n    return value * {j}" for j in range(400)))
    prefix = "x = 1\n" * 3000
    built = build_prompt(TEMPLATES["prefix-only"], prefix, "", smol_tokenizer, 512, snippets=[huge], context_share=0.2)
    assert built.context_snippets == 1
    assert "# def fn_0(value):" in built.text and "fn_399" not in built.text
    assert 0 < built.context_tokens <= int(512 * 0.2)


def test_context_share_zero_ignores_snippets(smol_tokenizer):
    built = build_prompt(TEMPLATES["prefix-only"], "a = 1\n", "", smol_tokenizer, 256, snippets=[MODELS], context_share=0)
    assert built.context_snippets == 0 and "Compare" not in built.text


def test_line_comment_by_extension():
    assert [line_comment(p) for p in ("a/b.py", "x.TS", "q.sql", "Makefile", "dir.v1/file")] == ["#", "//", "--", "//", "//"]
