"""The repository as it stands at the cut, as windows of code to learn from.

History's added hunks show what changed; most lines written later use names that already
exist in the files, so the trainer also reads the files themselves, as of the last commit
before the hold-out cut (never after it: those commits are the evaluation). Each file is cut
into windows of whole lines; a window is an example with an empty prefix, so training learns
every token of it (next-token loss over the whole window, the format a prefix-only model
already knows). Files changed in the newest commits before the cut are read twice (the second
time with windows shifted by half), because later work tends to continue there.
"""
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path, PurePosixPath

from feedback.secrets import scrub
from trainer import filters
from trainer.config import SOURCE_EXTENSIONS, MiningConfig
from trainer.examples import Example
from trainer.mining import _BlobReader


def commit_before(repo: Path, cut: float) -> str | None:
    """The newest commit reachable from HEAD committed before `cut` (unix time)."""
    out = subprocess.run(["git", "-C", str(repo), "rev-list", "-1", f"--before=@{int(cut) - 1}", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def snapshot_examples(repo: Path, cut: float, config: MiningConfig, *, name: str, window_chars: int,
                      recent_commits: int) -> tuple[list[Example], Counter]:
    """Windows of every source file at the last commit before `cut`; (examples, counts)."""
    counts: Counter = Counter()
    commit = commit_before(repo, cut)
    if commit is None:
        counts["no_commit_before_cut"] += 1
        return [], counts
    when = float(subprocess.run(["git", "-C", str(repo), "show", "-s", "--format=%ct", commit],
                                capture_output=True, text=True).stdout.strip() or 0)
    recent = _recently_changed(repo, commit, recent_commits)
    examples: list[Example] = []
    with _BlobReader(repo) as blobs:
        for mode, blob, path in _tree(repo, commit):
            if mode in ("120000", "160000") or filters.path_drop_reason(path, config):
                continue
            data = blobs.read(blob)
            if data is None or filters.content_drop_reason(path, data, config):
                counts["file_dropped"] += 1
                continue
            text, _ = scrub(data.decode("utf-8"), keep_lines=True)
            language = SOURCE_EXTENSIONS.get(PurePosixPath(path).suffix.lower(), "")
            offsets = [0, window_chars // 2] if path in recent else [0]
            for shift in offsets:
                for window in windows(text, window_chars, shift):
                    examples.append(Example(prefix="", suffix="", middle=window, kind="file", source=name, path=path,
                                            commit=commit, time=when, language=language))
            counts["files"] += 1
            counts["recent_files"] += path in recent
    counts["windows"] = len(examples)
    return examples, counts


def windows(text: str, size: int, shift: int = 0) -> list[str]:
    """`text` in pieces of whole lines of about `size` characters (the first `shift` long)."""
    out, current, length = [], [], 0
    limit = shift or size
    for line in text.splitlines(keepends=True):
        if current and length + len(line) > limit:
            out.append("".join(current))
            current, length, limit = [], 0, size
        current.append(line[: size])  # a very long line is cut rather than dropped
        length += len(current[-1])
    if current:
        out.append("".join(current))
    return [w for w in out if w.strip()]


def _tree(repo: Path, commit: str) -> list[tuple[str, str, str]]:
    out = subprocess.run(["git", "-C", str(repo), "-c", "core.quotePath=false", "ls-tree", "-r", "-z", commit],
                         capture_output=True, check=True).stdout.decode("utf-8", "replace")
    entries = []
    for entry in filter(None, out.split("\0")):
        meta, path = entry.split("\t", 1)
        mode, kind, blob = meta.split()
        if kind == "blob":
            entries.append((mode, blob, path))
    return entries


def _recently_changed(repo: Path, commit: str, n: int) -> set[str]:
    if n <= 0:
        return set()
    out = subprocess.run(["git", "-C", str(repo), "-c", "core.quotePath=false", "log", "-n", str(n), "--no-merges",
                          "--name-only", "--format=", commit], capture_output=True, text=True)
    return {line for line in out.stdout.splitlines() if line}
