"""Publishing a trained adapter: the folder into the adapter directory, then (over HTTP)
registered, and promoted or A/B-tested against the live adapter, as configured.

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
from typing import Any

from trainer.config import PublishConfig
from trainer.server_api import ServerApi

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class Decision:
    action: str  # what was done: "promoted", "experiment", "registered", "not_published"
    reason: str
    experiment_id: str | None = None


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


def beats_live(results: dict[str, dict[str, float]], config: PublishConfig) -> tuple[bool, str]:
    """Does the candidate's held-out exact match (next line) beat the live model's?"""
    live_label = "live" if "live" in results else "base"
    cand, live = results["candidate"]["exact_match_line"], results[live_label]["exact_match_line"]
    ok = cand > live + config.min_gain
    verdict = "beats" if ok else "does not beat"
    return ok, f"candidate exact match {cand:.3f} {verdict} {live_label} {live:.3f} (min gain {config.min_gain})"


def publish(api: ServerApi, name: str, folder: Path, live: str | None, results: dict[str, dict[str, float]],
            config: PublishConfig, action: str | None = None) -> Decision:
    """Register the adapter (hot-load), then promote it, start an A/B test, or leave it.

    A candidate that does not beat the live adapter is not promoted; with action "promote" it
    is not even loaded (it would take an engine slot for nothing), but its folder stays in the
    adapter directory, so `--publish experiment` or POST /v1/adapters can still try it.
    """
    action = action or config.action
    better, why = beats_live(results, config)
    if action == "promote" and not better:
        return Decision("not_published", f"not promoted: {why}")
    api.register(name, folder)
    if action == "promote":
        api.promote(name)
        return Decision("promoted", why)
    if action == "experiment":
        control = live or "base"
        share = config.experiment_share
        exp = api.start_experiment(f"{name} vs {control}", {name: share, control: 1.0 - share}, control)
        return Decision("experiment", f"A/B test started against {control}; {why}", exp.get("id"))
    return Decision("registered", f"registered only (action 'none'); {why}")
