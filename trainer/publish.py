"""Publishing a trained adapter: the folder into the adapter directory, then (over HTTP)
registered, and promoted or A/B-tested against the live adapter, as configured. Promotion
is gated on a paired significance test over the held-out examples (trainer/significance.py).

The folder is written under a hidden name and renamed when complete, and the server is only
told at the very end: a run that dies earlier leaves the live adapter and the registry as
they were.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from codeloop.api_client import ApiClient
from codeloop.names import BASE
from trainer.config import PublishConfig
from trainer.significance import PairedComparison, compare_paired

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class Decision:
    action: str  # what was done: "promoted", "experiment", "registered", "not_published"
    reason: str
    experiment_id: str | None = None
    review_id: str | None = None
    gate: dict | None = None  # GateResult.to_dict(): the comparison behind the decision


def next_version(name: str, existing: list[str], adapters_dir: Path) -> int:
    """One more than the highest NAME@N known to the server or present on disk."""
    pattern = re.compile(rf"^\.?{re.escape(name)}@(\d+)(\.partial)?$")
    taken = [int(m.group(1)) for n in [*existing, *(p.name for p in adapters_dir.glob("*"))] if (m := pattern.match(n))]
    return max(taken, default=0) + 1


def write_adapter(trained: Path, adapters_dir: Path, folder_name: str, metadata: dict[str, Any]) -> Path:
    """Copy the adapter files plus codeloop.json into adapters_dir/folder_name, atomically."""
    adapters_dir.mkdir(parents=True, exist_ok=True)
    final = adapters_dir / folder_name
    if final.exists():
        raise FileExistsError(f"{final} already exists; adapter versions are never overwritten")
    partial = adapters_dir / f".{folder_name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for name in ADAPTER_FILES:
        shutil.copy2(trained / name, partial / name)
    (partial / "codeloop.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
    for f in partial.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    partial.rename(final)
    return final


@dataclass
class GateResult:
    """Should the candidate replace `against` (the live adapter, or the base model)?"""

    passed: bool
    reason: str
    against: str  # the results label compared with: "live" or "base"
    against_model: str  # the adapter's name, or "base"
    n: int  # held-out examples both were scored on
    comparison: PairedComparison | None  # None with too few examples

    def to_dict(self, config: PublishConfig) -> dict[str, Any]:
        return {"decision": "promote" if self.passed else "do_not_promote", "reason": self.reason,
                "against": self.against, "against_model": self.against_model, "n": self.n,
                "min_gate_examples": config.min_gate_examples, "alpha": config.gate_alpha, "min_gain": config.min_gain,
                "metric": "exact_match_line", "test": "mcnemar_exact + paired bootstrap",
                "comparison": self.comparison.to_dict() if self.comparison else None}


def gate(results: dict[str, dict[str, Any]], config: PublishConfig, live: str | None = None) -> GateResult:
    """The paired test of the candidate against the live adapter (the base model when
    nothing is live or the live one could not be evaluated) on the same held-out examples.

    results[label]["per_example"] = {"exact_match_line": [bool...], "edit_sim_line": [float...]},
    in the same example order for every label.
    """
    label = "live" if "live" in results else BASE
    model = (live or "live") if label == "live" else BASE
    base, cand = _per_example(results, label), _per_example(results, "candidate")
    n = len(base["exact_match_line"])
    if len(cand["exact_match_line"]) != n:
        raise ValueError(f"candidate scored on {len(cand['exact_match_line'])} examples, {label} on {n}: "
                         "the gate needs both on the same examples")
    if n < config.min_gate_examples:
        why = (f"too few held-out examples to judge: {n} evaluated, {config.min_gate_examples} needed; raise "
               "trainer.eval.max_examples (with enough held-out commits) or lower trainer.publish.min_gate_examples")
        return GateResult(False, why, label, model, n, None)
    c = compare_paired(base["exact_match_line"], cand["exact_match_line"], base["edit_sim_line"],
                       cand["edit_sim_line"], level=1 - config.gate_alpha)
    passed = c.significant(config.gate_alpha) and c.exact_gain > config.min_gain
    pct, who = round(100 * c.level), label if model == label else f"{label} ({model})"
    why = (f"candidate next-line exact match {c.cand_exact:.3f} vs {who} {c.base_exact:.3f} on {n} "
           f"held-out examples: gain {c.exact_gain:+.3f} ({pct}% interval {c.exact_low:+.3f} to {c.exact_high:+.3f}), "
           f"edit similarity {c.edit_sim_gain:+.3f} ({c.edit_sim_low:+.3f} to {c.edit_sim_high:+.3f}); "
           f"{c.cand_only} right only with the candidate, {c.base_only} only with {label}, McNemar p = {c.p_value:.3g}: "
           + ("significant" if passed else f"not a significant gain (needs p < {config.gate_alpha}, an interval "
                                           f"above 0 and a gain over {config.min_gain})"))
    return GateResult(passed, why, label, model, n, c)


def _per_example(results: dict[str, dict[str, Any]], label: str) -> dict[str, list]:
    per = results[label].get("per_example") or {}
    return {"exact_match_line": list(per.get("exact_match_line", [])), "edit_sim_line": list(per.get("edit_sim_line", []))}


def record_gate(folder: Path, result: GateResult, config: PublishConfig) -> None:
    """Add the gate to the adapter's codeloop.json, atomically (a reader sees the old file or
    the new one, never half of one)."""
    meta_file = folder / "codeloop.json"
    metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    metadata["gate"] = result.to_dict(config)
    tmp = folder / ".codeloop.json.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(metadata, indent=2, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, meta_file)


def publish(api: ApiClient, name: str, folder: Path, live: str | None, results: dict[str, dict[str, Any]],
            config: PublishConfig, action: str | None = None, *, registered: bool = False,
            review: Callable[[str], dict[str, Any]] | None = None) -> Decision:
    """Record the gate in codeloop.json, register the adapter (hot-load), then promote it,
    start an A/B test, have people review it blind, or leave it.

    With action "review", `review(control)` creates a blind review of the candidate (side b)
    against `control` (side a: the live adapter, or the base model) and returns its report
    once the reviewers are done; the people's verdict decides, the gate's figures stand beside
    it in codeloop.json (exact match misses a right suggestion written differently).

    A candidate that fails the gate is not promoted; with action "promote" it is not loaded
    (or, `registered` for its evaluation, unloaded again: it would take an engine slot for
    nothing), but its folder stays in the adapter directory, so `--publish experiment` or
    POST /v1/adapters can still try it.
    """
    action = action or config.action
    result = gate(results, config, live)
    record_gate(folder, result, config)  # before registering: the server reads it then
    verdict = result.to_dict(config)
    if action == "promote" and not result.passed:
        if registered:  # it was loaded to be evaluated; it should not hold an engine slot
            api.unload(name)
        return Decision("not_published", f"not promoted: {result.reason}", gate=verdict)
    if not registered:
        api.register(name, folder)
    if action == "promote":
        api.promote(name)
        return Decision("promoted", result.reason, gate=verdict)
    if action == "review":
        return _after_review(api, name, live or BASE, review, verdict)
    if action == "experiment":
        control = live or BASE
        share = config.experiment_share
        exp = api.start_experiment(f"{name} vs {control}", {name: share, control: 1.0 - share}, control)
        return Decision("experiment", f"A/B test started against {control}; {result.reason}", exp.get("id"), gate=verdict)
    return Decision("registered", f"registered only (action 'none'); {result.reason}", gate=verdict)


class ReviewDeleted(Exception):
    """The blind review was deleted (DELETE /v1/reviews/ID) before it decided."""


def _after_review(api: ApiClient, name: str, control: str, review: Callable[[str], dict[str, Any]] | None,
                  verdict: dict) -> Decision:
    if review is None:
        raise ValueError("action 'review' needs a server and held-out lines to review")
    try:
        rep = review(control)
    except ReviewDeleted as exc:
        return Decision("registered", f"not promoted: {exc}; it stays registered", gate=verdict)
    seen = (f"blind review {rep['id']} ({rep['voted_tasks']} of {rep['shown']} tasks voted, "
            f"{rep['arms']['b']['wins']} wins for {name}, {rep['arms']['a']['wins']} for {control}, {rep['ties']} ties"
            + (f", sign test p = {rep['sign_test_p']:.3g}" if rep.get("sign_test_p") is not None else "") + ")")
    verdict = verdict | {"review": {"id": rep["id"], "verdict": rep["verdict"], "win_rate_b": rep.get("win_rate_b"),
                                    "sign_test_p": rep.get("sign_test_p")}}
    if rep["verdict"] == "b_better":
        api.promote(name)
        return Decision("promoted", f"{seen}: the reviewers found it better than {control}", review_id=rep["id"], gate=verdict)
    why = {"a_better": f"the reviewers found {control} better", "no_difference": "no significant difference",
           "too_few_votes": "too few decided tasks when the wait ended"}.get(rep["verdict"], rep["verdict"])
    return Decision("registered", f"not promoted: {seen}: {why}; it stays registered", review_id=rep["id"], gate=verdict)
