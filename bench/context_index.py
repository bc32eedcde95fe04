"""What repository context costs the language server per completion request.

Builds a synthetic workspace of 2,000 Python files (~200 lines each, 20 packages, each file
importing 3-5 others, absolute and relative imports), opens 20 of them through the language
server's ContextIndex (as the editor's didOpen does), then simulates keystrokes in the last
opened one: typing lines character by character, Enter, and now and then a switch to another
open document. Each keystroke is a didChange (DocumentStore.change + ContextIndex.changed)
and a completion request's ContextIndex.snippets_for, with the prefix the Completer sends.

Prints p50/p95/max of snippets_for and of didChange+snippets_for, the one-time costs (listing
the workspace, the first request), and the share of requests whose snippets were identical
to the previous request's (what keeps the prompt's start, hence the engine's prompt reuse).
Target: p95 of snippets_for < 5 ms.

    .venv/bin/python bench/context_index.py [--files 2000] [--open 20] [--keys 500] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lsp.completion import prefix_start  # noqa: E402
from lsp.config import LspConfig  # noqa: E402
from lsp.context import ContextIndex  # noqa: E402
from lsp.documents import DocumentStore, Edit  # noqa: E402
from lsp.workspace import Workspace, list_code_files  # noqa: E402

WORDS = ("invoice customer order payment refund ledger account balance shipment parcel zone rate "
         "discount coupon cart item stock warehouse supplier tax report audit user session token "
         "price total amount currency address region carrier label tracking status event queue").split()


def module_text(rng: random.Random, package: int, module: int, packages: int, modules: int) -> str:
    """~200 lines of plausible Python: imports of 3-5 other modules, a class and functions
    whose identifiers mix the module's own words with the imported modules' names."""
    own = rng.sample(WORDS, 4)
    lines = [f'"""{own[0].title()} {own[1]} handling for package {package}."""', "from __future__ import annotations", ""]
    imported = []
    for _ in range(rng.randint(3, 5)):
        p, m = rng.randrange(packages), rng.randrange(modules)
        if (p, m) == (package, module):
            continue
        name = f"{rng.choice(WORDS)}_{p}_{m}"
        if p == package and rng.random() < 0.5:
            lines.append(f"from .mod_{m:03d} import {name}")
        elif rng.random() < 0.5:
            lines.append(f"from pkg_{p:02d}.mod_{m:03d} import {name}")
        else:
            lines.append(f"import pkg_{p:02d}.mod_{m:03d}")
            name = f"pkg_{p:02d}.mod_{m:03d}.{name}"
        imported.append(name)
    lines += ["", ""]
    cls = "".join(w.title() for w in own[:2]) + f"{package}_{module}"
    lines += [f"class {cls}:", f'    """Keeps {own[0]}s and their {own[1]}s."""', "",
              "    def __init__(self, " + ", ".join(own) + "):"]
    lines += [f"        self.{w} = {w}" for w in own]
    while len(lines) < 200:
        a, b = rng.sample(WORDS, 2)
        dep = rng.choice(imported) if imported else "None"
        lines += ["", f"    def {a}_{b}_{len(lines)}(self, {a}, {b}_{own[2]}):",
                  f"        {a}_{own[3]} = {dep}({a}, self.{own[0]})",
                  f"        if {a}_{own[3]} is None or {b}_{own[2]} < 0:",
                  f"            return self.{own[1]}",
                  f"        total_{b} = sum(x.{own[2]} for x in {a}_{own[3]})",
                  f"        return total_{b} + {b}_{own[2]}"]
    return "\n".join(lines) + "\n"


def build_workspace(root: Path, files: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    packages = 20
    modules = files // packages
    paths = []
    for p in range(packages):
        (root / f"pkg_{p:02d}").mkdir(parents=True)
        (root / f"pkg_{p:02d}" / "__init__.py").write_text("")
        for m in range(modules):
            rel = f"pkg_{p:02d}/mod_{m:03d}.py"
            (root / rel).write_text(module_text(rng, p, m, packages, modules))
            paths.append(rel)
    return paths


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run(args) -> None:
    rng = random.Random(args.seed)
    cfg = LspConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "workspace"
        paths = build_workspace(root, args.files, args.seed)
        started = time.perf_counter()
        names = list_code_files(str(root))
        listing_ms = (time.perf_counter() - started) * 1000

        store, index = DocumentStore(), ContextIndex(Workspace([str(root)]))
        docs = []
        for rel in rng.sample(paths, args.open):
            docs.append(store.open((root / rel).as_uri(), "python", 1, (root / rel).read_text()))
            index.opened(docs[-1])

        def request(doc) -> list:
            offset = cursor[doc.uri]
            prefix = doc.text[prefix_start(doc.text, offset, cfg.prefix_chars):offset]
            return index.snippets_for(doc.uri, prefix, budget_chars=cfg.context_chars, max_snippets=cfg.context_snippets)

        # The cursor starts on a fresh line in the middle of each document.
        cursor = {}
        for doc in docs:
            middle = doc.text.find("\n    def ", len(doc.text) // 2) + 1
            cursor[doc.uri] = middle
        current = docs[-1]
        started = time.perf_counter()
        request(current)
        first_ms = (time.perf_counter() - started) * 1000

        lookup_ms, keystroke_ms, kinds = [], [], []
        previous, same, same_object = None, 0, 0
        sources = [d for d in docs if d is not current]
        pending = ""
        for key in range(args.keys):
            if key and key % args.switch_every == 0:  # another tab
                current = rng.choice(docs)
                previous, pending = None, ""
            if not pending:
                donor = rng.choice(sources).text.split("\n")
                pending = rng.choice([line for line in donor if line.strip()]).strip() + "\n"
            ch, pending = pending[0], pending[1:]
            offset = cursor[current.uri]
            started = time.perf_counter()
            line, col = current.position_at(offset)
            store.change(current.uri, current.version + 1,
                         [{"text": ch, "range": {"start": {"line": line, "character": col}, "end": {"line": line, "character": col}}}])
            index.changed(current, [Edit(offset, offset, ch)])
            cursor[current.uri] = offset + 1
            fed = time.perf_counter()
            snippets = request(current)
            done = time.perf_counter()
            lookup_ms.append((done - fed) * 1000)
            keystroke_ms.append((done - started) * 1000)
            kinds.append("newline" if ch == "\n" else "within")
            if previous is not None:
                same += snippets == previous
                same_object += snippets is previous
            previous = snippets
        compared = args.keys - 1 - (args.keys - 1) // args.switch_every

    print(f"workspace: {args.files} files, {sum(len(v) for v in names.values())} index entries; {args.open} open documents")
    print(f"one-time: listing the workspace {listing_ms:.1f} ms (once, in a thread at start-up); "
          f"first request {first_ms:.1f} ms (cuts {args.open - 1} documents into windows)")
    for label, values in (("snippets_for", lookup_ms), ("didChange + snippets_for", keystroke_ms)):
        print(f"{label:>26}: p50 {statistics.median(values):.3f} ms  p95 {pct(values, 0.95):.3f} ms  "
              f"max {max(values):.3f} ms  over {len(values)} keystrokes")
    newlines = [ms for ms, kind in zip(lookup_ms, kinds) if kind == "newline"]
    if newlines:
        print(f"{'at a new line':>26}: p50 {statistics.median(newlines):.3f} ms  max {max(newlines):.3f} ms  ({len(newlines)} keystrokes)")
    print(f"snippets identical to the previous request's: {same}/{compared} = {same / max(1, compared):.1%} "
          f"(the same object: {same_object / max(1, compared):.1%}); target p95 < 5 ms: "
          f"{'met' if pct(lookup_ms, 0.95) < 5 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--open", type=int, default=20)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--switch-every", type=int, default=100, help="keystrokes between switches to another open document")
    parser.add_argument("--seed", type=int, default=0)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
