"""Turn a repository's git history into training examples.

One streaming `git log -p --unified=0` pass over the non-merge commits reachable from HEAD,
oldest first, gives each commit's added line ranges and new blob ids; one long-running
`git cat-file --batch` fetches those blobs. For each commit not made by a bot, and each
changed source file that passes trainer/filters.py:

* every added hunk becomes fill-in-the-middle examples (kind "fim"): the middle is the added
  lines, at most `max_middle_lines` a piece, between the file before and after it as of that
  commit;
* in Python, every function the commit added or changed becomes a "function" example: the
  signature and docstring (with the file above them) as prefix, the body as middle.

Files are scrubbed of secrets (feedback/secrets.py) before anything is cut out of them, so no
example ever holds an unscrubbed secret. Then repeats are removed (trainer/dedupe.py).
"""
from __future__ import annotations

import codecs
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from trainer import filters
from trainer.config import SOURCE_EXTENSIONS, MiningConfig
from trainer.dedupe import dedupe
from trainer.examples import Example, MiningReport
from trainer.python_functions import Ranges, touched_functions
from trainer.repo_context import ParentContext
from feedback.secrets import scrub

__all__ = ["MiningError", "mine_repositories", "mine_repository"]

MAX_FUNCTION_BODY_LINES = 40  # longer bodies are too long a middle to learn from
MIN_FUNCTION_BODY_CHARS = 20  # `return self._x` teaches nothing
_COMMIT_MARK = b"\x01"
_HUNK = re.compile(rb"@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class MiningError(Exception):
    """The repository cannot be mined (not a repository, no commits, git missing or failing)."""


@dataclass
class _FileChange:
    path: str
    blob: str = ""  # the file's new blob id; "" when deleted
    mode: str = "100644"  # 120000: a symbolic link, 160000: a submodule
    binary: bool = False
    added: Ranges = field(default_factory=list)


@dataclass
class _Commit:
    sha: str
    time: float
    author: str
    email: str
    files: list[_FileChange] = field(default_factory=list)


def mine_repository(
    path: str | Path, config: MiningConfig, *, name: str | None = None, progress: bool = True
) -> tuple[list[Example], MiningReport]:
    """Mine one repository; `name` (default: its folder name) is each example's `source`.

    report.commits counts the commits read (bot commits included, also counted under
    dropped["bot_commit"]); files_seen and the file reasons in `dropped` count file changes
    (a file changed in 10 commits counts 10); secrets_scrubbed counts secrets in the mined
    file versions.
    """
    examples, report = _mine(Path(path), config, name or _default_name(path), progress)
    return _deduplicated(examples, report, config)


def mine_repositories(
    paths: Sequence[str | Path], config: MiningConfig, progress: bool = True
) -> tuple[list[Example], MiningReport]:
    """Mine several repositories into one deduplicated list (forks repeat each other)."""
    examples: list[Example] = []
    report = MiningReport()
    for path in paths:
        name = base = _default_name(path)
        suffix = 2
        while name in report.ranges:  # two checkouts with the same folder name
            name, suffix = f"{base}-{suffix}", suffix + 1
        mined, mined_report = _mine(Path(path), config, name, progress)
        examples += mined
        report.merge(mined_report)
    return _deduplicated(examples, report, config)


def _default_name(path: str | Path) -> str:
    return Path(path).expanduser().resolve().name


def _deduplicated(examples: list[Example], report: MiningReport, config: MiningConfig) -> tuple[list[Example], MiningReport]:
    kept, exact, near = dedupe(examples, config.near_duplicate_threshold)
    report.dropped["exact_duplicate"] += exact
    report.dropped["near_duplicate"] += near
    report.examples = len(kept)
    return kept, report


# --- one repository ------------------------------------------------------------------------
def _mine(path: Path, config: MiningConfig, name: str, progress: bool) -> tuple[list[Example], MiningReport]:
    _check_repository(path)
    report = MiningReport()
    examples: list[Example] = []
    limit = ["-n", str(config.max_commits)] if config.max_commits else []
    counted = subprocess.run(["git", "-C", str(path), "rev-list", "--count", "--no-merges", *limit, "HEAD"],
                             capture_output=True, text=True)
    total = int(counted.stdout.strip() or 0)  # only for the progress bar
    first = last = None
    with _BlobReader(path) as blobs, tqdm(total=total, unit="commit", desc=name, file=sys.stderr, disable=not progress) as bar:
        for commit in _commits(path, limit):
            first = first or commit
            last = commit
            report.commits += 1
            examples += _mine_commit(commit, config, name, blobs, report, path)
            bar.update(1)
    if first and last:
        report.ranges[name] = {
            "path": str(path.expanduser().resolve()), "first": first.sha, "last": last.sha,
            "commits": report.commits, "first_time": first.time, "last_time": last.time,
        }
    return examples, report


def _check_repository(path: Path) -> None:
    if shutil.which("git") is None:
        raise MiningError("git is not installed (or not on PATH): it is needed to mine repositories")
    if not path.is_dir():
        raise MiningError(f"{path} is not a git repository (no such folder)")
    probe = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-prefix"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise MiningError(f"{path} is not a git repository (git: {probe.stderr.strip() or 'rev-parse failed'})")
    if inside := probe.stdout.strip():  # a folder of some other repository (a dotfiles home?)
        top = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
        raise MiningError(f"{path} is not a git repository: it is the folder {inside} of the repository "
                          f"{top.stdout.strip()}; pass that repository's path")
    head = subprocess.run(["git", "-C", str(path), "rev-parse", "--verify", "-q", "HEAD^{commit}"], capture_output=True)
    if head.returncode != 0:
        raise MiningError(f"{path} is an empty git repository (no commits yet): nothing to mine")


def _mine_commit(commit: _Commit, config: MiningConfig, name: str, blobs: "_BlobReader", report: MiningReport,
                 repo: Path) -> list[Example]:
    if reason := filters.bot_commit(commit.author, commit.email, config.bot_authors):
        report.dropped[reason] += 1
        return []
    examples: list[Example] = []
    context = ParentContext(repo, blobs, commit.sha, [c.path for c in commit.files if c.blob],
                            clean=lambda text: scrub(text, keep_lines=True)[0])
    for change in commit.files:
        if not change.blob or not (change.added or change.binary):
            continue  # deleted, or nothing added (pure deletion, mode change, plain rename)
        report.files_seen += 1
        reason = (
            ("not_a_file" if change.mode in ("120000", "160000") else None)  # a symbolic link, a submodule
            or filters.path_drop_reason(change.path, config) or ("binary" if change.binary else None)
        )
        data = None if reason else blobs.read(change.blob)
        if not reason and data is None:
            reason = "unreadable"  # a submodule, or a blob missing from a shallow clone
        if reason or (reason := filters.content_drop_reason(change.path, data, config)):
            report.dropped[reason] += 1
            continue
        original = data.decode("utf-8")
        text, found = scrub(original, keep_lines=True)  # same lines as `original`
        report.secrets_scrubbed.update(found)
        source = _SourceFile(text, change.path, commit, name, config, report)
        mined = source.fim_examples(change.added)
        if config.functions and change.path.endswith(".py"):
            mined += source.function_examples(original, change.added)
        if config.context_chars > 0:
            mined = [_with_context(e, context, text, config) for e in mined]
        examples += mined
    return examples


def _with_context(example: Example, context: ParentContext, text: str, config: MiningConfig) -> Example:
    """The example with the snippets an editor would have sent at its cursor (imports are
    read from the whole file: for training, an import the commit adds below the cursor is no leak)."""
    found = context.snippets(example.path, text, example.prefix, budget_chars=config.context_chars,
                             max_snippets=config.context_snippets)
    return replace(example, context=Example.context_json(found))


# --- cutting examples out of one file version ----------------------------------------------
class _SourceFile:
    """One scrubbed file as of one commit, addressed by 1-based line numbers."""

    def __init__(self, text: str, path: str, commit: _Commit, name: str, config: MiningConfig, report: MiningReport):
        self.text, self.path, self.commit, self.name = text, path, commit, name
        self.config, self.report = config, report
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.language = SOURCE_EXTENSIONS.get(PurePosixPath(path).suffix.lower(), "")

    def offset(self, line: int) -> int:
        """Where 1-based `line` starts (the text's end past the last line)."""
        return self.line_starts[line - 1] if 0 < line <= len(self.line_starts) else len(self.text)

    def fim_examples(self, added: Ranges) -> list[Example]:
        step = self.config.max_middle_lines
        pieces = [(start, min(first + count, start + step))  # lines [start, end)
                  for first, count in added for start in range(first, first + count, step)]
        return [e for start, end in pieces if (e := self.example(self.offset(start), self.offset(end), "fim"))]

    def function_examples(self, original: str, added: Ranges) -> list[Example]:
        """Functions the commit touched; `original` is the unscrubbed text, for `ast` only."""
        functions = touched_functions(original, added)
        if functions is None:
            self.report.dropped["unparsable"] += 1
            return []
        out = []
        for def_line, body_start, last in functions:
            if body_start is None:
                continue  # a one-liner or only a docstring
            if last - body_start + 1 > MAX_FUNCTION_BODY_LINES:
                self.report.dropped["function_too_long"] += 1
                continue
            out.append(self.example(self.offset(body_start), self.offset(last + 1), "function",
                                    keep_from=self.offset(def_line), min_chars=MIN_FUNCTION_BODY_CHARS))
        return [e for e in out if e]

    def example(self, start: int, end: int, kind: str, keep_from: int | None = None, min_chars: int = 0) -> Example | None:
        """text[start:end] as the middle; the prefix reaches back to `keep_from` at least."""
        middle = self.text[start:end]
        if len(middle.strip()) < max(self.config.min_middle_chars, min_chars):
            self.report.dropped["tiny_hunk" if kind == "fim" else "function_trivial"] += 1
            return None
        prefix_from = min(_line_cut_back(self.text, start, self.config.prefix_chars), start if keep_from is None else keep_from)
        return Example(
            prefix=self.text[prefix_from:start], middle=middle,
            suffix=self.text[end : _line_cut_forward(self.text, end, self.config.suffix_chars)],
            kind=kind, source=self.name, path=self.path, commit=self.commit.sha,
            time=self.commit.time, language=self.language,
        )


def _line_cut_back(text: str, at: int, limit: int) -> int:
    """Where a prefix of at most `limit` chars ending at `at` starts, at a line start."""
    start = max(0, at - limit)
    if start > 0 and text[start - 1] != "\n":
        newline = text.find("\n", start, at)
        start = at if newline < 0 else newline + 1
    return start


def _line_cut_forward(text: str, at: int, limit: int) -> int:
    """Where a suffix of at most `limit` chars starting at `at` ends, at a line end."""
    end = min(len(text), at + limit)
    if end < len(text) and text[end - 1] != "\n":
        newline = text.rfind("\n", at, end)
        end = at if newline < 0 else newline + 1
    return end


# --- git plumbing --------------------------------------------------------------------------
def _commits(path: Path, limit: list[str]) -> Iterator[_Commit]:
    """Stream the non-merge commits from HEAD, oldest first, with what each added where."""
    command = [
        "git", "-C", str(path), "-c", "core.quotePath=false", "-c", "diff.relative=false",
        "log", "HEAD", "--no-merges", "--reverse", *limit,
        "--format=%x01%H%x00%ct%x00%an%x00%ae", "-p", "--unified=0", "--full-index", "-M",
        "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/",
        "--no-show-signature", "--no-notes",
    ]
    # stderr to a file: a pipe nobody reads while stdout is streamed could fill up and block git.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, bufsize=1 << 20)
        try:
            yield from _parse_log(process.stdout)
        finally:
            process.stdout.close()
            status = process.wait()
        if status != 0:
            errors.seek(0)
            raise MiningError(f"git log failed in {path}: {errors.read().decode('utf-8', 'replace').strip()}")


def _parse_log(lines) -> Iterator[_Commit]:
    commit: _Commit | None = None
    change: _FileChange | None = None
    hunk_lines = 0  # lines of the current hunk still to skip (their text is read from the blob)
    for line in lines:
        if hunk_lines and line[:1] in (b"+", b"-"):
            hunk_lines -= 1
        elif line.startswith(_COMMIT_MARK):
            if commit:
                yield commit
            sha, time, author, email = line[1:].rstrip(b"\n").decode("utf-8", "replace").split("\0")
            commit, change, hunk_lines = _Commit(sha, float(time), author, email), None, 0
        elif line.startswith(b"diff --git ") and commit:
            change = _FileChange(_header_path(line[11:].rstrip(b"\n")))
            commit.files.append(change)
            hunk_lines = 0
        elif change is None:
            continue
        elif line.startswith(b"@@ "):
            match = _HUNK.match(line)
            if match:
                old = int(match.group(1)) if match.group(1) is not None else 1  # ",count" absent: 1
                new = int(match.group(3)) if match.group(3) is not None else 1
                hunk_lines = old + new
                if new:
                    change.added.append((int(match.group(2)), new))
        elif line.startswith(b"index "):
            fields = line[6:].split()
            blobs = fields[0].split(b"..")
            change.blob = blobs[1].decode() if len(blobs) == 2 and blobs[1].strip(b"0") else ""
            if len(fields) > 1:
                change.mode = fields[1].decode()
        elif line.startswith((b"new file mode ", b"new mode ")):
            change.mode = line.rsplit(b" ", 1)[1].strip().decode()
        elif line.startswith(b"+++ "):
            target = line[4:].rstrip(b"\n").rstrip(b"\t")
            if target != b"/dev/null":
                change.path = _unquote(target).removeprefix("b/")
        elif line.startswith(b"rename to "):
            change.path = _unquote(line[10:].rstrip(b"\n"))
        elif line.startswith(b"Binary files "):
            change.binary = True
    if commit:
        yield commit


def _unquote(raw: bytes) -> str:
    """A path as git prints it: C-quoted when it holds special characters."""
    if raw.startswith(b'"') and raw.endswith(b'"'):
        raw = codecs.escape_decode(raw[1:-1])[0]
    return raw.decode("utf-8", "replace")


def _header_path(rest: bytes) -> str:
    """The new path from `a/P b/P`; good enough until a `+++` or `rename to` line says better."""
    if rest.startswith(b'"'):
        return _unquote(rest[rest.rfind(b' "b/') + 1 :]).removeprefix("b/")
    return _unquote(rest[(len(rest) - 1) // 2 + 1 :]).removeprefix("b/")


class _BlobReader:
    """`git cat-file --batch`, kept running: one blob per request, no process per file."""

    def __init__(self, path: Path):
        self.process = subprocess.Popen(
            ["git", "-C", str(path), "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def read(self, blob: str) -> bytes | None:
        self.process.stdin.write(blob.encode() + b"\n")
        self.process.stdin.flush()
        header = self.process.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            if len(header) == 3:  # another object type (a submodule's commit): skip its body
                self.process.stdout.read(int(header[2]) + 1)
            return None
        data = self.process.stdout.read(int(header[2]))
        self.process.stdout.read(1)  # the newline after the contents
        return data

    def __enter__(self) -> "_BlobReader":
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()
        self.process.stdout.close()
        self.process.wait()
