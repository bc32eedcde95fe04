"""The typist's records (bench/lsp_typist.py): each keystroke, each configuration's run and
the runs of one configuration read as one, and the figures printed from them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.server_metrics import total


@dataclass
class Stroke:
    index: int
    msg_id: str
    sent: float  # monotonic time of the keystroke (didChange + request sent together)
    answered: float | None = None
    completion_id: str | None = None
    text: str = ""
    error: str | None = None
    cancel_sent: bool = False
    in_time: bool = False  # answered, non-empty, before the next keystroke
    typeahead: bool = False

    @property
    def latency_ms(self) -> float | None:
        return None if self.answered is None or not self.completion_id else (self.answered - self.sent) * 1000


@dataclass
class ModeResult:
    name: str
    options: dict
    strokes: list[Stroke]
    typed_s: float
    stopped_early: bool
    drained: bool
    settled: bool
    lsp_stats: dict
    before: dict
    after: dict
    rows: list[dict]
    queued_at_end: int
    seen_ids: set[str] = field(default_factory=set)
    barrier: dict = field(default_factory=dict)  # what the closing barrier request added to /metrics
    server_cpu_s: float = math.nan

    def delta(self, name: str, **labels: str) -> float:
        return total(self.after, name, **labels) - total(self.before, name, **labels) - total(self.barrier, name, **labels)


@dataclass
class Combined:
    """One configuration's runs (one per round), read as one."""

    parts: list[ModeResult]

    @property
    def strokes(self) -> list[Stroke]:
        return [s for p in self.parts for s in p.strokes]

    @property
    def rows(self) -> list[dict]:
        return [row for p in self.parts for row in p.rows]

    @property
    def seen_ids(self) -> set[str]:
        return set().union(*(p.seen_ids for p in self.parts))

    @property
    def lsp_stats(self) -> dict:
        return {k: sum(p.lsp_stats.get(k, 0) for p in self.parts) for k in self.parts[0].lsp_stats}

    @property
    def queued_at_end(self) -> int:
        return max(p.queued_at_end for p in self.parts)

    @property
    def server_cpu_s(self) -> float:
        return sum(p.server_cpu_s for p in self.parts)

    def delta(self, name: str, **labels: str) -> float:
        return sum(p.delta(name, **labels) for p in self.parts)


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]  # nearest rank


def figures(r: Combined, max_tokens: int) -> dict[str, float]:
    f: dict[str, float] = {}
    f["keystrokes"] = len(r.strokes)
    completions = {reason: r.delta("codeloop_completions_total", finish_reason=reason) for reason in ("stop", "length", "cancelled")}
    cancelled_running = r.delta("codeloop_tokens_after_cancel_count")
    f["requests at the server"] = sum(completions.values())
    for status, what in (("200", "answered"), ("429", "refused: engine queue full"), ("499", "the client went away")):
        f[f"  HTTP {status} ({what})"] = r.delta("codeloop_http_requests_total", route="/v1/completions", status=status)
    f["generations started"] = completions["stop"] + completions["length"] + cancelled_running
    f["  finished (stop + length)"] = completions["stop"] + completions["length"]
    f["  cancelled while generating"] = cancelled_running
    f["  finished with an empty suggestion"] = sum(not row.get("text") for row in r.rows)
    f["cancelled while queued (never ran)"] = completions["cancelled"] - cancelled_running
    f["engine queue depth when the wait ended"] = r.queued_at_end
    tokens_done = sum(row["completion_tokens"] or 0 for row in r.rows)  # /v1/logs: finished generations
    cancelled_tokens = r.delta("codeloop_cancelled_generation_tokens_total")
    f["tokens counted (codeloop_completion_tokens)"] = r.delta("codeloop_completion_tokens_total")
    f["tokens, finished generations (/v1/logs)"] = tokens_done
    f["tokens, cancelled generations"] = cancelled_tokens
    by_id = {row["id"]: row for row in r.rows}
    seen_tokens = sum(by_id[i]["completion_tokens"] or 0 for i in r.seen_ids if i in by_id)
    f["tokens the typist saw"] = seen_tokens
    # How much of each prompt the engine did not have to read (its prompt reuse), over the
    # generations that finished: what typing costs before the first token.
    prompt_tokens = r.delta("codeloop_prompt_tokens_total")
    f["prompt tokens of finished generations"] = prompt_tokens
    f["  reused from an earlier prompt"] = r.delta("codeloop_cached_prompt_tokens_total")
    f["  reused share"] = f["  reused from an earlier prompt"] / prompt_tokens if prompt_tokens else math.nan
    # Repository context the language server sent (the typed file's imports, from the workspace).
    f["finished generations with context"] = sum(bool(row.get("context_snippets")) for row in r.rows)
    f["  context tokens per prompt, mean"] = (sum(row.get("context_tokens") or 0 for row in r.rows) / len(r.rows)
                                              if r.rows else math.nan)
    f["tokens shown per /v1/logs (shown=true)"] = sum(row["completion_tokens"] or 0 for row in r.rows if row.get("shown"))
    generated = tokens_done + cancelled_tokens
    f["wasted tokens"] = generated - seen_tokens
    f["wasted share"] = (generated - seen_tokens) / generated if generated else math.nan
    answered = [s for s in r.strokes if s.completion_id and s.text]
    in_time = [s for s in r.strokes if s.in_time]
    f["answers with a suggestion (any time)"] = len(answered)
    f["suggestions seen (before the next key)"] = len(in_time)
    f["  of them typing ahead"] = sum(s.typeahead for s in in_time)
    f["keystrokes with no suggestion seen"] = len(r.strokes) - len(in_time)
    f["late answers (after the next keystroke)"] = len(answered) - len(in_time)
    f["errors (cancelled requests, mostly)"] = sum(s.error is not None for s in r.strokes)
    seen_ms = [s.latency_ms for s in in_time]
    model_ms = [s.latency_ms for s in in_time if not s.typeahead]
    any_ms = [s.latency_ms for s in answered]
    f["key -> suggestion seen, p50 (ms)"] = pct(seen_ms, 0.5)
    f["key -> suggestion seen, p95 (ms)"] = pct(seen_ms, 0.95)
    f["  excluding typing ahead, p50 (ms)"] = pct(model_ms, 0.5)
    f["  excluding typing ahead, p95 (ms)"] = pct(model_ms, 0.95)
    f["key -> any answer incl. late, p50 (ms)"] = pct(any_ms, 0.5)
    f["key -> any answer incl. late, p95 (ms)"] = pct(any_ms, 0.95)
    f["server CPU seconds (whole configuration)"] = r.server_cpu_s
    engine_s, engine_n = r.delta("codeloop_engine_seconds_sum"), r.delta("codeloop_engine_seconds_count")
    f["engine s per finished generation"] = engine_s / engine_n if engine_n else math.nan
    f["tokens/s, finished generations"] = tokens_done / engine_s if engine_n else math.nan
    for k in ("requests", "typeahead_hits", "cache_hits", "debounced", "model_calls", "cancelled", "failures", "suggestions"):
        f[f"lsp {k}"] = r.lsp_stats.get(k, math.nan)
    return f


def show(value, share: bool = False) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if share:
        return f"{value:.1%}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    return f"{int(value)}"


def ratio(b, a) -> str:
    if isinstance(a, str) or isinstance(b, str) or any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
        return "-"
    if a == 0:
        return "-" if b == 0 else "inf"
    return f"{b / a:.2f}x"
