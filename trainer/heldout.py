"""Held-out lines: what `codeloop eval` and the trainer's gate ask a model to write.

Each is one line added by a commit after a date, with the cursor where an editor puts it on
a new line: after the auto-indent. The prefix is the file (as of that commit) before the
line plus its indentation, the suffix the rest of the file after it; the answer is the line
without its indentation. Blank and comment-only lines are skipped (nobody waits for a
suggestion to write them), and a fixed seed picks at most a few lines per file per commit,
so one big commit does not decide the score.
"""
from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath

from codeloop.snippets import Snippet

from trainer import filters
from trainer.config import SOURCE_EXTENSIONS, MiningConfig
from trainer.dataset import parse_date
from trainer.mining import MiningError, _BlobReader, _check_repository, _commits
from trainer.repo_context import CONTEXT_CHARS, CONTEXT_SNIPPETS, ParentContext

# What an editor sends around the cursor (the language server's prefixChars/suffixChars).
EDITOR_PREFIX_CHARS = 6000
EDITOR_SUFFIX_CHARS = 2000
_COMMENT = re.compile(r"^(#|//|/\*|\*|--|;|<!--|\"\"\"|''')")
_MIN_LINE_CHARS = 3


@dataclass(frozen=True)
class HeldOutLine:
    repo: str
    commit: str
    time: float  # the commit's unix time
    path: str
    line: int  # 1-based line number in the file as of the commit
    language: str
    prefix: str  # up to the cursor: the file before the line, then the line's indentation
    suffix: str  # the file from the next line on
    expected: str  # the line after its indentation, without trailing blanks
    # Repository context as the language server would send it (codeloop/snippets.py), from
    # the repository at the parent commit: the files this one imports and the files changed
    # with it stand in for the editor's open tabs.
    snippets: tuple[Snippet, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def held_out_lines(repo: Path, since: str, *, n: int = 200, per_file: int = 2, seed: int = 0,
                   config: MiningConfig | None = None, context_chars: int = CONTEXT_CHARS,
                   context_snippets: int = CONTEXT_SNIPPETS) -> list[HeldOutLine]:
    """At most `n` lines added after `since` (commit time), oldest commit first, each with
    its snippets (at most `context_snippets` in `context_chars`; 0: none).

    Raises MiningError for a path that is not a repository and ValueError for a bad date or a
    date after which nothing usable was added.
    """
    config = config or MiningConfig()
    repo = Path(repo)
    _check_repository(repo)
    cut = parse_date(since)
    picked: list[HeldOutLine] = []
    commits = 0
    with _BlobReader(repo) as blobs:
        for commit in _commits(repo, [f"--since=@{int(cut)}"]):
            if commit.time < cut or filters.bot_commit(commit.author, commit.email, config.bot_authors):
                continue
            commits += 1
            new_lines: list[tuple[int, str]] = []  # this commit's lines: index into picked, file text
            for change in commit.files:
                if not change.blob or not change.added or change.binary or change.mode in ("120000", "160000"):
                    continue
                if filters.path_drop_reason(change.path, config):
                    continue
                data = blobs.read(change.blob)
                if data is None or filters.content_drop_reason(change.path, data, config):
                    continue
                text = data.decode("utf-8")
                rng = random.Random(f"{seed}:{commit.sha}:{change.path}")
                candidates = _candidates(text, change.added)
                for line_no in sorted(rng.sample(candidates, min(per_file, len(candidates)))):
                    picked.append(_cut(text, line_no, repo.resolve().name, commit, change.path))
                    new_lines.append((len(picked) - 1, text))
            if new_lines and context_chars > 0:
                context = ParentContext(repo, blobs, commit.sha, [c.path for c in commit.files if c.blob])
                for i, text in new_lines:
                    line = picked[i]
                    before = "\n".join(text.split("\n")[: line.line - 1])
                    found = context.snippets(line.path, before, line.prefix, budget_chars=context_chars,
                                             max_snippets=context_snippets)
                    picked[i] = replace(line, snippets=tuple(found))
    if not picked:
        raise ValueError(f"no added source lines in {repo} after {since} ({commits} commits since then); "
                         "pick an earlier date")
    if len(picked) > n:
        keep = set(random.Random(seed).sample(range(len(picked)), n))
        picked = [h for i, h in enumerate(picked) if i in keep]
    return picked


def _candidates(text: str, added: list[tuple[int, int]]) -> list[int]:
    lines = text.split("\n")
    out = []
    for first, count in added:
        for number in range(first, first + count):
            body = lines[number - 1].strip() if number <= len(lines) else ""
            if len(body) >= _MIN_LINE_CHARS and not _COMMENT.match(body):
                out.append(number)
    return out


def _cut(text: str, line_no: int, repo: str, commit, path: str) -> HeldOutLine:
    lines = text.split("\n")
    before = "\n".join(lines[: line_no - 1]) + ("\n" if line_no > 1 else "")
    line = lines[line_no - 1]
    indent = line[: len(line) - len(line.lstrip())]
    after = "\n".join(lines[line_no:])
    prefix = before + indent
    if len(prefix) > EDITOR_PREFIX_CHARS:  # as the language server cuts it: from a line start
        start = prefix.find("\n", len(prefix) - EDITOR_PREFIX_CHARS) + 1
        prefix = prefix[start:] if 0 < start < len(prefix) - len(indent) else prefix[-EDITOR_PREFIX_CHARS:]
    suffix = "\n" + after[:EDITOR_SUFFIX_CHARS] if after else ""
    return HeldOutLine(repo, commit.sha, commit.time, path, line_no,
                       SOURCE_EXTENSIONS.get(PurePosixPath(path).suffix.lower(), ""),
                       prefix, suffix, line.strip())


__all__ = ["HeldOutLine", "MiningError", "held_out_lines"]
