"""Repository context: windows of other files' code, ranked by how many identifiers they share
with the lines before the cursor.

One ranking for everyone who builds a prompt: the language server ranks what the editor has
shown it (open documents, recent edits, files the current one imports); the trainer and
`codeloop eval` rank the repository's files at the example's commit the same way, so that an
adapter learns from the context it will be served with. Copilot's "neighbouring tabs" work
like this (Jaccard similarity of 60-line windows); smaller windows suit a small budget.

    files = {"src/models.py": "...", "src/api.py": "..."}
    picked = rank(prefix, file_windows(files, exclude="src/views.py"), budget_chars=2000)
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = [
    "CONTEXT_CHARS", "CONTEXT_SNIPPETS", "QUERY_LINES", "WINDOW_LINES", "Snippet", "Window", "file_windows", "identifiers",
    "imported_paths", "query_text", "rank", "similarity", "windows",
]

# What an editor sends by default (the language server's contextChars / contextSnippets), and
# what the trainer and `codeloop eval` build: one default, so that they measure the same thing.
CONTEXT_CHARS = 1500
CONTEXT_SNIPPETS = 4
# What the server accepts in one request (server/schemas.py): context is tokenized on every
# request, so it is bounded like the rest of a request.
MAX_SNIPPETS, MAX_SNIPPET_CHARS, MAX_SNIPPET_PATH_CHARS = 16, 8000, 500
WINDOW_LINES = 20  # lines of one window
WINDOW_STRIDE = 10  # windows overlap by half, so a definition is whole in at least one
QUERY_LINES = 20  # lines before the cursor's line that are compared with the windows
MIN_SCORE = 0.05  # a window sharing less than this (Jaccard) is noise, not context

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
# Words every file of a language shares: they would make every window look alike.
_COMMON = frozenset("""
and as assert async await break class continue def del elif else except false finally for from
global import lambda none nonlocal not pass raise return self true try while with yield cls
const let var function new this null undefined typeof instanceof export default extends
implements interface public private protected static void int str bool float string
func package struct type range nil err fn pub mut impl use mod match loop where
print len list dict set tuple object super init args kwargs
""".split())


@dataclass(frozen=True)
class Snippet:
    """What the server puts before the prefix: a file's path and some of its lines."""

    filepath: str
    text: str

    def to_dict(self) -> dict:
        return {"filepath": self.filepath, "text": self.text}


@dataclass(frozen=True)
class Window:
    filepath: str
    start_line: int  # 0-based
    text: str
    identifiers: frozenset[str]


def identifiers(text: str) -> frozenset[str]:
    """Identifiers of three characters or more, less each language's common words."""
    return frozenset(w for w in _IDENTIFIER.findall(text) if w.lower() not in _COMMON)


def windows(filepath: str, text: str, lines: int = WINDOW_LINES, stride: int = WINDOW_STRIDE) -> list[Window]:
    """Overlapping windows of `lines` lines every `stride` lines; blank-only windows left out."""
    rows = text.split("\n")
    out = []
    for start in range(0, max(1, len(rows) - lines + stride), stride):
        body = "\n".join(rows[start : start + lines])
        if body.strip():
            out.append(Window(filepath, start, body, identifiers(body)))
    return out


def file_windows(files: Mapping[str, str], exclude: str | None = None) -> list[Window]:
    """Windows of every file but `exclude` (the file being completed)."""
    return [w for path, text in files.items() if path != exclude for w in windows(path, text)]


def query_text(prefix: str, lines: int = QUERY_LINES) -> str:
    """The last `lines` whole lines before the cursor's line. The line being typed is left
    out, so the snippets stay the same while the user types within a line and the prompt's
    start does not move (the engine's prompt reuse depends on it)."""
    head = prefix[: prefix.rfind("\n") + 1] if "\n" in prefix else ""
    rows = head.split("\n")[:-1]
    return "\n".join(rows[-lines:])


def similarity(query: frozenset[str], window: Window) -> float:
    """Jaccard similarity of the query's identifiers and the window's."""
    shared = len(query & window.identifiers)
    return shared / len(query | window.identifiers) if shared else 0.0


def rank(prefix: str, candidates: Iterable[Window], *, budget_chars: int, max_snippets: int = 4,
         min_score: float = MIN_SCORE) -> list[Snippet]:
    """The windows most like the lines before the cursor, within `budget_chars` in all.

    Windows that overlap one already picked from the same file are skipped. The result is in
    ascending order of score: the best window ends up nearest the prefix.
    """
    query = identifiers(query_text(prefix))
    if not query or budget_chars <= 0 or max_snippets <= 0:
        return []
    scored = []
    for w in candidates:
        score = similarity(query, w)
        if score and score >= min_score:
            scored.append((score, w))
    scored.sort(key=lambda sw: (-sw[0], sw[1].filepath, sw[1].start_line))
    picked: list[tuple[float, Window]] = []
    used = 0
    for score, w in scored:
        if len(picked) >= max_snippets:
            break
        if used + len(w.text) > budget_chars:
            continue
        if any(p.filepath == w.filepath and abs(p.start_line - w.start_line) < WINDOW_LINES for _, p in picked):
            continue
        picked.append((score, w))
        used += len(w.text)
    picked.sort(key=lambda sw: (sw[0], sw[1].filepath, sw[1].start_line))
    return [Snippet(w.filepath, w.text) for _, w in picked]


_PY_IMPORT = re.compile(r"^\s*(?:from\s+(\.*)([\w.]*)\s+import\s+([\w, ()*]+)|import\s+([\w., ]+))", re.M)
_JS_IMPORT = re.compile(r"""(?:from\s+|require\(\s*|import\s+)["'](\.{1,2}/[^"']+)["']""")
_JS_EXTENSIONS = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", "/index.ts", "/index.js")


def imported_paths(filepath: str, text: str, known: Iterable[str]) -> list[str]:
    """The files among `known` (paths relative to one root, "/"-separated) that `text`, the
    file at `filepath`, imports: Python's `import a.b` / `from .a import b`, and relative
    JavaScript/TypeScript imports. A module is found by its path's end, so `import pkg.mod`
    finds `src/pkg/mod.py` as well."""
    known_set = set(known)
    here = PurePosixPath(filepath).parent
    found: list[str] = []

    def add(path: str) -> None:
        if path in known_set and path != filepath and path not in found:
            found.append(path)

    if filepath.endswith(".py"):
        by_suffix = _by_module_suffix(known_set)
        for dots, module, names, plain in _PY_IMPORT.findall(text):
            if plain:
                modules = [m.strip().split(" as ")[0] for m in plain.split(",")]
            else:
                base = module
                names_list = [n.strip().split(" as ")[0] for n in names.strip("() ").split(",") if n.strip()]
                modules = [base] + [f"{base}.{n}" if base else n for n in names_list]
                if dots:
                    anchor = here
                    for _ in range(len(dots) - 1):
                        anchor = anchor.parent
                    for m in modules:
                        rel = str(anchor / m.replace(".", "/")) if m else str(anchor)
                        add(f"{rel}.py")
                        add(f"{rel}/__init__.py")
                    continue
            for m in modules:
                if m:
                    for path in by_suffix.get(m.replace(".", "/"), ()):
                        add(path)
    else:
        for spec in _JS_IMPORT.findall(text):
            target = str(PurePosixPath(here, spec))
            parts: list[str] = []
            for part in target.split("/"):
                if part == "..":
                    if parts:
                        parts.pop()
                elif part not in (".", ""):
                    parts.append(part)
            joined = "/".join(parts)
            for ext in _JS_EXTENSIONS:
                add(joined + ext)
    return found


def _by_module_suffix(paths: Iterable[str]) -> dict[str, list[str]]:
    """"a/b" -> the .py files (or packages) whose path ends in a/b, for every tail of every path."""
    index: dict[str, list[str]] = {}
    for path in sorted(paths):
        if not path.endswith(".py"):
            continue
        stem = path[: -len("/__init__.py")] if path.endswith("/__init__.py") else path[:-3]
        parts = stem.split("/")
        for i in range(len(parts)):
            index.setdefault("/".join(parts[i:]), []).append(path)
    return index
