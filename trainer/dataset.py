"""Examples -> a `datasets.DatasetDict` {train, eval, negatives}, split by time, saved with the run.

The newest commits are held out for evaluation and never trained on: a share of them
(`holdout_fraction`) or every commit from `holdout_since` on. Accepted suggestions from
telemetry are split by the same time: those made before the cut train, later ones are
dropped (the held-out commits' code may be in them, so training on them would leak the
evaluation). Rejected ones are kept apart as negatives (for preference training later;
nothing trains on them now).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from trainer.config import DataConfig
from trainer.examples import Example

COLUMNS = ("prefix", "suffix", "middle", "kind", "source", "path", "commit", "time", "language", "weight", "user", "context")


class TooLittleData(Exception):
    """Not enough examples to train or evaluate; the message says how many and what to do."""


@dataclass
class SplitData:
    train: list[Example]
    eval: list[Example]
    negatives: list[Example]
    holdout_from: float  # unix time: commits (and suggestions) at or after it are held out
    data_hash: str
    telemetry_held_out: int = 0  # accepted suggestions made at or after holdout_from: not trained on

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "eval": len(self.eval), "negatives": len(self.negatives),
                "telemetry_held_out": self.telemetry_held_out}


def holdout_cut(examples: Sequence[Example], config: DataConfig) -> float:
    """Unix time from which commits are held out: `holdout_since`, or the newest
    `holdout_fraction` of the mined commits (inf: nothing held out)."""
    if config.holdout_since:
        try:
            return parse_date(config.holdout_since)
        except ValueError as exc:
            raise ValueError(f"trainer.data.holdout_since: {exc}") from None
    commit_times = sorted({(e.time, e.source, e.commit) for e in examples if e.kind in ("fim", "function")})
    if not commit_times:
        return math.inf
    held = max(1, math.ceil(len(commit_times) * config.holdout_fraction))
    return commit_times[-held][0] if held < len(commit_times) else math.inf


def split_by_time(examples: Sequence[Example], config: DataConfig) -> SplitData:
    """Hold out the newest commits; raise TooLittleData when either side is too small.

    Snapshot windows (kind "file", trainer/snapshot.py) are read at the cut, so they train."""
    negatives = [e for e in examples if e.kind == "rejected"]
    mined = [e for e in examples if e.kind in ("fim", "function")]
    files = [e for e in examples if e.kind == "file"]
    accepted = [e for e in examples if e.kind == "accepted"]
    commit_times = sorted({(e.time, e.source, e.commit) for e in mined})
    cut = holdout_cut(examples, config)
    train = [e for e in mined if e.time < cut] + [e for e in files if e.time < cut] + [e for e in accepted if e.time < cut]
    held_out = [e for e in mined if e.time >= cut]
    telemetry_held_out = sum(1 for e in accepted if e.time >= cut)
    if len(train) < config.min_train_examples or len(held_out) < config.min_eval_examples:
        raise TooLittleData(
            f"too little data: {len(train)} training examples (need {config.min_train_examples}) and "
            f"{len(held_out)} held-out examples (need {config.min_eval_examples}), from "
            f"{len(commit_times)} commits and {len(accepted)} accepted suggestions ({telemetry_held_out} of them "
            "made after the hold-out cut, not trained on). Add repositories "
            "(--repo), widen the mining filters, or lower trainer.data.min_train_examples / "
            "min_eval_examples (for a test only: a model trained on so little will not be better)."
        )
    return SplitData(train, held_out, negatives, cut, data_hash([*train, *held_out]), telemetry_held_out)


def data_hash(examples: Sequence[Example]) -> str:
    """sha256 over the examples in a fixed order: two runs on the same data share it."""
    digest = hashlib.sha256()
    for row in sorted(json.dumps(e.to_row(), sort_keys=True) for e in examples):
        digest.update(row.encode())
    return digest.hexdigest()


def to_dataset(split: SplitData) -> Any:
    """The split as a DatasetDict (imported here: `datasets` is slow to import)."""
    from datasets import Dataset, DatasetDict, Features, Value

    # Explicit types: an empty split (no negatives yet) must still have them.
    features = Features({c: Value("float64" if c in ("time", "weight") else "string") for c in COLUMNS})

    def table(rows: Sequence[Example]) -> Any:
        return Dataset.from_dict({c: [getattr(e, c) for e in rows] for c in COLUMNS}, features=features)

    return DatasetDict({"train": table(split.train), "eval": table(split.eval), "negatives": table(split.negatives)})


def save_dataset(split: SplitData, folder: Path) -> Path:
    dataset = to_dataset(split)
    # One shard each, also for an empty split (datasets writes none for it otherwise, and then
    # cannot load the folder back).
    dataset.save_to_disk(str(folder), num_shards={name: 1 for name in dataset})
    return folder


def load_examples(folder: Path, name: str) -> list[Example]:
    """One split of a saved dataset, back as Examples (for resuming a run)."""
    from datasets import load_from_disk

    rows = load_from_disk(str(folder))[name]
    return [Example(**{c: row[c] for c in COLUMNS if c in row}) for row in rows]  # "user" and "context" came later


def parse_date(value: str) -> float:
    """An ISO date (2024-01-01, or with a time) as unix seconds, UTC unless it says otherwise."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date; use an ISO date such as 2024-01-01") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
