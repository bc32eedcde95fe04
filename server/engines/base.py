"""The engine protocol every backend implements (see DESIGN.md, "Engines")."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy, deterministic
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Called with the text generated so far; True ends generation (finish_reason "stop") when
    # nothing more would be shown, e.g. the block the cursor is in has ended. It judges whole
    # lines, so engines may call it only when new text brings a newline.
    stop_check: Callable[[str], bool] | None = None
    # time.monotonic() after which generation stops with what it has (finish_reason "length"):
    # an editor's latency budget; a suggestion that comes after the user typed on is not seen.
    deadline: float | None = None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass
class Completion:
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]
    prompt_tokens: int
    completion_tokens: int
    queue_ms: float
    engine_ms: float
    first_token_ms: float | None = None
    adapter: str | None = None
    cached_prompt_tokens: int = 0  # of prompt_tokens, those the engine did not have to read again


@dataclass(frozen=True)
class LoraLimits:
    """What LoRA adapters an engine can serve; None = no limit known. Checked at registration
    so a bad adapter gets a clear 422 instead of an engine error (or a silently ignored layer)."""

    max_rank: int | None = None
    target_modules: frozenset[str] | None = None


class EngineError(Exception):
    """The engine could not do what was asked; the message says why."""


class EngineBusy(EngineError):
    """Too many requests are waiting; the caller should retry later."""


class EngineUnavailable(EngineError):
    """The engine's backend cannot be reached now (e.g. every vLLM replica is down); retry later."""


class Engine(Protocol):
    model_dir: Path
    model_name: str  # what `model` / `base_model_name_or_path` must match
    model_type: str
    tokenizer: object  # a Hugging Face tokenizer (prompt trimming uses the real one)

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def complete(self, prompt: str, params: GenerationParams, adapter: str | None) -> Completion:
        """Generate; if the awaiting task is cancelled, generation stops within a few tokens."""

    async def load_adapter(self, name: str, path: Path) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...

    def adapters(self) -> list[str]: ...

    def queue_depth(self) -> int: ...

    cancel_stats: "CancelStats"
    lora_limits: LoraLimits  # known once start() has returned


@dataclass
class CancelStats:
    """How promptly cancelled generations stopped (tokens produced after the cancel)."""

    cancelled: int = 0
    tokens_after_cancel: list[int] = field(default_factory=list)
    # Tokens each cancelled generation produced in all (work nobody saw), not yet reported.
    # Lists, like the above: appends from the engine's thread and the swap in drain are atomic.
    cancelled_tokens: list[int] = field(default_factory=list)

    def drain(self) -> list[int]:
        """The figures recorded since the last drain (for the /metrics histogram)."""
        taken, self.tokens_after_cancel = self.tokens_after_cancel, []
        return taken

    def drain_cancelled_tokens(self) -> int:
        taken, self.cancelled_tokens = self.cancelled_tokens, []
        return sum(taken)
