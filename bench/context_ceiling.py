"""How many next lines could repository context give, at most? Where the held-out lines of
`codeloop eval` already stand, verbatim, before the author wrote them.

    .venv/bin/python bench/context_ceiling.py ../shared/repos/httpx.bundle --since 2024-01-01 [--n 100]

REPO is a git bundle or a repository (cloned into a temporary folder, as bench/learning.py
does). The lines are those `codeloop eval --n N` asks (same cut, seed and context). For each,
the bench looks for the expected line (stripped) among the lines of:

  - the repository at the cut (what training on the repository could recall);
  - the prompt's own prefix and suffix (what the model sees without any context);
  - the snippets `codeloop eval` sends (the files the line's file imports and the files
    changed with it, at the parent commit; the language server's budget);
  - the best-ranked windows of every source file at the parent commit (the same ranking,
    the language server's budget and a larger one): what better retrieval could find.

A line found in the snippets but not in the prefix or suffix is one that copying from context
could turn into an exact match; their count bounds what context can add to next-line exact
match by copying. Beyond copying, context can give a new line the names it uses: the second
table counts the lines that use a name the prompt does not hold, and of them those whose
every such name the snippets hold (what context could add to a model that knows the rest of
the line). No model runs: the figures are counts of text.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.learning import clone, lines_at  # noqa: E402
from codeloop.snippets import CONTEXT_CHARS, CONTEXT_SNIPPETS, Snippet, rank  # noqa: E402
from trainer.config import SOURCE_EXTENSIONS  # noqa: E402
from trainer.dataset import parse_date  # noqa: E402
from trainer.heldout import HeldOutLine, held_out_lines  # noqa: E402
from trainer.mining import _BlobReader  # noqa: E402
from trainer.repo_context import ParentContext  # noqa: E402
from trainer.snapshot import commit_before  # noqa: E402

WIDE_CHARS, WIDE_SNIPPETS = 4000, 8  # "a larger budget": ~2.7x the language server's


IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def stands_in(expected: str, texts: Iterable[str]) -> bool:
    return any(expected == line.strip() for text in texts for line in text.splitlines())


def names_in(texts: Iterable[str]) -> set[str]:
    return {name for text in texts for name in IDENTIFIER.findall(text)}


def retrieved(lines: list[HeldOutLine], repo: Path, budgets: list[tuple[int, int]]) -> list[list[list[Snippet]]]:
    """For each line, for each (chars, snippets) budget: the best windows of every source file
    (but the line's own) at the line's parent commit."""
    out: list[list[list[Snippet]]] = [[] for _ in lines]
    with _BlobReader(repo) as blobs:
        by_commit: dict[str, list[int]] = {}
        for i, line in enumerate(lines):
            by_commit.setdefault(line.commit, []).append(i)
        for sha, indices in by_commit.items():
            context = ParentContext(repo, blobs, sha, [])
            sources = [p for p in context.known_paths() if Path(p).suffix.lower() in SOURCE_EXTENSIONS]
            for i in indices:
                candidates = [w for p in sources if p != lines[i].path for w in context.file_windows(p)]
                out[i] = [rank(lines[i].prefix, candidates, budget_chars=chars, max_snippets=k) for chars, k in budgets]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--since", required=True)
    ap.add_argument("--n", type=int, default=100, help="held-out lines (codeloop eval's --n)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="codeloop-ceiling-") as tmp:
        repo = clone(args.repo.resolve(), Path(tmp) / args.repo.stem) if args.repo.suffix == ".bundle" else args.repo
        print(f"cutting held-out lines from {args.repo} after {args.since}...", file=sys.stderr)
        lines = held_out_lines(repo, args.since, n=args.n)
        cut_commit = commit_before(repo, parse_date(args.since))
        at_cut = lines_at(repo, cut_commit) if cut_commit else set()
        budgets = [(CONTEXT_CHARS, CONTEXT_SNIPPETS), (WIDE_CHARS, WIDE_SNIPPETS)]
        print(f"ranking every file's windows for {len(lines)} lines...", file=sys.stderr)
        wide = retrieved(lines, repo, budgets)
    labels = ["repository at the cut", "prefix", "suffix",
              f"codeloop eval's snippets ({CONTEXT_CHARS} chars, {CONTEXT_SNIPPETS} snippets)",
              f"every file ranked ({CONTEXT_CHARS} chars, {CONTEXT_SNIPPETS} snippets)",
              f"every file ranked ({WIDE_CHARS} chars, {WIDE_SNIPPETS} snippets)"]
    rows: dict[str, list[bool]] = {label: [] for label in labels}
    in_prompt = []
    for line, found in zip(lines, wide):
        hits = [line.expected in at_cut, stands_in(line.expected, [line.prefix]), stands_in(line.expected, [line.suffix]),
                *(stands_in(line.expected, [s.text for s in snippets]) for snippets in (line.snippets, *found))]
        for label, hit in zip(labels, hits):
            rows[label].append(hit)
        in_prompt.append(hits[1] or hits[2])
    # The names each line uses that its prompt lacks, and which snippet sets hold them all.
    supplied = dict.fromkeys(labels[3:], 0)
    needs_a_name = 0
    for line, found in zip(lines, wide):
        need = names_in([line.expected]) - names_in([line.prefix, line.suffix])
        if need:
            needs_a_name += 1
            for label, snippets in zip(supplied, (line.snippets, *found)):
                supplied[label] += not need - names_in(s.text for s in snippets)
    names = {"needs_a_name": needs_a_name, "supplied": supplied}
    table = {name: {"lines": sum(hits), "not_in_prefix_or_suffix": sum(h and not p for h, p in zip(hits, in_prompt))}
             for name, hits in rows.items()}
    if args.json:
        print(json.dumps({"repo": str(args.repo), "since": args.since, "n": len(lines), "found": table, "names": names}, indent=2))
        return
    print(f"{len(lines)} held-out lines of {args.repo.name} after {args.since}; where each stood, verbatim, before it was written:")
    print(f"{'where':<52} {'lines':>6} {'not in prefix/suffix':>21}")
    for name, counts in table.items():
        print(f"{name:<52} {counts['lines']:>6} {counts['not_in_prefix_or_suffix']:>21}")
    best = max(counts["not_in_prefix_or_suffix"] for name, counts in table.items() if "snippets" in name)
    print(f"so copying from these snippets can add at most {best} exact lines of {len(lines)} here "
          f"({100 * best / max(1, len(lines)):.0f} points).")
    print()
    print(f"{names['needs_a_name']} of {len(lines)} lines use a name the prompt does not hold; the snippets hold every such name for:")
    for name, count in names["supplied"].items():
        print(f"  {name:<50} {count:>6}")


if __name__ == "__main__":
    main()
