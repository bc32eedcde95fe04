"""Editor set-ups for the language server, with this machine's paths filled in.

`codeloop editor neovim|emacs|helix` prints one; the README shows them with placeholder
paths, and tests/lsp/test_editor_setup.py runs the Neovim one as written (and checks that the
README holds each of them).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["EDITORS", "codeloop_command", "render"]

# File types the snippets start the language server for (a user edits the list).
LANGUAGES = ("python", "javascript", "typescript", "go", "rust", "java", "c", "cpp", "lua", "sh")

_NEOVIM = """\
-- codeloop in Neovim 0.7+ (init.lua): one language server for every buffer of these types.
-- Suggestions come through the completion menu (<C-x><C-o>, or any completion plugin).
local codeloop_client
vim.api.nvim_create_autocmd("FileType", {{
  pattern = {{ {patterns} }},
  callback = function(args)
    codeloop_client = codeloop_client or vim.lsp.start_client({{
      name = "codeloop",
      cmd = {{ "{command}", "lsp" }},
      init_options = {{ serverUrl = "{url}" }},
    }})
    vim.lsp.buf_attach_client(args.buf, codeloop_client)
    vim.bo[args.buf].omnifunc = "v:lua.vim.lsp.omnifunc"
  end,
}})
"""

_EMACS = """\
;; codeloop in Emacs 28+ with eglot (init.el): suggestions through completion-at-point.
(require 'eglot)
(add-to-list 'eglot-server-programs
             '((python-mode js-mode typescript-mode go-mode rust-mode java-mode c-mode c++-mode sh-mode)
               . ("{command}" "lsp" :initializationOptions (:serverUrl "{url}"))))
(add-hook 'prog-mode-hook #'eglot-ensure)
"""

_HELIX = """\
# codeloop in Helix (~/.config/helix/languages.toml): suggestions in the completion menu.
[language-server.codeloop]
command = "{command}"
args = ["lsp"]
config = {{ serverUrl = "{url}" }}

[[language]]
name = "python"
language-servers = ["pylsp", "codeloop"]
"""

EDITORS = {"neovim": _NEOVIM, "emacs": _EMACS, "helix": _HELIX}


def codeloop_command() -> str:
    """The full path of the `codeloop` command editors should start: the one next to this
    Python (inside .venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "codeloop"
    if beside.exists():
        return str(beside)
    return shutil.which("codeloop") or "codeloop"


def render(editor: str, command: str, url: str) -> str:
    """The set-up for `editor` (a key of EDITORS) starting `command lsp` against `url`."""
    patterns = ", ".join(f'"{language}"' for language in LANGUAGES)
    return EDITORS[editor].format(command=command, url=url, patterns=patterns)
