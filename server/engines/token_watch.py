"""What the embedded engines check after every generated token, and how they report the end.

Shared by the transformers and llama.cpp engines so that both stop for the same reasons
(cancel, a stop string, the caller's stop_check, the deadline) and report the same way.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

from server.engines.base import CancelStats, Completion, GenerationParams
from server.engines.worker import Job

# Only the last few tokens can complete a stop string that was not there a token ago.
STOP_TAIL_TOKENS = 16


class TokenWatch:
    def __init__(self, job: Job, tokenizer, params: GenerationParams):
        self.job, self.tokenizer, self.params = job, tokenizer, params
        self.tokens = 0
        self.first_token_at: float | None = None
        self.tokens_after_cancel = 0
        self.hit_stop = False

    def stop_after(self, generated: Sequence[int]) -> bool:
        """Called once per generated token with all tokens generated so far; True: stop."""
        now = time.monotonic()
        self.tokens += 1
        if self.first_token_at is None:
            self.first_token_at = now
        cancelled = self.job.cancel.is_set()
        if cancelled and self.job.cancelled_at is not None and now >= self.job.cancelled_at:
            self.tokens_after_cancel += 1
        if self.params.stop and not cancelled:
            # Decoding the tail is cheap next to a forward pass.
            tail = self.tokenizer.decode(generated[-STOP_TAIL_TOKENS:])
            self.hit_stop = any(s in tail for s in self.params.stop)
        if self.params.stop_check and not (cancelled or self.hit_stop) and "\n" in self.tokenizer.decode(generated[-1:]):
            # The callers' checks look at whole lines, so only a new line can change the answer.
            self.hit_stop = self.params.stop_check(self.tokenizer.decode(generated, skip_special_tokens=True))
        return cancelled or self.hit_stop or self.params.past_deadline()

    def completion(self, generated: Sequence[int], *, ended: bool, prompt_tokens: int, cached_prompt_tokens: int,
                   started: float, adapter: str | None, stats: CancelStats) -> Completion:
        """The answer for `generated`; `ended`: its last token ends generation (EOS)."""
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        finish = "length"
        if self.job.cancel.is_set():
            finish = "cancelled"
            stats.cancelled += 1
            stats.tokens_after_cancel.append(self.tokens_after_cancel)
            stats.cancelled_tokens.append(len(generated))
        elif self.hit_stop or ended:
            finish = "stop"
        for s in self.params.stop:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        done = time.monotonic()
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(generated),
            queue_ms=(started - self.job.enqueued) * 1000,
            engine_ms=(done - started) * 1000,
            first_token_ms=None if self.first_token_at is None else (self.first_token_at - started) * 1000,
            adapter=adapter,
            cached_prompt_tokens=cached_prompt_tokens,
        )
