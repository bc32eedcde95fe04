"""FIM templates, detection and trimming, against the real default tokenizer."""
from __future__ import annotations

import random
import time

import pytest

from codeloop.fim import (
    TEMPLATES,
    FimTemplate,
    PromptBuild,
    build_prompt,
    detect_template,
    get_template,
    trim_to_budget,
)

# Code-like text with multi-byte characters that byte-level BPE splits across tokens.
LINE = "    value = compute(x, y)  # naïve 😀 中文 — ok\n"
TEXT = "".join(f"def f{i}():\n{LINE * (i % 5 + 1)}\n" for i in range(400))


def _tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


# --- templates -------------------------------------------------------------------------------

def test_template_names() -> None:
    assert set(TEMPLATES) == {
        "starcoder", "santacoder", "codellama", "deepseek", "qwen", "codegemma",
        "smollm-fim", "prefix-only",
    }
    assert all(isinstance(t, FimTemplate) and t.name == n for n, t in TEMPLATES.items())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("starcoder", "<fim_prefix>A<fim_suffix>B<fim_middle>"),
        ("santacoder", "<fim-prefix>A<fim-suffix>B<fim-middle>"),
        ("codellama", "<PRE> A <SUF>B <MID>"),
        ("deepseek",
         "<\uff5cfim\u2581begin\uff5c>A<\uff5cfim\u2581hole\uff5c>B<\uff5cfim\u2581end\uff5c>"),
        ("qwen", "<|fim_prefix|>A<|fim_suffix|>B<|fim_middle|>"),
        ("codegemma", "<|fim_prefix|>A<|fim_suffix|>B<|fim_middle|>"),
        ("smollm-fim", "<jupyter_start>A<jupyter_text>B<jupyter_code>"),
        ("prefix-only", "A"),
    ],
)
def test_render(name: str, expected: str) -> None:
    assert TEMPLATES[name].render("A", "B") == expected


def test_spm_order() -> None:
    spm = FimTemplate("x", "<P>", "<S>", "<M>", order="spm")
    assert spm.render("a", "b") == "<P><S>b<M>a"


@pytest.mark.parametrize(
    ("name", "stops"),
    [
        ("starcoder", {"<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_pad>"}),
        ("codellama", {"<EOT>"}),
        ("deepseek", {"<\uff5cend\u2581of\u2581sentence\uff5c>", "<\uff5cfim\u2581begin\uff5c>"}),
        ("qwen", {"<|endoftext|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}),
        ("codegemma", {"<|file_separator|>", "<|fim_prefix|>"}),
        ("smollm-fim", {"<|endoftext|>", "<jupyter_start>"}),
    ],
)
def test_stop_strings(name: str, stops: set[str]) -> None:
    assert stops <= set(TEMPLATES[name].stop)


def test_prefix_only_ignores_suffix() -> None:
    t = TEMPLATES["prefix-only"]
    assert not t.supports_suffix
    assert t.render("def f(", "ignored") == "def f("
    assert all(t.supports_suffix for n, t in TEMPLATES.items() if n != "prefix-only")


def test_smollm_sentinels_are_single_tokens(smol_tokenizer) -> None:
    t = TEMPLATES["smollm-fim"]
    ids = smol_tokenizer(t.render("", ""), add_special_tokens=False)["input_ids"]
    assert ids == [11, 12, 13]


# --- detection -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("model_type", "vocab", "expected"),
    [
        ("starcoder2", ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>"], "starcoder"),
        ("gpt2", ["<fim-prefix>", "<fim-suffix>", "<fim-middle>"], "santacoder"),
        ("llama", ["\u2581<PRE>", "\u2581<SUF>", "\u2581<MID>", "\u2581<EOT>"], "codellama"),
        ("llama", ["<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
                   "<\uff5cfim\u2581end\uff5c>"], "deepseek"),
        ("qwen2", ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], "qwen"),
        ("gemma", ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], "codegemma"),
        (None, ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_separator|>"],
         "codegemma"),
        (None, ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_sep|>"], "qwen"),
        ("llama", ["<fim_prefix>", "<fim_suffix>"], "prefix-only"),  # incomplete set
        ("llama", ["<jupyter_start>", "<jupyter_text>", "<jupyter_code>"], "prefix-only"),
        (None, [], "prefix-only"),
    ],
)
def test_detect(model_type: str | None, vocab: list[str], expected: str) -> None:
    assert detect_template(model_type, vocab).name == expected
    as_mapping = {tok: i for i, tok in enumerate(vocab)}
    assert detect_template(model_type, as_mapping).name == expected


def test_detect_default_model_is_prefix_only(smol_tokenizer) -> None:
    # SmolLM2 has the jupyter specials but was never trained on them as FIM sentinels.
    assert detect_template("llama", smol_tokenizer.get_vocab()).name == "prefix-only"


def test_get_template() -> None:
    assert get_template("codellama") is TEMPLATES["codellama"]
    assert get_template("auto", "qwen2", ["<|fim_prefix|>", "<|fim_suffix|>",
                                          "<|fim_middle|>"]).name == "qwen"
    assert get_template("auto", None, []).name == "prefix-only"


def test_get_template_unknown_lists_names() -> None:
    with pytest.raises(ValueError, match="unknown FIM template 'starcoder3'") as err:
        get_template("starcoder3")
    assert "auto" in str(err.value) and "smollm-fim" in str(err.value)


# --- trimming --------------------------------------------------------------------------------

def test_short_inputs_untouched(smol_tokenizer) -> None:
    t = trim_to_budget("def f(x):\n    return ", "\n\nprint(f(1))\n", smol_tokenizer, 1000)
    assert (t.prefix, t.suffix) == ("def f(x):\n    return ", "\n\nprint(f(1))\n")
    assert t.prefix_tokens == _tokens(smol_tokenizer, t.prefix)
    assert t.suffix_tokens == _tokens(smol_tokenizer, t.suffix)


def test_keeps_prefix_end_and_suffix_start_on_line_boundaries(smol_tokenizer) -> None:
    cut = len(TEXT) // 2 + 7
    prefix, suffix = TEXT[:cut], TEXT[cut:]
    t = trim_to_budget(prefix, suffix, smol_tokenizer, 200)
    assert prefix.endswith(t.prefix) and suffix.startswith(t.suffix)
    assert 0 < len(t.prefix) < len(prefix) and 0 < len(t.suffix) < len(suffix)
    assert prefix[: len(prefix) - len(t.prefix)].endswith("\n")  # whole first line
    assert t.suffix.endswith("\n")  # whole last line
    assert t.prefix_tokens + t.suffix_tokens <= 200
    assert t.suffix_tokens <= 50  # suffix_share 0.25


def test_suffix_share(smol_tokenizer) -> None:
    cut = len(TEXT) // 2
    small = trim_to_budget(TEXT[:cut], TEXT[cut:], smol_tokenizer, 400, suffix_share=0.1)
    large = trim_to_budget(TEXT[:cut], TEXT[cut:], smol_tokenizer, 400, suffix_share=0.5)
    assert small.suffix_tokens <= 40 < large.suffix_tokens <= 200
    assert small.prefix_tokens > large.prefix_tokens
    assert small.prefix_tokens > 300  # the prefix gets what the suffix may not use


def test_unused_budget_flows_to_other_side(smol_tokenizer) -> None:
    short_prefix = trim_to_budget("x = 1\n", TEXT, smol_tokenizer, 300)
    assert short_prefix.prefix == "x = 1\n"
    assert short_prefix.suffix_tokens > 200  # far above its 25 % share
    short_suffix = trim_to_budget(TEXT, "\n", smol_tokenizer, 300)
    assert short_suffix.suffix == "\n"
    assert short_suffix.prefix_tokens > 250


def test_reserved_tokens_shrink_budget(smol_tokenizer) -> None:
    t = trim_to_budget(TEXT, "", smol_tokenizer, 300, reserved_tokens=200)
    assert 0 < t.prefix_tokens <= 100


def test_zero_budget(smol_tokenizer) -> None:
    t = trim_to_budget(TEXT, TEXT, smol_tokenizer, 10, reserved_tokens=10)
    assert (t.prefix, t.suffix, t.prefix_tokens, t.suffix_tokens) == ("", "", 0, 0)


def test_single_long_line_is_cut_by_characters(smol_tokenizer) -> None:
    line = "x" * 5 + ", ".join(f"item{i}" for i in range(3000))  # minified: no newline
    t = trim_to_budget(line, line, smol_tokenizer, 100)
    assert t.prefix and t.suffix  # not emptied by the line-boundary rule
    assert line.endswith(t.prefix) and line.startswith(t.suffix)
    assert t.prefix_tokens + t.suffix_tokens <= 100


@pytest.mark.parametrize("seed", range(12))
def test_never_splits_characters_and_fits(smol_tokenizer, seed: int) -> None:
    rng = random.Random(seed)
    pieces = ["😀", "中", "é", "a", " ", "\n", "(", "🧑‍💻"]
    text = "".join(rng.choice(pieces) for _ in range(4000))
    cut = rng.randrange(len(text))
    budget = rng.choice([7, 31, 120, 500])
    t = trim_to_budget(text[:cut], text[cut:], smol_tokenizer, budget)
    assert text[:cut].endswith(t.prefix) and text[cut:].startswith(t.suffix)
    assert "\ufffd" not in t.prefix + t.suffix
    assert t.prefix_tokens + t.suffix_tokens <= budget


def test_large_input_is_fast(smol_tokenizer) -> None:
    big = TEXT * 4  # about 120 kB each side
    assert len(big) > 100_000
    start = time.perf_counter()
    t = trim_to_budget(big, big, smol_tokenizer, 2048)
    elapsed = time.perf_counter() - start
    assert t.prefix_tokens + t.suffix_tokens <= 2048
    assert t.prefix_tokens > 1000
    assert elapsed < 1.0


# --- building --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smollm-fim", "starcoder", "codellama", "qwen", "prefix-only"])
def test_build_prompt_fits_and_renders(smol_tokenizer, name: str) -> None:
    template = TEMPLATES[name]
    cut = len(TEXT) // 3
    built = build_prompt(template, TEXT[:cut], TEXT[cut:], smol_tokenizer, 256)
    assert isinstance(built, PromptBuild) and built.template == name
    assert built.text == template.render(built.prefix, built.suffix)
    assert built.prompt_tokens == len(smol_tokenizer(built.text)["input_ids"])
    assert 200 <= built.prompt_tokens <= 256
    assert TEXT[:cut].endswith(built.prefix) and TEXT[cut:].startswith(built.suffix)


def test_build_prompt_prefix_only_gives_prefix_everything(smol_tokenizer) -> None:
    built = build_prompt(TEMPLATES["prefix-only"], TEXT, TEXT, smol_tokenizer, 300)
    assert built.suffix == "" and built.text == built.prefix
    assert 250 < built.prompt_tokens <= 300


def test_build_prompt_reserves_sentinels(smol_tokenizer) -> None:
    built = build_prompt(TEMPLATES["smollm-fim"], "a = 1\n", "b = 2\n", smol_tokenizer, 100)
    assert built.text == "<jupyter_start>a = 1\n<jupyter_text>b = 2\n<jupyter_code>"
    assert built.prompt_tokens == 3 + _tokens(smol_tokenizer, "a = 1\n") + _tokens(
        smol_tokenizer, "b = 2\n"
    )


def test_build_prompt_sentinels_over_budget_give_empty_halves(smol_tokenizer) -> None:
    # The default tokenizer spells StarCoder's sentinels with many ordinary tokens.
    built = build_prompt(TEMPLATES["starcoder"], TEXT, TEXT, smol_tokenizer, 5)
    assert (built.prefix, built.suffix) == ("", "")
    assert built.text == "<fim_prefix><fim_suffix><fim_middle>"
    assert built.prompt_tokens > 5


def test_the_cut_prefix_keeps_its_start_while_the_user_types(smol_tokenizer) -> None:
    """Typing at the end of a prefix longer than the budget: the kept prefix starts at the
    same place keystroke after keystroke (so the engine can reuse the prompt it read), moves
    in steps, and the prompt stays within the budget."""
    typed = "".join(f"total_{i} = total_{i - 1} + {i}\n" for i in range(1, 40))
    starts = []
    for n in range(0, len(typed), 7):
        prefix = TEXT[:12_000] + typed[:n]
        built = build_prompt(TEMPLATES["prefix-only"], prefix, "", smol_tokenizer, 1024)
        assert built.prompt_tokens <= 1024
        assert built.prompt_tokens >= 1024 - 64 - 300  # the line's reserve, a step (512 characters: ~230 tokens here) and a line at most
        assert prefix.endswith(built.prefix) and prefix[len(prefix) - len(built.prefix) - 1] == "\n"
        starts.append(len(prefix) - len(built.prefix))
    moves = sum(1 for a, b in zip(starts, starts[1:]) if a != b)
    assert len(starts) > 100 and moves <= len(typed) // 512 + 2


def test_the_cut_stays_put_within_a_line_and_never_moves_back(smol_tokenizer) -> None:
    """Typed one character at a time, a line's token count goes up and down ("spli" is two
    tokens, "split" one). The cut depends on the lines above the cursor's only: it never
    moves while a line is typed, and never back."""
    typed = "".join(f"        parts_{i} = text.split(sep)[{i}].strip().lower()  # splitting {i}\n" for i in range(20))
    starts: list[tuple[int, int]] = []  # (line number, where the kept prefix starts)
    for n in range(1, len(typed) + 1):
        prefix = TEXT[:12_000] + typed[:n]
        built = build_prompt(TEMPLATES["prefix-only"], prefix, "", smol_tokenizer, 1024)
        assert built.prompt_tokens <= 1024
        assert built.prompt_tokens >= 1024 - 64 - 300  # the line's reserve, a step (512 characters) and a line at most
        starts.append((typed[:n].count("\n"), len(prefix) - len(built.prefix)))  # Enter starts a line
    assert all(b >= a for (_, a), (_, b) in zip(starts, starts[1:]))
    assert all(a == b for (la, a), (lb, b) in zip(starts, starts[1:]) if la == lb)
    assert len({s for _, s in starts}) >= 3  # it did move, in steps
