"""Fill-in-the-middle prompts: per-family templates and trimming to a token budget.

vLLM's OpenAI server rejects a ``suffix`` field, so codeloop renders the FIM prompt itself::

    template = get_template("auto", config.model_type, tokenizer.get_vocab())
    built = build_prompt(template, prefix, suffix, tokenizer, max_prompt_tokens=2048)
    engine.complete(built.text, stop=template.stop, ...)
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = [
    "TEMPLATES",
    "PREFIX_ONLY_NOTE",
    "FimTemplate",
    "PromptBuild",
    "Trimmed",
    "build_prompt",
    "detect_template",
    "get_template",
    "trim_to_budget",
]

# A token is rarely longer than this many characters on average, so a window of
# budget * _CHARS_PER_TOKEN characters holds at least `budget` tokens while keeping a
# 100 kB document from being tokenized whole.
_CHARS_PER_TOKEN = 8
# A prefix cut to the budget loses its head in steps of this many characters (to a line start)
# rather than one more character per keystroke: while the user types, the prompt keeps
# starting the same way, so the engine can reuse what it read for the previous one. Only
# for prefixes kept longer than _STEADY_MIN_CHARS (the default budget keeps ~5,000).
_CUT_STEP_CHARS = 512
_STEADY_MIN_CHARS = 1024
# The line being typed is counted as this many tokens (when it has fewer) while the cut is
# decided: one more character can change a line's token count either way ("spli" is two
# tokens, "split" one), and a cut that followed the exact count would jump back and forth
# across a step. So the cut depends on the lines above the cursor's only: it stays put while
# the user types within a line and moves forward, never back, as lines are added. (At most
# budget / 16; a longer line is counted exactly.)
_LINE_RESERVE_TOKENS = 64


# Said at start-up and in /healthz: a user must know why the code after the cursor is ignored.
PREFIX_ONLY_NOTE = ("prefix-only prompts: the model has no fill-in-the-middle tokens, so it does not see the code "
                    "after the cursor until an adapter trained for FIM (trainer.train.fim_template = "
                    "\"smollm-fim\" on the default model) is live")


@dataclass(frozen=True)
class FimTemplate:
    """How one model family spells a fill-in-the-middle prompt.

    ``prefix_marker``/``suffix_marker``/``middle_marker`` are the literal text put around the
    two halves (CodeLlama's include its spaces); ``vocab_tokens`` are the vocabulary entries
    that identify the family; ``stop`` are strings the engine must stop on.
    """

    name: str
    prefix_marker: str = ""
    suffix_marker: str = ""
    middle_marker: str = ""
    stop: tuple[str, ...] = ()
    supports_suffix: bool = True
    order: Literal["psm", "spm"] = "psm"  # prefix-suffix-middle or suffix-prefix-middle
    vocab_tokens: tuple[str, ...] = ()
    auto_detect: bool = True
    # The family's token between files of one repository (Qwen2.5-Coder, StarCoder2): other
    # files' code goes ahead of the FIM prompt as "{file_sep}{path}\n{code}". Without one,
    # it goes at the start of the prefix as comments (see render_context).
    file_sep: str = ""

    def render(self, prefix: str, suffix: str, context: str = "") -> str:
        """The prompt; `context` is render_context()'s text (other files' code), or ""."""
        head, prefix = (context, prefix) if self.file_sep else ("", context + prefix)
        if not self.supports_suffix:
            return head + self.prefix_marker + prefix
        if self.order == "spm":
            return head + self.prefix_marker + self.suffix_marker + suffix + self.middle_marker + prefix
        return head + self.prefix_marker + prefix + self.suffix_marker + suffix + self.middle_marker

    def render_context(self, snippets: Sequence[Any], filepath: str | None = None) -> str:
        """Snippets ({filepath, text}) as the model reads other files: after the family's
        file separator with their path, else as line comments under their path (as Copilot
        sends neighbouring tabs), so that a model without repository tokens reads them as
        notes, not as code of the file it is completing."""
        if not snippets:
            return ""
        if self.file_sep:
            files = "".join(f"{self.file_sep}{s.filepath}\n{s.text.rstrip()}\n" for s in snippets)
            return files + f"{self.file_sep}{filepath or ''}\n"
        blocks = []
        for s in snippets:
            mark = line_comment(s.filepath)
            lines = "".join(f"{mark} {line}".rstrip() + "\n" for line in s.text.rstrip().split("\n"))
            blocks.append(f"{mark} Compare this snippet from {s.filepath}:\n{lines}")
        return "".join(blocks)


_HASH_COMMENT = frozenset({".py", ".pyi", ".rb", ".sh", ".bash", ".yaml", ".yml", ".toml", ".r", ".pl", ".cfg", ".ini"})
_DASH_COMMENT = frozenset({".lua", ".sql", ".hs"})


def line_comment(filepath: str) -> str:
    """The line-comment mark of the language a path's extension names ("//" by default)."""
    dot = filepath.rfind(".")
    ext = filepath[dot:].lower() if dot > filepath.rfind("/") else ""
    return "#" if ext in _HASH_COMMENT else "--" if ext in _DASH_COMMENT else "//"


def _psm(name: str, pre: str, suf: str, mid: str, *extra_stop: str, **kw: Any) -> FimTemplate:
    # Sentinels are stop strings too: a model that emits one has left the middle.
    return FimTemplate(
        name, pre, suf, mid, stop=(*extra_stop, pre, suf, mid), vocab_tokens=(pre, suf, mid), **kw
    )


TEMPLATES: dict[str, FimTemplate] = {
    t.name: t
    for t in (
        # StarCoder, StarCoder2 (and StarCoder-style fine-tunes).
        _psm("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
             "<|endoftext|>", "<fim_pad>", "<file_sep>", "<repo_name>", "<filename>", file_sep="<file_sep>"),
        # The original SantaCoder tokenizer spells the same sentinels with hyphens.
        _psm("santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>",
             "<|endoftext|>", "<fim-pad>"),
        # Meta's format: "<PRE> {prefix} <SUF>{suffix} <MID>"; the vocabulary holds "▁<PRE>" etc.
        FimTemplate(
            "codellama", "<PRE> ", " <SUF>", " <MID>",
            stop=("<EOT>", "</s>", "<PRE>", "<SUF>", "<MID>"),
            vocab_tokens=("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"),
        ),
        # DeepSeek-Coder: fullwidth bars and "▁" are part of the token text.
        _psm("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
             "<｜end▁of▁sentence｜>", "<|EOT|>"),
        _psm("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
             "<|endoftext|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
             "<|im_start|>", "<|im_end|>", file_sep="<|file_sep|>"),
        _psm("codegemma", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
             "<|file_separator|>", "<eos>", "<end_of_turn>"),
        # SmolLM2's unused single-token specials (ids 11-13), for a FIM-trained adapter. The
        # base model never saw them, so this is opt-in only.
        _psm("smollm-fim", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
             "<|endoftext|>", "<jupyter_output>", "<|im_end|>", auto_detect=False),
        FimTemplate("prefix-only", supports_suffix=False),
    )
}


def detect_template(
    model_type: str | None, vocab: Mapping[str, int] | Collection[str]
) -> FimTemplate:
    """The template whose sentinel tokens the vocabulary holds; ``prefix-only`` if none."""
    found = [
        t for t in TEMPLATES.values()
        if t.auto_detect and t.vocab_tokens and all(tok in vocab for tok in t.vocab_tokens)
    ]
    if len(found) > 1:  # Qwen2.5-Coder and CodeGemma share the "<|fim_*|>" spelling.
        return TEMPLATES[_qwen_or_gemma(model_type, vocab)]
    return found[0] if found else TEMPLATES["prefix-only"]


def _qwen_or_gemma(model_type: str | None, vocab: Mapping[str, int] | Collection[str]) -> str:
    kind = (model_type or "").lower()
    if kind.startswith("gemma"):
        return "codegemma"
    if kind.startswith("qwen"):
        return "qwen"
    return "codegemma" if "<|file_separator|>" in vocab else "qwen"


def get_template(
    name: str, model_type: str | None = None, vocab: Mapping[str, int] | Collection[str] = ()
) -> FimTemplate:
    """``"auto"`` detects from the vocabulary; any other name must be a key of TEMPLATES."""
    if name == "auto":
        template = detect_template(model_type, vocab)
    elif name in TEMPLATES:
        template = TEMPLATES[name]
    else:
        valid = ", ".join(["auto", *TEMPLATES])
        raise ValueError(f"unknown FIM template {name!r}; valid names: {valid}")
    if template.file_sep and vocab and template.file_sep not in vocab:
        # StarCoder (1) shares StarCoder2's FIM tokens but has no file separator.
        template = replace(template, file_sep="")
    return template


@dataclass(frozen=True)
class Trimmed:
    """Prefix and suffix cut to fit a budget, with their token counts (exact, re-counted)."""

    prefix: str
    suffix: str
    prefix_tokens: int
    suffix_tokens: int


@dataclass(frozen=True)
class PromptBuild:
    text: str
    prefix: str  # the trimmed prefix that went into `text`
    suffix: str
    prompt_tokens: int  # tokens of `text`, counting any BOS the tokenizer adds
    template: str
    context_snippets: int = 0  # snippets that went into `text`
    context_tokens: int = 0  # tokens they took


def trim_to_budget(
    prefix: str,
    suffix: str,
    tokenizer: Any,
    max_prompt_tokens: int,
    suffix_share: float = 0.25,
    *,
    reserved_tokens: int = 0,
) -> Trimmed:
    """Keep the END of ``prefix`` and the START of ``suffix`` within a token budget.

    The budget is ``max_prompt_tokens - reserved_tokens`` (reserve the template's sentinels).
    The suffix gets at most ``suffix_share`` of it; whatever one side does not need goes to the
    other. A trimmed side is cut at a line boundary (the prefix loses its partial first line,
    the suffix its partial last line) unless that would leave it empty. Cuts are made on
    character offsets, so no character is ever split. Each side is tokenized twice at most:
    once (a window of at most 8 characters per budget token) to cut, once to count (and the
    prefix's last line once more, to size it).
    """
    budget = max(0, max_prompt_tokens - reserved_tokens)
    suf_window, suf_cut = _head(suffix, budget * _CHARS_PER_TOKEN)
    suf_offsets = _offsets(tokenizer, suf_window)
    suffix_cap = int(budget * min(max(suffix_share, 0.0), 1.0))

    # The cut is decided on `decided`, with `reserve` tokens set aside for `held` (see
    # _LINE_RESERVE_TOKENS): the lines above the cursor's and its line, or a long line exactly.
    head, newline, line = prefix.rpartition("\n")
    reserve = min(_LINE_RESERVE_TOKENS, budget // 16)  # a small share of the budget
    if newline and reserve >= 8 and _count(tokenizer, line) <= reserve:
        decided, held = head + newline, line
    else:
        decided, held, reserve = prefix, "", 0
    pre_window, pre_cut = _tail(decided, budget * _CHARS_PER_TOKEN)
    pre_offsets = _offsets(tokenizer, pre_window)
    suf_keep = min(len(suf_offsets), max(suffix_cap, budget - len(pre_offsets) - reserve))
    pre_keep = min(len(pre_offsets), budget - suf_keep - reserve)
    kept = _keep_last(pre_window, pre_offsets, pre_keep, pre_cut) + held

    new_prefix = _steady_cut(prefix, kept)
    new_suffix = _keep_first(suf_window, suf_offsets, suf_keep, suf_cut)
    return Trimmed(
        new_prefix, new_suffix, _count(tokenizer, new_prefix), _count(tokenizer, new_suffix)
    )


def build_prompt(
    template: FimTemplate,
    prefix: str,
    suffix: str,
    tokenizer: Any,
    max_prompt_tokens: int,
    suffix_share: float = 0.25,
    *,
    snippets: Sequence[Any] = (),
    filepath: str | None = None,
    context_share: float = 0.25,
) -> PromptBuild:
    """Trim to the budget, then render. Prefix-only templates give the prefix everything.

    `snippets` (objects with `filepath` and `text`, least relevant first) get what the prefix
    and suffix leave of the budget, and at least `context_share` of it; the least relevant
    are dropped first. ``prompt_tokens`` is at most ``max_prompt_tokens`` unless the
    sentinels alone exceed it.
    """
    if not template.supports_suffix:
        suffix, suffix_share = "", 0.0
    reserved = _count(tokenizer, template.render("", ""), special=True)
    context, used = "", 0
    if snippets and context_share > 0:
        needed = trim_to_budget(prefix, suffix, tokenizer, max_prompt_tokens, suffix_share, reserved_tokens=reserved)
        free = max_prompt_tokens - reserved - needed.prefix_tokens - needed.suffix_tokens
        cap = max(int(max_prompt_tokens * min(context_share, 0.9)), free)
        context, used = _fit_context(template, list(snippets), filepath, tokenizer, cap)
    context_tokens = _count(tokenizer, context)
    budget = max_prompt_tokens
    while True:
        trimmed = trim_to_budget(
            prefix, suffix, tokenizer, budget, suffix_share, reserved_tokens=reserved + context_tokens
        )
        text = template.render(trimmed.prefix, trimmed.suffix, context)
        total = _count(tokenizer, text, special=True)
        # Tokens can merge differently across a cut or a sentinel, so check the real total
        # and shrink by the overshoot; one retry is enough in practice.
        overshoot = total - max_prompt_tokens
        if overshoot <= 0 or not (trimmed.prefix or trimmed.suffix):
            return PromptBuild(text, trimmed.prefix, trimmed.suffix, total, template.name, used, context_tokens)
        budget -= overshoot


def _fit_context(template: FimTemplate, snippets: list[Any], filepath: str | None, tokenizer: Any,
                 cap: int) -> tuple[str, int]:
    """The rendered context of the most relevant snippets that fit in `cap` tokens, and how
    many went in. When even the best one alone is too long, its first lines that fit."""
    for first in range(len(snippets)):
        text = template.render_context(snippets[first:], filepath)
        if _count(tokenizer, text) <= cap:
            return text, len(snippets) - first
    best = snippets[-1]
    lines = best.text.split("\n")
    while len(lines) > 1:
        lines = lines[: len(lines) * 3 // 4]
        text = template.render_context([_Cut(best.filepath, "\n".join(lines))], filepath)
        if _count(tokenizer, text) <= cap:
            return text, 1
    return "", 0


@dataclass(frozen=True)
class _Cut:
    filepath: str
    text: str


def _tail(text: str, limit: int) -> tuple[str, bool]:
    """The last ``limit`` characters, and whether that cut a line."""
    if len(text) <= limit:
        return text, False
    start = len(text) - limit
    return text[start:], text[start - 1] != "\n"


def _head(text: str, limit: int) -> tuple[str, bool]:
    """The first ``limit`` characters, and whether that cut a line."""
    if len(text) <= limit:
        return text, False
    return text[:limit], "\n" not in text[max(limit - 1, 0) : limit + 1]


def _offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    if not text:
        return []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(int(start), int(end)) for start, end in enc["offset_mapping"]]


def _count(tokenizer: Any, text: str, *, special: bool = False) -> int:
    if not text and not special:
        return 0
    return len(tokenizer(text, add_special_tokens=special)["input_ids"])


def _keep_last(window: str, offsets: list[tuple[int, int]], keep: int, was_cut: bool) -> str:
    """The window from the start of its last ``keep`` tokens, from a whole line if possible."""
    if keep <= 0:
        return ""
    if keep >= len(offsets) and not was_cut:
        return window
    i = len(offsets) - keep
    # Byte-level BPE splits a character over several tokens that share its offsets; start
    # after the shared character rather than re-adding the tokens before it.
    while 0 < i < len(offsets) and offsets[i][0] < offsets[i - 1][1]:
        i += 1
    start = offsets[i][0] if i < len(offsets) else len(window)
    kept = window[start:]
    if start > 0 and window[start - 1] == "\n":
        return kept  # already starts on a line
    newline = kept.find("\n")
    if newline != -1 and kept[newline + 1 :].strip():
        return kept[newline + 1 :]
    return kept


def _steady_cut(prefix: str, kept: str) -> str:
    """`kept` (the end of `prefix`), or less of it: cut at the next multiple of _CUT_STEP_CHARS
    from the prefix's start, then at the next line start."""
    cut = len(prefix) - len(kept)
    if cut == 0 or len(kept) < _STEADY_MIN_CHARS:
        return kept
    start = -(-cut // _CUT_STEP_CHARS) * _CUT_STEP_CHARS
    newline = prefix.find("\n", start - 1, len(prefix) - 1)
    if newline != -1:
        start = newline + 1
    return prefix[start:] if len(prefix) - start >= _STEADY_MIN_CHARS // 2 else kept


def _keep_first(window: str, offsets: list[tuple[int, int]], keep: int, was_cut: bool) -> str:
    """The window up to the end of its first ``keep`` tokens, to a whole line if possible."""
    if keep <= 0:
        return ""
    if keep >= len(offsets) and not was_cut:
        return window
    j = keep - 1
    while 0 <= j < len(offsets) - 1 and offsets[j + 1][0] < offsets[j][1]:
        j -= 1  # the next token holds the rest of this character: stop before it
    end = offsets[j][1] if j >= 0 else 0
    kept = window[:end]
    if kept.endswith("\n") or window[end : end + 1] == "\n":
        return kept  # already ends at a line end
    newline = kept.rfind("\n")
    if newline != -1 and kept[: newline + 1].strip():
        return kept[: newline + 1]
    return kept
