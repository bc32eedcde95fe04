"""The FIM prompt format an adapter is trained with, built exactly as the server builds it.

The templates and the trimming come from `server.fim`, a pure module (no server state), so
the trainer and the server can never disagree about a prompt. The format is recorded as
`fim_template` in the adapter's codeloop.json, and the server prompts the adapter that way.
"""
from __future__ import annotations

from typing import Any

from server.fim import TEMPLATES, FimTemplate, build_prompt, get_template

# A model without FIM tokens (the default SmolLM2) learns FIM on unused single-token
# specials: the adapter stays LoRA-only (no new tokens, which vLLM cannot serve).
REUSED_SPECIALS = "smollm-fim"


def training_template(name: str, model_type: str | None, vocab: Any) -> FimTemplate:
    if name != "auto":
        return get_template(name)
    detected = get_template("auto", model_type, vocab)
    if detected.supports_suffix:
        return detected
    reused = TEMPLATES[REUSED_SPECIALS]
    if all(token in vocab for token in reused.vocab_tokens):
        return reused
    raise ValueError(
        "this model has no fill-in-the-middle tokens and not the unused special tokens codeloop "
        "reuses for them; set trainer.train.fim_template (e.g. 'prefix-only')"
    )


def serving_template(name: str | None, model_type: str | None, vocab: Any, default: str = "auto") -> FimTemplate:
    """How the server prompts an adapter (or the base model, name None): as in server/completions."""
    return get_template(name or default, model_type, vocab)


def render(template: FimTemplate, tokenizer: Any, prefix: str, suffix: str, max_prompt_tokens: int, suffix_share: float) -> str:
    return build_prompt(template, prefix, suffix, tokenizer, max_prompt_tokens, suffix_share).text
