"""From a completion request to a cleaned-up suggestion: adapter, FIM prompt, engine, post-processing."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from codeloop.fim import FimTemplate, build_prompt, get_template
from codeloop.names import BASE, split_arm
from codeloop.token_healing import Healed, heal, split_stops, still_rewriting, strip_removed
from server.adapters import AdapterRegistry
from server.engines import Completion, Engine, EngineBusy, GenerationParams
from server.errors import Refused
from server.metrics import ServerMetrics
from server.postprocess import block_ended, postprocess, wants_multiline
from server.schemas import Choice, CompletionRequest, CompletionResponse, Timings, Usage


class CompletionService:
    def __init__(self, engine: Engine, registry: AdapterRegistry, metrics: ServerMetrics, settings, *, experiments=None, telemetry=None):
        self.engine = engine
        self.registry = registry
        self.experiments = experiments  # server.experiments.ExperimentManager, or None
        self.telemetry = telemetry  # server.telemetry.Telemetry, or None when telemetry is off
        self.metrics = metrics
        self.settings = settings
        self._vocab = engine.tokenizer.get_vocab()
        self._in_flight = 0  # completions between admission and the engine's answer
        self.default_template = get_template(settings.fim_template, engine.model_type, self._vocab)

    def template_for(self, adapter: str | None) -> FimTemplate:
        """An adapter trained with its own FIM format (codeloop.json) is prompted that way."""
        record = self.registry.records.get(adapter) if adapter else None
        if record and record.fim_template:
            return get_template(record.fim_template, self.engine.model_type, self._vocab)
        return self.default_template

    async def complete(self, req: CompletionRequest) -> CompletionResponse:
        started = time.monotonic()
        max_tokens = req.max_tokens or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_limit:
            raise Refused(422, f"max_tokens={max_tokens} is over this server's limit of {self.settings.max_tokens_limit}")
        seg = req.segments
        if seg is not None:
            prefix, suffix, language = seg.prefix, seg.suffix, seg.language
        else:
            prefix, suffix, language = req.prompt or "", req.suffix or "", None
        # Resolve the adapter and hand the job to the engine with no await in between, so an
        # unload requested meanwhile queues behind this request (see server/adapters.py).
        requested = req.adapter or req.model
        routed = self.experiments.route(req.user) if requested is None and self.experiments else None
        experiment, arm = (routed[0].id, routed[1]) if routed else (None, None)
        arm_adapter, with_context = split_arm(arm) if arm else (None, True)
        adapter = self.registry.resolve(arm_adapter or requested)
        template = self.template_for(adapter)
        healed = heal(prefix) if self.settings.token_healing else Healed(prefix, "")
        build = partial(build_prompt, template, tokenizer=self.engine.tokenizer,
                        max_prompt_tokens=self.settings.max_prompt_tokens, suffix_share=self.settings.suffix_share,
                        snippets=seg.snippets if seg is not None and with_context else (),
                        filepath=seg.filepath if seg is not None else None, context_share=self.settings.context_share)
        prompt = build(prefix=healed.prompt_prefix, suffix=suffix)
        cursor_prefix = prompt.prefix + healed.removed  # what the editor has before the cursor
        params = generation_params(req, max_tokens, template.stop, cursor_prefix, prompt.suffix, language, started)
        if self._in_flight >= self.settings.max_in_flight:
            # Every engine gets this bound (vLLM would otherwise queue without limit); the
            # embedded engine's own max_queue is tighter.
            raise EngineBusy(f"{self._in_flight} completions are already in progress; retry shortly")
        self._in_flight += 1
        try:
            result = await self._generate_healed(prompt.text, params, adapter, healed.removed)
            if result is None:  # the model did not re-write what healing removed: ask unhealed
                prompt = build(prefix=prefix, suffix=suffix)
                result = await self._generate(prompt.text, params, adapter)
        except asyncio.CancelledError:  # the client went away; the engine has stopped
            self.metrics.completions.labels(adapter or BASE, "cancelled").inc()
            raise
        finally:
            self._in_flight -= 1
        if line_budget_fired(params) and result.finish_reason == "stop":
            result.finish_reason = "length"  # cut by the line budget: the model had more to say
        text = result.text
        if req.postprocess:
            text = postprocess(text, cursor_prefix, prompt.suffix, language=language, stop=params.stop,
                               truncated=result.finish_reason == "length")
        elif line_budget_fired(params):
            text = text.rpartition("\n")[0]  # whole lines only: what followed was a start
        self._observe(result, adapter)
        response = CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=adapter or self.engine.model_name,
            adapter=adapter, experiment=experiment, arm=arm,
            choices=[Choice(index=0, text=text, finish_reason=result.finish_reason)],
            usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
            timings=timings(result, started))
        if self.telemetry is not None:
            await self.telemetry.record_completion(req, response, cursor_prefix, prompt.suffix, language,
                                                   context=(prompt.context_snippets, prompt.context_tokens))
        return response

    async def _generate_healed(self, text: str, params: GenerationParams, adapter: str | None,
                               removed: str) -> Completion | None:
        """Generate from a healed prompt: the answer without the re-written part, or None when
        the model wrote something else there. Stops that could match inside the re-written part
        (a newline stop and a newline before the indentation) apply only after it."""
        if not removed:
            return await self._generate(text, params, adapter)
        early, late = split_stops(params.stop, removed)
        inner = params.stop_check

        def after_removed(generated: str) -> bool:
            rest = strip_removed(generated, removed)
            if rest is None:
                return not still_rewriting(generated, removed)  # went elsewhere: no use going on
            return any(s in rest for s in late) or bool(inner and inner(rest))

        # As many more tokens as the re-written part took in the prompt (a newline and
        # indentation: one or two), so the answer itself still gets max_tokens.
        rewrite_tokens = min(len(self.engine.tokenizer(removed, add_special_tokens=False)["input_ids"]), 4)
        healed_params = replace(params, stop=early, stop_check=after_removed if (late or inner) else None,
                                max_tokens=params.max_tokens + rewrite_tokens)
        result = await self._generate(text, healed_params, adapter)
        # Usage counts the answer's tokens, as a client that asked for max_tokens expects.
        result.completion_tokens = max(0, min(result.completion_tokens - rewrite_tokens, params.max_tokens))
        rest = strip_removed(result.text, removed)
        if rest is None:
            if not (still_rewriting(result.text, removed) or result.finish_reason == "cancelled" or params.past_deadline()):
                return None  # the model went elsewhere: worth asking the unhealed prompt
            rest = ""  # stopped (budget, cancel, end) before it had re-written the removed part
        for stop in late:
            if stop in rest:
                rest, result.finish_reason = rest[: rest.index(stop)], "stop"
        result.text = rest
        return result

    async def _generate(self, text: str, params: GenerationParams, adapter: str | None) -> Completion:
        if not text:
            # Nothing before or after the cursor (an empty file under a template without FIM
            # tokens): no context to continue, and a zero-token prompt is an error in every
            # engine (it was a 500). Nothing to suggest.
            return Completion(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0,
                              queue_ms=0.0, engine_ms=0.0, adapter=adapter)
        return await self.engine.complete(text, params, adapter)

    def _observe(self, result, adapter: str | None) -> None:
        label = adapter or BASE
        m = self.metrics
        m.engine_seconds.labels(label).observe(result.engine_ms / 1000)
        m.queue_seconds.observe(result.queue_ms / 1000)
        if result.first_token_ms is not None:
            m.first_token_seconds.observe(result.first_token_ms / 1000)
        m.prompt_tokens.inc(result.prompt_tokens)
        m.cached_prompt_tokens.inc(result.cached_prompt_tokens)
        m.completion_tokens.labels(label).inc(result.completion_tokens)
        m.completions.labels(label, result.finish_reason).inc()


def generation_params(req: CompletionRequest, max_tokens: int, template_stops, cursor_prefix: str, suffix: str,
                      language: str | None, started: float) -> GenerationParams:
    """What the engine is asked for. Tokens past what postprocess keeps would be generated for
    nobody: a single-line suggestion stops at the line end, a multi-line one once its block has ended."""
    stops = [*template_stops, *req.stop_list()]
    stop_check = None
    if req.postprocess:
        if not wants_multiline(cursor_prefix, suffix):
            stops.append("\n")
        else:
            stop_check = partial(block_ended, prefix=cursor_prefix, language=language)
    if req.line_latency_ms:
        stop_check = LineBudget(started + req.line_latency_ms / 1000, stop_check)
    return GenerationParams(
        max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=tuple(dict.fromkeys(stops)),
        seed=req.seed, stop_check=stop_check,
        deadline=started + req.max_latency_ms / 1000 if req.max_latency_ms else None)


class LineBudget:
    """A stop_check that ends a multi-line answer with the line that is complete when its
    deadline has passed (and still asks `inner`, the check it wraps). On a CPU a whole block
    takes a second or more; its first lines, shown in a few hundred milliseconds, are seen
    before the user types on. `fired`: it ended the answer (the end is a cut, not the model's)."""

    def __init__(self, deadline: float, inner: Callable[[str], bool] | None = None):
        self.deadline, self.inner, self.fired = deadline, inner, False

    def __call__(self, generated: str) -> bool:
        if self.inner is not None and self.inner(generated):
            return True
        head, newline, _ = generated.rpartition("\n")
        if newline and head.strip() and time.monotonic() >= self.deadline:
            self.fired = True
        return self.fired


def line_budget_fired(params: GenerationParams) -> bool:
    return isinstance(params.stop_check, LineBudget) and params.stop_check.fired


def timings(result: Completion, started: float) -> Timings:
    total_ms = (time.monotonic() - started) * 1000
    return Timings(queue_ms=round(result.queue_ms, 2), engine_ms=round(result.engine_ms, 2), total_ms=round(total_ms, 2),
                   first_token_ms=None if result.first_token_ms is None else round(result.first_token_ms, 2))
