"""The editor's workspace folders on disk, as repository context needs them: the path a
document has relative to its folder, which code files exist there (listed once, lazily and
capped), and files read from disk (only under a folder, size-capped, cached by mtime).

Nothing here walks the workspace per request: the listing happens once per folder (in a
thread at start-up, or at the first request that needs it) and is then an index by name.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from codeloop.snippets import Window, windows

# What imported_paths can resolve: Python and JavaScript/TypeScript modules.
CODE_EXTENSIONS = frozenset({".py", ".pyi", ".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx"})
# Folders that hold other people's code or build output, never the project's own.
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "venv", "env", "build", "dist", "target", "out"})
MAX_LISTED_FILES = 50_000  # a listing stops here: bounded time and memory on a huge monorepo
MAX_LISTED_DIRS = 20_000
MAX_FILE_BYTES = 256_000  # larger imported files (generated code, data) are not read
MAX_CACHED_FILES = 256  # files read from disk whose windows are kept

Names = dict[str, tuple[str, ...]]  # module name -> relative paths of the files it may name


def uri_path(uri: str) -> str | None:
    """The local path of a file:// URI; None for other schemes (untitled:, notebooks)."""
    if not uri.startswith("file:"):
        return None
    path = unquote(urlparse(uri).path)
    return os.path.normpath(path) if path else None


def workspace_roots(folder_uris: Iterable[str] = (), root_uri: str | None = None, root_path: str | None = None) -> list[str]:
    """The folders of an `initialize` request: workspaceFolders, else rootUri, else rootPath."""
    roots = [p for p in (uri_path(u) for u in folder_uris) if p]
    if not roots and root_uri:
        roots = [p for p in [uri_path(root_uri)] if p]
    if not roots and root_path:
        roots = [os.path.normpath(root_path)]
    return roots


@dataclass(frozen=True)
class Located:
    """Where a document is: its workspace folder (None: outside every folder) and its path,
    relative to that folder ("/"-separated), else absolute (or the URI, for non-files)."""

    root: str | None
    filepath: str


@dataclass(frozen=True)
class DiskFile:
    stamp: tuple[int, int]  # (mtime_ns, size): a changed file is read again
    windows: list[Window]


class Workspace:
    def __init__(self, roots: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()  # one listing at a time (the start-up thread or a request)
        self._names: dict[str, Names] = {}
        self._located: dict[str, Located] = {}
        self._files: OrderedDict[str, DiskFile] = OrderedDict()
        self.roots: list[str] = []
        self.set_roots(roots)

    def set_roots(self, roots: Iterable[str]) -> None:
        # Longest first: a nested folder owns its files.
        self.roots = sorted({os.path.normpath(os.path.abspath(r)) for r in roots}, key=len, reverse=True)
        self._located.clear()
        self._names = {root: names for root, names in self._names.items() if root in self.roots}

    def locate(self, uri: str) -> Located:
        located = self._located.get(uri)
        if located is None:
            located = self._located[uri] = self._locate(uri)
            if len(self._located) > 10_000:  # URIs of long-closed documents
                self._located.clear()
        return located

    def _locate(self, uri: str) -> Located:
        path = uri_path(uri)
        if path is None:
            return Located(None, uri)
        for root in self.roots:
            if path.startswith(root.rstrip("/") + "/"):
                return Located(root, path[len(root.rstrip("/")) + 1:].replace(os.sep, "/"))
        return Located(None, path)

    def file_names(self, root: str, *, wait: bool = True) -> Names | None:
        """The code files under `root`, by the module names they may answer to (a file's stem;
        a package's or index file's folder name). Listed once; None while another thread lists
        it (the caller goes on without), or when `wait` is false and it is not listed yet."""
        names = self._names.get(root)
        if names is not None or not wait:
            return names
        if not self._lock.acquire(blocking=False):
            return None
        try:
            names = self._names.get(root)
            if names is None:
                names = self._names[root] = list_code_files(root)
            return names
        finally:
            self._lock.release()

    def warm_up(self) -> None:
        """List every folder now (run in a thread at start-up, so no request waits for it)."""
        for root in list(self.roots):
            self.file_names(root)

    def file_windows(self, root: str, filepath: str) -> DiskFile | None:
        """Windows of the file at `filepath` under `root`, read from disk; None when it is
        missing, too large, or (through a link) outside the folder."""
        path = os.path.join(root, filepath)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_size > MAX_FILE_BYTES:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._files.get(path)
        if cached is not None and cached.stamp == stamp:
            self._files.move_to_end(path)
            return cached
        real_root = os.path.realpath(root)
        if not os.path.realpath(path).startswith(real_root.rstrip("/") + "/"):
            return None
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(MAX_FILE_BYTES + 1)
        except OSError:
            return None
        read = self._files[path] = DiskFile(stamp, windows(filepath, text))
        self._files.move_to_end(path)
        while len(self._files) > MAX_CACHED_FILES:
            self._files.popitem(last=False)
        return read


def list_code_files(root: str, max_files: int = MAX_LISTED_FILES, max_dirs: int = MAX_LISTED_DIRS) -> Names:
    """Walk `root` once (hidden and dependency folders skipped, capped) into a name index."""
    by_name: dict[str, list[str]] = {}
    files = dirs = 0
    for folder, subdirs, filenames in os.walk(root):
        dirs += 1
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        prefix = "" if rel_folder == "." else rel_folder + "/"
        for name in filenames:
            stem, ext = os.path.splitext(name)
            if ext not in CODE_EXTENSIONS:
                continue
            rel = prefix + name
            by_name.setdefault(stem, []).append(rel)
            if stem in ("__init__", "index") and prefix:
                by_name.setdefault(rel_folder.rsplit("/", 1)[-1], []).append(rel)
            files += 1
        if files >= max_files or dirs >= max_dirs:
            break
    return {name: tuple(paths) for name, paths in by_name.items()}
