"""Git mining figures: how fast `mine_repository` reads a long history, and its peak memory.

    python bench/mine_repo.py [--commits 10000] [--files 50] [--keep DIR]

Generates a repository with `git fast-import` (seconds, not minutes): `--files` Python
modules that start with a few functions and grow by small edits, one or two files a commit:
functions added (most commits), body lines changed, functions removed to keep files
bounded, imports added; a few commits by a bot. Then mines it once and prints commits,
examples, seconds, commits/s and peak RSS (this process; git's separately). No targets are
asserted: these are figures.
"""
from __future__ import annotations

import argparse
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.config import MiningConfig  # noqa: E402
from trainer.mining import mine_repository  # noqa: E402

VERBS = ["load", "parse", "render", "merge", "filter", "count", "resolve", "build", "check", "update"]
NOUNS = ["user", "order", "invoice", "token", "record", "entry", "config", "path", "event", "batch"]
ATTRS = ["size", "total", "weight", "score", "age", "level", "price", "count"]
AUTHORS = [("Ada Lovelace", "ada@example.com"), ("Alan Turing", "alan@example.com"),
           ("Grace Hopper", "grace@example.com"), ("Edsger Dijkstra", "edsger@example.com")]
BOT = ("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com")
MAX_FUNCTIONS = 30  # per file: beyond this, commits remove functions too


@dataclass
class Module:
    """One generated Python file: imports, then functions (each a list of lines)."""

    path: str
    imports: list[str] = field(default_factory=lambda: ["import logging", "import os"])
    functions: list[list[str]] = field(default_factory=list)

    def render(self) -> bytes:
        head = f'"""{Path(self.path).stem}: generated for the mining benchmark."""\n'
        body = "\n\n".join("\n".join(f) + "\n" for f in self.functions)
        return (head + "\n".join(self.imports) + "\n\nlog = logging.getLogger(__name__)\n\n\n" + body).encode()


def new_function(rng: random.Random, serial: int) -> list[str]:
    verb, noun, attr = rng.choice(VERBS), rng.choice(NOUNS), rng.choice(ATTRS)
    limit, factor = rng.randint(1, 500), rng.randint(2, 9)
    lines = [f"def {verb}_{noun}_{serial}(items, limit={limit}):",
             f'    """{verb.capitalize()} each {noun} whose {attr} passes {limit}."""',
             "    result = []",
             "    for item in items:",
             f"        if item.{attr} > limit:",
             f"            result.append(item.{attr} * {factor})"]
    for _ in range(rng.randint(0, 4)):
        lines.append(rng.choice([f"    log.debug('{noun} %s', len(result))",
                                 f"    result.sort(key=lambda x: x % {factor})",
                                 f"    result = [x for x in result if x != {rng.randint(0, 99)}]"]))
    lines.append("    return result")
    return lines


def edit_function(rng: random.Random, function: list[str]) -> None:
    """Add a body line or change a constant (a small edit, like most real commits)."""
    roll = rng.random()
    if roll < 0.5:
        function.insert(len(function) - 1, f"    result = result[:{rng.randint(5, 500)}]  # tuned")
    elif roll < 0.8:
        function[0] = re.sub(r"limit=\d+", f"limit={rng.randint(1, 500)}", function[0])
    else:
        function[5] = re.sub(r"\* \d+", f"* {rng.randint(2, 9)}", function[5])


def fast_import_stream(commits: int, files: int, seed: int):
    """Yield the fast-import stream, piece by piece, for `commits` commits."""
    rng = random.Random(seed)
    modules = [Module(f"app/pkg{i % 5}/mod_{i:02d}.py") for i in range(files)]
    serial = 0
    mark = 0
    for number in range(commits):
        if number == 0:
            changed = modules
            for module in modules:
                for _ in range(3):
                    serial += 1
                    module.functions.append(new_function(rng, serial))
        else:
            changed = rng.sample(modules, 2 if rng.random() < 0.2 else 1)
            for module in changed:
                roll = rng.random()
                if len(module.functions) > MAX_FUNCTIONS or (roll < 0.08 and len(module.functions) > 3):
                    module.functions.pop(rng.randrange(len(module.functions)))
                elif roll < 0.55:
                    serial += 1
                    module.functions.insert(rng.randint(0, len(module.functions)), new_function(rng, serial))
                elif roll < 0.95 and module.functions:
                    edit_function(rng, rng.choice(module.functions))
                else:
                    module.imports.append(f"import {rng.choice(NOUNS)}_{serial}_helpers")
        blobs = []
        for module in changed:
            mark += 1
            data = module.render()
            yield b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data)
            blobs.append((mark, module.path))
        name, email = BOT if rng.random() < 0.02 else rng.choice(AUTHORS)
        when = 1_600_000_000 + number * 600
        message = f"change {number}".encode()
        yield (f"commit refs/heads/main\nauthor {name} <{email}> {when} +0000\n"
               f"committer {name} <{email}> {when} +0000\n").encode()
        yield b"data %d\n%s\n" % (len(message), message)
        yield b"".join(b"M 100644 :%d %s\n" % (m, p.encode()) for m, p in blobs) + b"\n"


def generate(repo: Path, commits: int, files: int, seed: int = 7) -> float:
    """Create the repository at `repo`; returns the seconds it took."""
    start = time.perf_counter()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    importer = subprocess.Popen(["git", "-C", str(repo), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    for piece in fast_import_stream(commits, files, seed):
        importer.stdin.write(piece)
    importer.stdin.close()
    if importer.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="create the repository here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="codeloop-mine-bench-") as tmp:
        repo = args.keep or Path(tmp) / "repo"
        if args.keep and repo.exists() and any(repo.iterdir()):
            raise SystemExit(f"{repo} exists and is not empty")
        seconds = generate(repo, args.commits, args.files)
        print(f"generated {args.commits} commits, {args.files} files in {seconds:.1f} s" + (f": {repo}" if args.keep else ""))
        start = time.perf_counter()
        examples, report = mine_repository(repo, MiningConfig(), progress=False)
        elapsed = time.perf_counter() - start
    kinds: dict[str, int] = {}
    for example in examples:
        kinds[example.kind] = kinds.get(example.kind, 0) + 1
    print(f"commits:     {report.commits}")
    print(f"examples:    {len(examples)} {kinds}")
    print(f"dropped:     {dict(sorted(report.dropped.items()))}")
    print(f"seconds:     {elapsed:.1f}")
    print(f"commits/s:   {report.commits / elapsed:.0f}")
    print(f"peak RSS:    {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (python); "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB (largest git child, fast-import included)")


if __name__ == "__main__":
    main()
