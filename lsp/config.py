"""The language server's configuration: defaults from codeloop's Settings, then the editor's.

The editor sends options as `initializationOptions` and later through
`workspace/didChangeConfiguration` (either the options themselves or under a "codeloop"
key). Names are camelCase as editors write them; an unknown name or a bad value is an error
that names it, and the previous configuration stays in force.
"""
from __future__ import annotations

import dataclasses
import difflib
import getpass
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeloop.snippets import CONTEXT_CHARS, CONTEXT_SNIPPETS, MAX_SNIPPETS


class ConfigError(ValueError):
    pass


def default_user() -> str:
    """A stable pseudonym of the person typing: the same on every start, not their name."""
    try:
        who = f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name (some containers)
        who = socket.gethostname()
    return "u-" + hashlib.sha256(who.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LspConfig:
    server_url: str = "http://127.0.0.1:8000"
    token: str | None = None
    # Language ids to complete in; "*" means all.
    languages: tuple[str, ...] = ("*",)
    debounce_ms: int = 150
    # A newer request for the same document cancels the older one down to the engine.
    # Off only to measure what that saves (bench/lsp_typist.py).
    cancel_superseded: bool = True
    max_tokens: int | None = None  # None: the server's default
    # A completion that takes longer gives an empty answer (the editor must never hang).
    timeout_ms: int = 8000
    # Automatic triggers ask the server to stop generating this long after the request and
    # answer with what it has: ghost text that comes after the user typed on is never seen,
    # so on a slow engine a shorter suggestion in time beats a longer one too late. None: no
    # budget. Explicit invocations get `invoked_budget_ms`, a second under timeout_ms.
    latency_budget_ms: int | None = 2000
    # Automatic triggers also ask that, this long after the request, a multi-line suggestion
    # end with the line it has completed (the server's line_latency_ms): on a CPU the first
    # lines of a block come in a few hundred milliseconds, the whole block a second later,
    # after the user has typed on (bench/lsp_typist.py, config e). The next lines come with the
    # request on the next line. None: off (and off with latency_budget_ms None: whole suggestions).
    line_budget_ms: int | None = 150
    user: str = dataclasses.field(default_factory=default_user)

    client: str = "codeloop-lsp"
    # Seconds after an accept at which the retained share of the accepted text is reported.
    retention_s: tuple[float, ...] = (30.0, 120.0, 600.0)
    # Events are batched this long before they are sent.
    event_flush_ms: int = 1000
    # Set from codeloop's data_dir (not an editor option: the spool is open while it runs).
    spool_dir: Path = Path("spool")
    # Characters of context around the cursor sent to the server (it trims to tokens).
    prefix_chars: int = 6000
    suffix_chars: int = 2000
    cache_size: int = 256
    # Repository context sent with each request (segments.snippets): windows of the other
    # open documents, recent edits and imported files, at most this many characters in all
    # (0 turns it off) and this many windows (the server takes 16 at most).
    # The same defaults as the trainer's examples and `codeloop eval` (codeloop/snippets.py).
    context_chars: int = CONTEXT_CHARS
    context_snippets: int = CONTEXT_SNIPPETS
    # Documents larger than this get no completions (they are still tracked).
    max_document_chars: int = 2_000_000

    @property
    def invoked_budget_ms(self) -> int:
        """An explicit invocation's budget: what was generated a second before the editor
        would give up beats nothing at all (64 tokens do not fit in 8 s on a small CPU)."""
        return max(self.timeout_ms - 1000, self.timeout_ms // 2)

    def with_options(self, options: dict[str, Any] | None) -> "LspConfig":
        """A new config with the editor's options applied; ConfigError names a bad one."""
        config, problems = self.apply(options)
        if problems:
            raise ConfigError(problems[0])
        return config

    def apply(self, options: Any) -> tuple["LspConfig", list[str]]:
        """The editor's options applied, each bad one left out: (new config, one problem per
        bad option). A typo in one option must not throw away a valid serverUrl."""
        if not options:
            return self, []
        if not isinstance(options, dict):
            return self, [f"options must be an object, got {type(options).__name__}"]
        if isinstance(options.get("codeloop"), dict) and len(options) == 1:
            options = options["codeloop"]
        changes: dict[str, Any] = {}
        problems = []
        for name, value in options.items():
            field = _OPTION_FIELDS.get(name)
            if field is None:
                close = difflib.get_close_matches(str(name), _OPTION_FIELDS, n=1, cutoff=0.6)
                known = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(_OPTION_FIELDS))}"
                problems.append(f"unknown option {name!r} ignored; {known}")
                continue
            try:
                changes[field] = _CHECKS[field](value)
            except (TypeError, ValueError) as exc:
                problems.append(f"option {name!r} ignored: {exc}")
        return dataclasses.replace(self, **changes), problems

    def completes(self, language_id: str) -> bool:
        return "*" in self.languages or language_id in self.languages


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _int_between(lo: int, hi: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not lo <= value <= hi:
            raise ValueError(f"must be a whole number from {lo} to {hi}")
        return int(value)
    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _optional(check):
    return lambda value: None if value is None else check(value)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _languages(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError('must be a list of language ids, e.g. ["python", "go"], or ["*"]')
    return tuple(value)


def _seconds(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 86400 for v in value
    ):
        raise ValueError("must be a non-empty list of seconds, e.g. [30, 120, 600]")
    return tuple(sorted(float(v) for v in value))


_OPTION_FIELDS = {
    "serverUrl": "server_url", "token": "token", "languages": "languages",
    "debounceMs": "debounce_ms", "cancelSuperseded": "cancel_superseded", "maxTokens": "max_tokens", "timeoutMs": "timeout_ms",
    "latencyBudgetMs": "latency_budget_ms", "lineBudgetMs": "line_budget_ms",
    "user": "user", "client": "client", "retentionSeconds": "retention_s",
    "eventFlushMs": "event_flush_ms",
    "prefixChars": "prefix_chars", "suffixChars": "suffix_chars", "cacheSize": "cache_size",
    "contextChars": "context_chars", "contextSnippets": "context_snippets",
}
_CHECKS = {
    "server_url": _url, "token": _optional(_text), "languages": _languages,
    "debounce_ms": _int_between(0, 5000), "cancel_superseded": _bool, "max_tokens": _optional(_int_between(1, 4096)),
    "timeout_ms": _int_between(100, 600_000), "latency_budget_ms": _optional(_int_between(100, 600_000)),
    "line_budget_ms": _optional(_int_between(1, 600_000)),
    "user": _text, "client": _text,
    "retention_s": _seconds, "event_flush_ms": _int_between(0, 60_000),
    "prefix_chars": _int_between(1, 1_000_000), "suffix_chars": _int_between(0, 1_000_000),
    "cache_size": _int_between(0, 100_000),
    "context_chars": _int_between(0, 100_000), "context_snippets": _int_between(0, MAX_SNIPPETS),
}
