"""The unit of training data: one fill-in-the-middle example, wherever it came from.

Git mining (trainer/mining.py) and telemetry (trainer/telemetry_data.py) both produce these;
trainer/dataset.py turns them into a `datasets.Dataset` split by time.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from codeloop.snippets import Snippet

Kind = Literal["fim", "function", "file", "accepted", "rejected"]


@dataclass(frozen=True)
class Example:
    """Complete `middle` between `prefix` and `suffix` (text already scrubbed of secrets).

    `time` (unix seconds) is the commit's time, or the suggestion's creation time; the
    hold-out split is by `time`. `weight` scales the example's loss (telemetry: retention).
    """

    prefix: str
    suffix: str
    middle: str
    kind: Kind
    source: str  # repository name, or "telemetry"
    path: str  # file path inside the repository
    commit: str  # commit sha; the completion id for telemetry
    time: float
    language: str = ""
    weight: float = 1.0
    # Telemetry: the pseudonym of who accepted or rejected it, so that `codeloop forget`
    # finds it in a run's saved dataset (feedback/copies.py); "" for mined code.
    user: str = ""
    # Repository context as the language server sends it (codeloop/snippets.py): a JSON list
    # of {filepath, text}, so that an adapter learns from the prompts it will be served.
    context: str = ""

    def to_row(self) -> dict:
        return asdict(self)

    def snippets(self) -> list[Snippet]:
        return [Snippet(s["filepath"], s["text"]) for s in json.loads(self.context)] if self.context else []

    @staticmethod
    def context_json(snippets: Sequence[Snippet]) -> str:
        return json.dumps([s.to_dict() for s in snippets]) if snippets else ""


@dataclass
class MiningReport:
    """What mining kept and dropped, by reason: printed and stored in codeloop.json."""

    commits: int = 0
    files_seen: int = 0
    examples: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count (files, hunks or commits)
    secrets_scrubbed: Counter = field(default_factory=Counter)  # kind of secret -> count
    # repository name -> {"path", "first", "last", "commits"}: the commit range mined.
    ranges: dict = field(default_factory=dict)

    def merge(self, other: "MiningReport") -> None:
        self.commits += other.commits
        self.files_seen += other.files_seen
        self.examples += other.examples
        self.dropped.update(other.dropped)
        self.secrets_scrubbed.update(other.secrets_scrubbed)
        self.ranges.update(other.ranges)

    def to_dict(self) -> dict:
        return {
            "commits": self.commits,
            "files_seen": self.files_seen,
            "examples": self.examples,
            "dropped": dict(sorted(self.dropped.items())),
            "secrets_scrubbed": dict(sorted(self.secrets_scrubbed.items())),
            "ranges": self.ranges,
        }
