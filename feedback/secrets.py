"""Find secrets in text and replace them before the text is stored or becomes training data.

Used on mined source files (trainer/mining.py) and on telemetry text; it knows nothing about
git. A secret becomes ``<SECRET:kind>``: stable (identical code stays identical after
scrubbing, so deduplication still works), plainly not a credential, and never matched again,
so scrubbing twice is scrubbing once::

    text, found = scrub('token = "ghp_..."')   # 'token = "<SECRET:github_token>"', {"github_token": 1}

Three families of rules, applied in this order:

1. private key blocks (``-----BEGIN ... PRIVATE KEY-----`` through ``END``, multi-line);
2. tokens whose shape names the issuer (AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI,
   Anthropic, Hugging Face, npm, PyPI, JWTs), passwords in URLs and ``Bearer``/``Basic``
   header values;
3. ``assigned_secret``: a random-looking literal assigned to a name that says secret (token,
   password, api_key, auth, credential, ...), in Python, JS, Go, YAML, JSON and .env styles.

What rule 3 keeps, on purpose (it is guessing, and mangled code is bad training data too):
values shorter than 8 characters or below 3.0 bits/char of Shannon entropy, 2.5 for
passwords (``""``, ``"changeme"``, ``"xxxxxxxx"``); values with spaces or backslashes
(messages, regular expressions); templates and references (``${X}``, ``{{ x }}``,
``f"{name}_x"``, ``%(x)s``, ``<your-key>``); values that read as identifiers, words,
paths or URLs (``"X-Auth-Token"``, ``"/run/secrets/db"``, ``"token_value2"``); unquoted
values except alone on a line in .env/YAML style (so ``password = os.environ["X"]`` and
``token = get_token()`` stay); names that describe a secret rather than hold one
(``token_url``, ``password_field``, ``tokenizer``). ``def secret_key(...)`` has no value, so it
is never touched. A key body without its BEGIN and END lines cannot be recognised.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["PLACEHOLDER_PREFIX", "contains_secret", "placeholder", "scrub"]

PLACEHOLDER_PREFIX = "<SECRET:"
MIN_SECRET_CHARS = 8
MIN_ENTROPY_BITS = 3.0
# A value assigned to a password name needs less: people choose passwords, "hunter2hunter2"
# has 2.8 bits/char and is still one.
MIN_PASSWORD_ENTROPY_BITS = 2.5


def placeholder(kind: str) -> str:
    """What a secret of this kind is replaced with."""
    return f"{PLACEHOLDER_PREFIX}{kind}>"


def scrub(text: str, *, keep_lines: bool = False) -> tuple[str, Counter]:
    """Return `text` with every secret replaced, and how many of each kind were replaced.

    keep_lines: a multi-line secret (a private key) leaves as many newlines as it had, so line
    numbers computed on the original text still hold (mining slices files by line).
    """
    found: Counter = Counter()
    text = _scrub_private_keys(text, found, keep_lines)
    lower = text.lower()
    for rule in _TOKEN_RULES:
        if any(needle in lower for needle in rule.needles):
            text = rule.pattern.sub(_replacer(rule, found), text)
    return _scrub_assignments(text, found), found


def contains_secret(text: str) -> bool:
    """True when `scrub` would change `text`."""
    return bool(scrub(text)[1])


# --- private keys --------------------------------------------------------------------------
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
# Key material: a long base64 run right after BEGIN (headers such as DEK-Info may come
# first) or right before END. Code that merely handles PEM markers has none there.
_KEY_MATERIAL = re.compile(r"[A-Za-z0-9+/]{32,}")
_KEY_MATERIAL_WITHIN = 200


def _scrub_private_keys(text: str, found: Counter, keep_lines: bool) -> str:
    if "PRIVATE KEY" not in text:
        return text
    spans: list[tuple[int, int]] = []
    pos = 0
    while begin := _KEY_BEGIN.search(text, pos):
        end = _KEY_END.search(text, begin.end())
        # Text cut in the middle of a key (no END): the key runs to the end of the text.
        stop = end.end() if end else len(text)
        limit = min(begin.end() + _KEY_MATERIAL_WITHIN, end.start() if end else len(text))
        if _KEY_MATERIAL.search(text, begin.end(), limit):
            spans.append((begin.start(), stop))
        if not end:
            break
        pos = stop
    first_begin = _KEY_BEGIN.search(text)
    orphan_end = _KEY_END.search(text, 0, first_begin.start() if first_begin else len(text))
    if orphan_end and _KEY_MATERIAL.search(text, max(0, orphan_end.start() - _KEY_MATERIAL_WITHIN), orphan_end.start()):
        spans.insert(0, (0, orphan_end.end()))  # text that starts in the middle of a key
    pieces: list[str] = []  # joined once: cutting `text` per key copied it once per key
    last = 0
    for start, stop in sorted(spans):
        newlines = "\n" * text.count("\n", start, stop) if keep_lines else ""
        pieces += [text[last:start], placeholder("private_key"), newlines]
        last = stop
        found["private_key"] += 1
    return "".join(pieces) + text[last:] if pieces else text


# --- tokens with a recognisable shape ------------------------------------------------------
@dataclass(frozen=True)
class _TokenRule:
    kind: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...]  # lower-case; the rule runs only when the text contains one
    random: bool = False  # the secret group must look random (not a word that fits the shape)
    group: int = 0  # the part of the match that is the secret
    keep: Callable[[str], bool] | None = None  # secret values to leave alone


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _looks_random(value: str) -> bool:
    return (
        any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and _entropy(value) >= MIN_ENTROPY_BITS
    )


_FIELD = re.compile(r"\{[A-Za-z_][^{}]*\}")  # {name} of an f-string or str.format


def _is_template(value: str) -> bool:
    """A reference to a secret kept elsewhere: ${X}, $X, {x}, {{ x }}, %s, %(x)s, <x>, ***."""
    return (
        value[:1] in "${%<"
        or any(marker in value for marker in ("${", "{{", "%(", "{}", PLACEHOLDER_PREFIX))
        or set(value) <= set("*xX")
        or _FIELD.search(value) is not None
    )


def _replacer(rule: _TokenRule, found: Counter) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        secret = match.group(rule.group)
        if (rule.random and not _looks_random(secret)) or (rule.keep and rule.keep(secret)):
            return match.group(0)
        found[rule.kind] += 1
        start, end = match.span(rule.group)
        whole = match.group(0)
        return whole[: start - match.start()] + placeholder(rule.kind) + whole[end - match.start():]

    return replace


def _rule(kind: str, pattern: str, needles: tuple[str, ...], **kw) -> _TokenRule:
    return _TokenRule(kind, re.compile(pattern), needles, **kw)


# Most patterns start with a literal, then look behind for the word boundary: a pattern that
# starts with \b is tried at every position, some 50 times slower.
_B = r"(?<![A-Za-z0-9_]{})"  # no word character before the literal {}


def _bounded(literal: str) -> str:
    return re.escape(literal) + _B.format(re.escape(literal))


_TOKEN_RULES: tuple[_TokenRule, ...] = (
    _rule("aws_access_key_id", r"(?:AKIA|ASIA|ABIA|ACCA)(?<![A-Za-z0-9_]....)[A-Z0-9]{16}\b", ("akia", "asia", "abia", "acca")),
    _rule(
        "aws_secret_access_key",
        r"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*+(?:=|:|=>)\s*+[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
        ("secret",), group=1,
    ),
    _rule("github_token", _bounded("g") + r"(?:h[pousr]_[A-Za-z0-9]{30,255}|ithub_pat_[A-Za-z0-9_]{40,255})\b",
          ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _rule("gitlab_token", _bounded("glpat-") + r"[A-Za-z0-9_\-]{20,}", ("glpat-",)),
    _rule("slack_webhook", r"https://hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9_/\-]+)",
          ("hooks.slack.com",), group=1),
    _rule("slack_token", _bounded("xox") + r"[abprse]-[A-Za-z0-9\-]{10,}", ("xox",)),
    _rule("stripe_key", r"[sr]k_(?:live|test)_(?<![A-Za-z0-9_].k_live_)(?<![A-Za-z0-9_].k_test_)[A-Za-z0-9]{10,}",
          ("sk_live_", "rk_live_", "sk_test_", "rk_test_")),
    _rule("google_api_key", _bounded("AIza") + r"[0-9A-Za-z_\-]{35}", ("aiza",)),
    _rule("anthropic_key", _bounded("sk-ant-") + r"[A-Za-z0-9_\-]{20,}", ("sk-ant-",)),
    _rule("openai_key", _bounded("sk-") + r"(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}", ("sk-",), random=True),
    _rule("huggingface_token", _bounded("hf_") + r"[A-Za-z0-9]{30,}\b", ("hf_",), random=True),
    _rule("npm_token", _bounded("npm_") + r"[A-Za-z0-9]{30,}\b", ("npm_",), random=True),
    _rule("pypi_token", _bounded("pypi-") + r"[A-Za-z0-9_\-]{40,}", ("pypi-",), random=True),
    # Starts only where a run of its characters starts ("-" too): "eyJ-eyJ-eyJ-..." would
    # otherwise be scanned to its end from each "eyJ", quadratic time.
    _rule("jwt", r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{10,}+\.eyJ[A-Za-z0-9_\-]{10,}+\.[A-Za-z0-9_\-]*+", ("eyj",)),
    # scheme://user:password@host; the password may hold '@', so it runs to the last one.
    _rule("url_password", r"://[^\s:@/'\"<>]*:([^\s/'\"<>]+)@(?=[\w\[])", ("://",), group=1, keep=_is_template),
    _rule("auth_header", r"(?:Bearer|Basic|Token|bearer|basic|token|BEARER|BASIC|TOKEN)[ \t]++([A-Za-z0-9_\-.=+/~]{20,})",
          ("bearer ", "basic ", "token "), random=True, group=1),
)


# --- literals assigned to names that say "secret" ------------------------------------------
# Every pattern below runs on text a client sends, so each must take linear time on any
# input (tests/feedback/test_linear_time.py): no two quantifiers may compete for the same
# characters. Possessive quantifiers (*+, ++) never give back what they took, and a pattern
# that scans a name starts only at the name's first character (a lookbehind), so a long name
# is scanned once rather than once per position inside it.
#
# A secret-ish word in a name that an operator follows: the lines worth a closer look. It is
# searched in ASCII-lowered text: a case-insensitive alternation is ten times slower.
_SECRET_WORD = re.compile(r"secret|token|passw|pwd|api_?key|auth|credential|private_?key")
_NAME_REST = re.compile(r"[\w.\-]*+")  # the rest of the name the word is part of
# After the name: the closing quote/bracket of a key, then the operator (":" also starts an
# annotation, so a name followed by ":" is worth a look whatever comes next). Not from
# inside a run of blanks: searched, it would scan the rest of the run from each blank.
_HINT_OPERATOR = re.compile(r"""(?<![ \t])["'`]?\]?[ \t]*+[=:]""")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # keeps offsets
# name, the closing quote/bracket of a key, an optional type annotation, the operator, a value.
# The annotation (`x: Dict[str, int] | None = ...`) is spaces/tabs, then annotation characters
# and spaces from its first non-space one on, then spaces/tabs; or blanks holding a space.
_ASSIGNMENT = re.compile(
    r"""(?<![\w.\-])(?P<name>[A-Za-z_][\w.\-]*+)["'`]?\]?
        [ \t]*+(?::(?:[ \t]*+[\w.\[\],|][\w.\[\], |]*+|\t*+\ )[ \t]*+)?
        (?P<op>==|=>|:=|=|:)[ \t]*+[rRbBuUfF]{0,2}
        (?:"(?P<dq>[^"\n]*+)"|'(?P<sq>[^'\n]*+)'|`(?P<bq>[^`\n]*+)`|(?P<bare>[^\s"'`,;#)\]}]++))""",
    re.X,
)
_NAME_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SECRET_WORDS = ("secret", "token", "apikey", "credential", "privatekey")
# A name ending in one of these describes a secret (where it is, what it is called), not holds one.
_DESCRIBING_WORDS = frozenset(
    "url uri file path dir field name type header label prompt message msg len length count "
    "size format pattern regex env var id".split()
)
# Words, identifiers, paths and URLs are parts like these (regular case, at most 2 trailing
# digits) joined by separators. Random strings mix case irregularly or carry more digits.
_WORD_SEPARATORS = re.compile(r"[_\-./:@]+")
_WORD = re.compile(r"(?:[a-z]+|[A-Z]+|[A-Z]?[a-z]+(?:[A-Z][a-z]+)*)\d{0,2}")
_DOTTED_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*+(?:\.[A-Za-z_]\w*+)+")
_ENV_LINE_START = re.compile(r"[ \t]*(?:export[ \t]+|-[ \t]+)?")


def _secret_name_entropy(name: str) -> float | None:
    """The entropy a value assigned to `name` needs to be a secret; None: not a secret name."""
    words = [w.lower() for w in _NAME_WORDS.findall(name)]
    if not words or words[-1] in _DESCRIBING_WORDS:
        return None
    joined = "".join(words)
    if "tokeniz" in joined:
        return None
    if any(w in joined for w in ("password", "passwd", "pwd")):
        return MIN_PASSWORD_ENTROPY_BITS
    if any(w in joined for w in _SECRET_WORDS) or any(w in ("auth", "authorization") for w in words):
        return MIN_ENTROPY_BITS
    return None


def _is_wordlike(value: str) -> bool:
    parts = [p for p in _WORD_SEPARATORS.split(value) if p]
    return bool(parts) and all(_WORD.fullmatch(p) for p in parts)


def _is_secret_value(value: str, bare: bool, min_entropy: float) -> bool:
    if (
        len(value) < MIN_SECRET_CHARS
        or any(c.isspace() or c == "\\" for c in value)  # messages, regular expressions
        or _is_template(value)
        or _is_wordlike(value)
        or _entropy(value) < min_entropy
    ):
        return False
    # Unquoted: a random-looking word, not code (calls, subscripts, attribute chains).
    return not bare or (
        any(c.isdigit() for c in value) and not _DOTTED_NAME.fullmatch(value)
        and not any(c in value for c in "([{")
    )


def _scrub_line(line: str, found: Counter) -> str:
    pieces: list[str] = []
    last = 0
    env_starts: tuple[int, ...] | None = None  # where a name alone on an .env/YAML line starts
    for match in _ASSIGNMENT.finditer(line):
        min_entropy = _secret_name_entropy(match.group("name"))
        if min_entropy is None:
            continue
        group = next(g for g in ("dq", "sq", "bq", "bare") if match.group(g) is not None)
        if group == "bare":
            if env_starts is None:  # once per line: per match it made a long line quadratic
                env_starts = _env_starts(line)
            if not (match.group("op") in ("=", ":") and match.start() in env_starts
                    and line[match.end():].strip()[:1] in ("", "#")):
                continue
        if _is_secret_value(match.group(group), group == "bare", min_entropy):
            start, end = match.span(group)
            pieces += [line[last:start], placeholder("assigned_secret")]
            last = end
            found["assigned_secret"] += 1
    return "".join(pieces) + line[last:] if pieces else line


def _env_starts(line: str) -> tuple[int, ...]:
    """The offsets at which `_ENV_LINE_START` can end before a name: after the indentation,
    or after `export `/`- ` that follows it."""
    return (len(line) - len(line.lstrip(" \t")), _ENV_LINE_START.match(line).end())


def _hints(lowered: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each secret-ish word in a name that an operator follows."""
    pos = 0
    while word := _SECRET_WORD.search(lowered, pos):
        name_end = _NAME_REST.match(lowered, word.end()).end()
        operator = _HINT_OPERATOR.match(lowered, name_end)
        if operator:
            yield word.start(), operator.end()
        # Another secret word later in the same name is followed by the same operator (or
        # none): go on after the name, so a long name is not scanned once per word in it.
        pos = name_end


def _scrub_assignments(text: str, found: Counter) -> str:
    """Run the assignment rule on the lines that mention a secret-ish name, and only those."""
    out: list[str] = []
    done = 0  # text[:done] is already in `out`
    for hint_start, hint_end in _hints(text.translate(_ASCII_LOWER)):
        if hint_start < done:
            continue  # same line as an earlier hint
        start = text.rfind("\n", 0, hint_start) + 1
        end = text.find("\n", hint_end)
        end = len(text) if end < 0 else end
        out += [text[done:start], _scrub_line(text[start:end], found)]
        done = end
    return "".join(out) + text[done:] if out else text
