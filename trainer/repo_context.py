"""Repository context for mined examples and held-out lines: what the editor would have open.

An editor's language server ranks windows of the open tabs and of the files the current one
imports (codeloop/snippets.py). For a line added by a commit, the files changed with it and
the files it imports, as they stood at the parent commit, stand in for those tabs: nothing
from the commit itself leaks into the context.
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeloop.snippets import CONTEXT_CHARS, CONTEXT_SNIPPETS, Snippet, Window, imported_paths, rank, windows

__all__ = ["CONTEXT_CHARS", "CONTEXT_SNIPPETS", "ParentContext"]

MAX_FILES = 20  # as many "tabs" as the language server keeps
MAX_FILE_BYTES = 200_000  # a generated or vendored giant is not context


class ParentContext:
    """The windows an editor could have had open while writing one commit."""

    def __init__(self, repo: Path, blobs: Any, sha: str, changed: list[str], *,
                 clean: Callable[[str], str] | None = None):
        """`blobs`: trainer.mining's blob reader; `clean`: applied to each file's text (the
        trainer scrubs secrets from whatever it trains on)."""
        self.repo, self.blobs, self.sha = repo, blobs, sha
        self.changed = changed
        self.clean = clean
        self._known: list[str] | None = None
        self._windows: dict[str, list[Window]] = {}

    def known_paths(self) -> list[str]:
        """Every file at the parent commit (none for a root commit)."""
        if self._known is None:
            done = subprocess.run(["git", "-C", str(self.repo), "ls-tree", "-r", "--name-only", "-z", f"{self.sha}^"],
                                  capture_output=True)
            self._known = [p for p in done.stdout.decode("utf-8", "replace").split("\0") if p] if done.returncode == 0 else []
        return self._known

    def windows_for(self, path: str, imports_from: str) -> list[Window]:
        """Windows of the files `path` imports (as far as `imports_from`, its text before the
        cursor, shows) and of the other files of the commit, at the parent commit."""
        others = [p for p in self.changed if p != path]
        files = list(dict.fromkeys([*imported_paths(path, imports_from, self.known_paths()), *others]))[:MAX_FILES]
        return [w for p in files for w in self.file_windows(p)]

    def snippets(self, path: str, imports_from: str, prefix: str, *, budget_chars: int = CONTEXT_CHARS,
                 max_snippets: int = CONTEXT_SNIPPETS) -> list[Snippet]:
        """What the language server would send for a cursor at the end of `prefix` in `path`."""
        if budget_chars <= 0:
            return []
        return rank(prefix, self.windows_for(path, imports_from), budget_chars=budget_chars, max_snippets=max_snippets)

    def file_windows(self, path: str) -> list[Window]:
        """`path` at the parent commit in windows (none for a file too big, binary or not UTF-8)."""
        if path not in self._windows:
            data = self.blobs.read(f"{self.sha}^:{path}")
            text = None
            if data is not None and len(data) <= MAX_FILE_BYTES and b"\0" not in data:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            if text and self.clean:
                text = self.clean(text)
            self._windows[path] = windows(path, text) if text else []
        return self._windows[path]
