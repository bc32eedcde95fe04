"""The FIM prompt format an adapter is trained with, built exactly as the server builds it.

The templates and the trimming come from `codeloop.fim`, a pure module (no server state), so
the trainer and the server can never disagree about a prompt. The format is recorded as
`fim_template` in the adapter's codeloop.json, and the server prompts the adapter that way.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codeloop.fim import FimTemplate, build_prompt, get_template
from codeloop.token_healing import heal

# Opt-in FIM for a model without FIM tokens (the default SmolLM2): its unused single-token
# specials, so the adapter stays LoRA-only (no new tokens, which vLLM cannot serve).
REUSED_SPECIALS = "smollm-fim"


def training_template(name: str, model_type: str | None, vocab: Any) -> FimTemplate:
    """"auto": the model's own FIM format, or prefix-only for a model without FIM tokens (the
    format it was pretrained on: a short CPU budget then goes into the code, not into learning
    a new format). "smollm-fim" (REUSED_SPECIALS) teaches FIM on unused single-token specials."""
    if name != "auto":
        template = get_template(name)
        if template.vocab_tokens and not all(token in vocab for token in template.vocab_tokens):
            raise ValueError(f"trainer.train.fim_template = {name!r}: this model's vocabulary lacks its tokens "
                             f"{', '.join(template.vocab_tokens)}; use 'auto' or 'prefix-only'")
        return template
    return get_template("auto", model_type, vocab)


def heal_aligned(prefix: str, middle: str) -> tuple[str, str]:
    """The example as the server asks for it with token healing: a middle that starts an
    indented line is cut where codeloop/token_healing.heal cuts a prompt whose cursor is after
    that indentation, so the model learns to write "\\n    name" after the previous line, as
    the tokenizer splits it."""
    if not (prefix.endswith("\n") and middle[:1] in (" ", "\t") and middle.strip()):
        return prefix, middle
    indent = middle[: len(middle) - len(middle.lstrip(" \t"))]
    healed = heal(prefix + indent)
    return healed.prompt_prefix, healed.removed + middle[len(indent):]


def serving_template(name: str | None, model_type: str | None, vocab: Any, default: str = "auto") -> FimTemplate:
    """How the server prompts an adapter (or the base model, name None): as in server/completions."""
    return get_template(name or default, model_type, vocab)


def render(template: FimTemplate, tokenizer: Any, prefix: str, suffix: str, max_prompt_tokens: int, suffix_share: float,
           *, snippets: Sequence[Any] = (), filepath: str | None = None, context_share: float = 0.25) -> str:
    return build_prompt(template, prefix, suffix, tokenizer, max_prompt_tokens, suffix_share, snippets=snippets,
                        filepath=filepath, context_share=context_share).text
