"""No pattern of the secret scrubber or of post-processing backtracks: time stays linear.

Both run on text a client sends (the scrubber on every completion, the trainer on every mined
line), so one crafted request must not take seconds. Each adversarial input (a keyword a
pattern looks for, then a long run of what its quantifiers consume: spaces, quotes,
brackets, separators, or the keyword and run repeated) is timed against a plain input of the
same length in the same run: the bound is a ratio of times per kB, so a slow or busy machine
does not fail it, while a quadratic pattern at 100 kB is hundreds of times over it.

A watchdog (SIGALRM: the regex engine checks for signals as it runs) stops a case far past
its bound, so a regression fails in seconds instead of running for hours.
"""
from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from feedback import secrets
from server import not_code, postprocess, truncated

# Time per kB may be this many times the scrubber's on ordinary code of the same length.
MAX_RATIO = 25.0
KB = 1000

# What the patterns look for, and what their quantifiers run over.
KEYWORDS = sorted({
    *(needle for rule in secrets._TOKEN_RULES for needle in rule.needles),
    "secret", "token", "TOKEN", "passw", "password", "pwd", "api_key", "apikey", "auth", "credential", "private_key",
    "aws_secret_access_key", "Bearer", "-----BEGIN ", "-----END ", "-----BEGIN RSA PRIVATE KEY-----", "AKIA",
    "eyJ", "://", "https://hooks.slack.com/services/", "{a", "export ", "- ", "x: int", "a=", "do", "end", "(",
})
UNITS = [" ", "\t", ":", "=", "'", '"', "`", "[", "]", "(", "{", "}", "-", ".", "_", "a", "A", "7", "a ", ": ",
         " :", "a:", "a=", "a.", "eyJ-", "token", "@", "/", "\n", " \n", "%(", "${", "aA1", "a, ", "] ", ": a",
         "=>", ":=", "a-", "a\t", " =", "'a", "x|", "ab\t"]
TAILS = ["", "=", ":", "x", "\n", "@a", ".eyJa", "'", '"', "-----"]


def plain_code(length: int) -> str:
    """Ordinary code, with the assignments and calls the scrubber looks at closely."""
    block = ("def handler(request, retries=3):\n"
             "    token_url = settings.auth_url + '/token'\n"
             "    password = os.environ['DB_PASSWORD']\n"
             "    headers = {'Accept': 'application/json'}  # plain\n"
             "    for attempt in range(retries):\n"
             "        if (reply := client.get(token_url, headers=headers)).ok:\n"
             "            return reply.json()['value']\n"
             "    raise RuntimeError(f'no token after {retries} tries')\n\n")
    return (block * (length // len(block) + 1))[:length]


def patterns() -> dict[str, re.Pattern[str]]:
    """Every compiled pattern of the scrubber and post-processing, token rules included."""
    found = {}
    for module in (secrets, postprocess, not_code, truncated):
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                found[f"{module.__name__}.{name}"] = value
    for rule in secrets._TOKEN_RULES:
        found[f"rule {rule.kind}"] = rule.pattern
    return found


PATTERNS = patterns()


class TooSlow(Exception):
    pass


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    def stop(signum, frame):
        raise TooSlow(f"still running after {seconds:.2f} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timed(fn: Callable[[], object], limit: float | None = None) -> float:
    start = time.perf_counter()
    if limit is None:
        fn()
    else:
        with watchdog(limit):
            fn()
    return time.perf_counter() - start


def use_pattern(pattern: re.Pattern[str], text: str) -> None:
    """What the modules do with their patterns: search all, match at the start, match all."""
    for _ in pattern.finditer(text):
        pass
    pattern.match(text)
    pattern.fullmatch(text)


def baseline(length: int) -> float:
    """Seconds the whole scrubber takes on ordinary code of this length (best of three)."""
    text = plain_code(length)
    return min(timed(lambda: secrets.scrub(text)) for _ in range(3))


def within_bound(what: str, fn: Callable[[], object], budget: float) -> None:
    """fn runs within `budget` seconds; a slow first run (a busy machine) gets one more try."""
    try:
        took = timed(fn, limit=budget * 4)
        if took > budget:
            took = min(took, timed(fn, limit=budget * 4))
    except TooSlow as exc:
        pytest.fail(f"{what}: {exc}, over 4x its bound of {budget:.3f} s")
    assert took <= budget, f"{what}: {took:.3f} s, bound {budget:.3f} s ({MAX_RATIO:g}x the plain input's time)"


@st.composite
def adversarial(draw) -> str:
    """A keyword followed by a long run of one unit, or keyword and a short run repeated."""
    keyword, unit, tail = draw(st.sampled_from(KEYWORDS)), draw(st.sampled_from(UNITS)), draw(st.sampled_from(TAILS))
    length = draw(st.integers(20 * KB, 100 * KB))
    if draw(st.booleans()):
        return (keyword + unit * (length // len(unit)))[:length - len(tail)] + tail
    piece = keyword + unit * draw(st.integers(1, 8)) + tail
    return (piece * (length // len(piece) + 1))[:length]


SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None, phases=(Phase.explicit, Phase.generate),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(adversarial())
@example("token:" + " " * 20_000)  # the input: cubic before the fix
@example("eyJ-" * 25_000)
@example(" " * 50_000 + "token=a1b2c3d4e5f6 " * 2_500)
def test_every_pattern_stays_linear_on_adversarial_input(text):
    budget = MAX_RATIO * baseline(len(text))
    lowered = text.translate(secrets._ASCII_LOWER)
    for name, pattern in PATTERNS.items():
        within_bound(f"{name} on {text[:40]!r}… ({len(text)} chars)", lambda: use_pattern(pattern, text), budget)
    # The lines worth a closer look are found in lowered text, by a loop over three patterns.
    within_bound(f"_hints on lowered {text[:40]!r}…", lambda: list(secrets._hints(lowered)), budget)


@SETTINGS
@given(adversarial())
@example("token:" + " " * 20_000)
@example("password = '" + "a" * 99_000)
def test_the_whole_scrubber_stays_linear_on_adversarial_input(text):
    budget = MAX_RATIO * baseline(len(text))
    within_bound(f"scrub({text[:40]!r}…, {len(text)} chars)", lambda: secrets.scrub(text), budget)
    within_bound(f"scrub(…, keep_lines) of {text[:40]!r}…", lambda: secrets.scrub(text, keep_lines=True), budget)
