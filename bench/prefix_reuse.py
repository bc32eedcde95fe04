"""What reusing the last prompt's KV cache saves the embedded engine while someone types.

A real file of this repository is typed at its end, one keystroke at a time (default: 20
keystrokes from the middle of server/postprocess.py). For each keystroke the prompt is cut
the way the language server and the server cut it with their defaults (prefixChars 6000, a
window start that moves in steps; max_prompt_tokens 1536, a cut that moves in steps) and the
real default model answers it twice, back to back:
  reuse:  the engine holds the previous keystroke's prompt (what it read last), as in use;
  fresh:  the engine's prefix cache emptied first: every prompt token read again.
Also printed: how often the prompt's start changed from one keystroke to the next, with these
steady cuts and with the earlier ones (language server: exactly prefixChars back; server: the
first line start that fits), where a change means nothing can be reused.

With --context the prompts also carry repository context as the language server sends it:
a ContextIndex (lsp/context.py) with the typed file open (its imports under this repository
are read from disk) and the --open files as other tabs, asked at each keystroke; the server
puts its snippets ahead of the prefix (codeloop/fim.py).

    .venv/bin/python bench/prefix_reuse.py [--keys 20] [--max-tokens 16] [--prefix-chars 6000]
                                           [--context] [--context-chars 1500] [--open FILE...]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from codeloop.settings import Settings  # noqa: E402
from lsp.completion import prefix_start  # noqa: E402
from lsp.context import ContextIndex  # noqa: E402
from lsp.documents import DocumentStore  # noqa: E402
from lsp.workspace import Workspace  # noqa: E402
from server.engines import GenerationParams  # noqa: E402
from server.engines.transformers_engine import TransformersEngine  # noqa: E402
from codeloop import fim  # noqa: E402
from codeloop.fim import build_prompt, get_template  # noqa: E402
from tests.conftest import TEST_MODELS_DIR  # noqa: E402


async def run(args) -> None:
    from codeloop.models import prepare_default_model

    settings = Settings()
    engine = TransformersEngine(prepare_default_model(TEST_MODELS_DIR))
    await engine.start()
    template = get_template(settings.fim_template, engine.model_type, engine.tokenizer.get_vocab())
    text = (REPO / args.file).read_text()
    origin0 = min(len(text) - args.keys, max(args.prefix_chars + 500, len(text) // 2))
    params = GenerationParams(max_tokens=args.max_tokens, stop=template.stop)
    index, uri = ContextIndex(Workspace([str(REPO)])), (REPO / args.file).as_uri()
    if args.context:
        store = DocumentStore()
        for rel in [*args.open, args.file]:
            index.opened(store.open((REPO / rel).as_uri(), "python", 1, (REPO / rel).read_text()))

    def snippets_at(origin: int) -> list:
        """What the language server sends with a request at `origin` (it keeps the answer
        while the lines before the cursor's line stay the same)."""
        if not args.context:
            return []
        start = prefix_start(text, origin, args.prefix_chars)
        return index.snippets_for(uri, text[start:origin], budget_chars=args.context_chars, max_snippets=4)

    def prompt(origin: int, steady: bool = True) -> str:
        start = prefix_start(text, origin, args.prefix_chars) if steady else max(0, origin - args.prefix_chars)
        snippets = snippets_at(origin)
        steady_min = fim._STEADY_MIN_CHARS
        fim._STEADY_MIN_CHARS = steady_min if steady else 10**9  # the server's earlier cut
        try:
            built = build_prompt(template, text[start:origin], text[origin:origin + 2000], engine.tokenizer,
                                 settings.max_prompt_tokens, settings.suffix_share, snippets=snippets,
                                 filepath=args.file, context_share=settings.context_share)
        finally:
            fim._STEADY_MIN_CHARS = steady_min
        return built.text

    def start_changed(origin: int, steady: bool) -> bool:
        a, b = prompt(origin - 1, steady), prompt(origin, steady)
        return not b.startswith(a[:200])

    rows = []
    print(f"{engine.model_name}, {args.file} from offset {origin0}, {args.keys} keystrokes, "
          f"{args.max_tokens} new tokens a suggestion", flush=True)
    if args.context:
        first = snippets_at(origin0)
        print(f"context: {len(first)} snippets, {sum(len(s.text) for s in first)} characters, from "
              f"{sorted({s.filepath for s in first})}", flush=True)
    await engine.complete(prompt(origin0), GenerationParams(max_tokens=1), None)
    for k in range(1, args.keys + 1):
        now = prompt(origin0 + k)
        # The engine holds the previous keystroke's prompt and answer, as in use.
        t = time.perf_counter()
        reuse = await engine.complete(now, params, None)
        reuse_s = time.perf_counter() - t
        engine._prefix_cache.clear()
        t = time.perf_counter()
        fresh = await engine.complete(now, params, None)
        fresh_s = time.perf_counter() - t
        assert reuse.text == fresh.text, (k, reuse.text, fresh.text)
        rows.append((reuse, reuse_s, fresh, fresh_s))
        if k % 5 == 0:
            print(f"  {k}/{args.keys} keystrokes", flush=True)
    # How often the start changes over a longer stretch of typing (prompts only, no model).
    stretch = range(origin0 + 1, min(len(text), origin0 + args.stretch))
    moved = {steady: sum(start_changed(o, steady) for o in stretch) for steady in (True, False)}
    context_changes = sum(snippets_at(o - 1) != snippets_at(o) for o in stretch)
    await engine.close()

    def med(values):
        return statistics.median(values)

    prompt_tokens = med([r[0].prompt_tokens for r in rows])
    reused = med([r[0].cached_prompt_tokens for r in rows])
    ttft_reuse, ttft_fresh = med([r[0].first_token_ms for r in rows]), med([r[2].first_token_ms for r in rows])
    total_reuse, total_fresh = med([r[1] for r in rows]) * 1000, med([r[3] for r in rows]) * 1000
    print()
    print("| median per keystroke | reuse | fresh | fresh / reuse |")
    print("| --- | --- | --- | --- |")
    print(f"| prompt tokens | {prompt_tokens:.0f} | {prompt_tokens:.0f} | |")
    print(f"| prompt tokens reused | {reused:.0f} | 0 | |")
    print(f"| time to first token (ms) | {ttft_reuse:.0f} | {ttft_fresh:.0f} | {ttft_fresh / ttft_reuse:.1f} |")
    print(f"| whole suggestion, {args.max_tokens} tokens at most (ms) | {total_reuse:.0f} | {total_fresh:.0f} | "
          f"{total_fresh / total_reuse:.1f} |")
    print(f"\nsame greedy text with and without reuse: {len(rows)}/{len(rows)} keystrokes")
    print(f"keystrokes that changed the prompt's start, over {len(stretch)} characters typed: "
          f"{moved[True]} with the steady cuts, {moved[False]} with the earlier ones")
    if args.context:
        print(f"of which keystrokes that changed the snippets: {context_changes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", default="server/postprocess.py")
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--stretch", type=int, default=1000, help="characters over which to count start changes")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prefix-chars", type=int, default=6000)
    parser.add_argument("--context", action="store_true", help="repository context from the language server's ContextIndex")
    parser.add_argument("--context-chars", type=int, default=1500, help="its character budget (contextChars)")
    parser.add_argument("--open", nargs="*", default=[], help="other files open in the editor, relative to the repository")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
