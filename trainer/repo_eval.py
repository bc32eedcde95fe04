"""`codeloop eval`: held-out lines asked through a running server, as an editor asks.

Every model (the base model and each named adapter) answers the same held-out lines
(trainer/heldout.py) through `POST /v1/completions` in the editor form, so the server's FIM
template, token budget, token healing and post-processing all apply. Scores are next-line
exact match and edit similarity with 95 % bootstrap intervals, and for each adapter the
paired difference against the base with its interval and McNemar's exact test.

Each model is asked with the lines' repository context (trainer/repo_context.py) and without
it, so the report shows what context is worth to the base model and to each adapter.

The request asks for one line (stop at a newline): only the line at the cursor is scored,
and the lines after it would cost CPU time for nothing.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

from codeloop.api_client import ApiClient
from codeloop.names import BASE, NO_CONTEXT, split_arm
from trainer.evaluate import edit_similarity
from trainer.heldout import HeldOutLine
from trainer.significance import bootstrap_mean_ci, compare_paired

EVAL_CLIENT = "codeloop-eval"  # the `client` of eval requests in telemetry, to tell them apart


@dataclass
class ModelAnswers:
    model: str  # "base" or an adapter's name
    answers: list[str] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)
    edit_sim: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, seed: int = 0) -> dict:
        em_low, em_high = bootstrap_mean_ci([float(x) for x in self.exact], seed=seed)
        es_low, es_high = bootstrap_mean_ci(self.edit_sim, seed=seed)
        n = max(1, len(self.exact))
        return {"model": self.model, "n": len(self.exact),
                "exact_match": round(sum(self.exact) / n, 4), "exact_match_ci": [round(em_low, 4), round(em_high, 4)],
                "edit_sim": round(sum(self.edit_sim) / n, 4), "edit_sim_ci": [round(es_low, 4), round(es_high, 4)],
                "empty": sum(1 for a in self.answers if not a.strip()),
                "seconds_per_line": round(self.seconds / n, 3)}


def score_line(answer: str, expected: str) -> tuple[bool, float]:
    """The answer's first line against the expected line, both without surrounding blanks."""
    got = answer.split("\n", 1)[0].strip()
    return got == expected.strip(), edit_similarity(got, expected.strip())


def ask(api: ApiClient, line: HeldOutLine, model: str, max_tokens: int, *, context: bool = True,
        one_line: bool = True) -> str:
    """The model's answer at the line's cursor, asked in the editor form. `one_line` False:
    as an editor's multi-line suggestion (the server's own stops), for a blind review."""
    segments = {"prefix": line.prefix, "suffix": line.suffix, "filepath": line.path, "language": line.language}
    if context and line.snippets:
        segments["snippets"] = [s.to_dict() for s in line.snippets]
    body = {
        "segments": segments, "adapter": model, "max_tokens": max_tokens, "temperature": 0,
        "user": EVAL_CLIENT, "client": EVAL_CLIENT,
    }
    if one_line:
        body["stop"] = ["\n"]
    return api.complete(body)["choices"][0]["text"]


def run_eval(api: ApiClient, lines: Sequence[HeldOutLine], models: Sequence[str], *, max_tokens: int = 48,
             contexts: Sequence[bool] = (True,), progress: bool = True,
             on_answer: Callable[[str, HeldOutLine, str], None] | None = None) -> dict[str, ModelAnswers]:
    """Each model answers every line, with its snippets and/or without (`contexts`); a model
    asked without them is reported as "<model>+no-context", as an A/B arm names it. Models
    go one after the other: the engine's prompt reuse keeps what it read per adapter."""
    import time

    from tqdm import tqdm

    results: dict[str, ModelAnswers] = {}
    for model, context in ((m, c) for m in models for c in contexts):
        label = model if context else model + NO_CONTEXT
        answers = ModelAnswers(label)
        started = time.monotonic()
        for line in tqdm(lines, desc=f"eval {label}", unit="line", file=sys.stderr, disable=not progress):
            text = ask(api, line, model, max_tokens, context=context)
            exact, sim = score_line(text, line.expected)
            answers.answers.append(text)
            answers.exact.append(exact)
            answers.edit_sim.append(sim)
            if on_answer:
                on_answer(label, line, text)
        answers.seconds = time.monotonic() - started
        results[label] = answers
    return results


def report(results: dict[str, ModelAnswers], *, baseline: str = BASE, seed: int = 0) -> dict:
    """Per model: scores with intervals. Paired comparisons: each adapter against the
    baseline asked the same way (both with context, or both without), and each model with
    context against itself without."""
    out: dict = {"models": [r.summary(seed) for r in results.values()], "comparisons": []}
    pairs = []
    for name in results:
        model, context = split_arm(name)
        if model != baseline:
            pairs.append((name, baseline if context else baseline + NO_CONTEXT))
    pairs += [(name, name + NO_CONTEXT) for name in results if split_arm(name)[1]]
    for name, against in pairs:
        if against not in results:
            continue
        a, r = results[against], results[name]
        cmp = compare_paired(a.exact, r.exact, a.edit_sim, r.edit_sim, seed=seed)
        out["comparisons"].append({"model": name, "against": against, **cmp.to_dict(),
                                   "significant": cmp.significant()})
    return out


def format_report(rep: dict) -> str:
    """The report as the tables `codeloop eval` prints."""
    rows = [f"{'model':<32}{'n':>5}{'exact match':>13}{'95% CI':>17}{'edit sim':>10}{'95% CI':>17}{'empty':>7}{'s/line':>8}"]
    for m in rep["models"]:
        rows.append(f"{m['model']:<32}{m['n']:>5}{m['exact_match']:>13.3f}{_ci(m['exact_match_ci']):>17}"
                    f"{m['edit_sim']:>10.3f}{_ci(m['edit_sim_ci']):>17}{m['empty']:>7}{m['seconds_per_line']:>8.2f}")
    for c in rep["comparisons"]:
        rows.append(
            f"{c['model']} vs {c['against']}: exact match {c['exact_gain']:+.3f} "
            f"[{c['exact_low']:+.3f}, {c['exact_high']:+.3f}], edit sim {c['edit_sim_gain']:+.3f} "
            f"[{c['edit_sim_low']:+.3f}, {c['edit_sim_high']:+.3f}]; McNemar p = {c['p_value']:.3g} "
            f"({c['cand_only']} lines only it got right, {c['base_only']} only {c['against']}): "
            + ("significant" if c["significant"] else "not significant"))
    return "\n".join(rows)


def _ci(pair: Sequence[float]) -> str:
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def gate_results(api: ApiClient, lines: Sequence[HeldOutLine], models: dict[str, str], *,
                 progress: bool = True) -> dict[str, dict]:
    """The trainer's table and its gate's input, measured as `codeloop eval` measures:
    {label: {exact_match_line, edit_sim_line, n, per_example: {exact_match_line, edit_sim_line}}}
    for models {label: server model name ("base" or an adapter)}."""
    answers = run_eval(api, lines, list(dict.fromkeys(models.values())), progress=progress)
    out = {}
    for label, model in models.items():
        a = answers[model]
        n = max(1, len(a.exact))
        out[label] = {"model": model, "n": len(a.exact),
                      "exact_match_line": round(sum(a.exact) / n, 4), "edit_sim_line": round(sum(a.edit_sim) / n, 4),
                      "empty": sum(1 for t in a.answers if not t.strip()),
                      "per_example": {"exact_match_line": list(a.exact), "edit_sim_line": list(a.edit_sim)}}
    return out


def gate_table(results: dict[str, dict]) -> str:
    rows = [f"{'model':<28}{'n':>6}{'exact match (line)':>20}{'edit sim (line)':>18}{'empty':>7}"]
    rows += [f"{label:<28}{r['n']:>6}{r['exact_match_line']:>20.4f}{r['edit_sim_line']:>18.4f}{r.get('empty', 0):>7}"
             for label, r in results.items()]
    return "\n".join(rows)
