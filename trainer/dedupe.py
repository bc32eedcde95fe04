"""Drop repeated training examples: exact repeats, then near repeats (MinHash + LSH).

Repeats come from reverts, cherry-picks, copy-paste and forks; trained on twice, they weigh
twice and leak between the train and held-out splits. Of a group of repeats the oldest
example (smallest `time`, then first in the list) is kept. Deterministic: no randomness
that is not seeded, no Python `hash()` (salted per process).
"""
from __future__ import annotations

import hashlib
import itertools
import re
import zlib
from array import array

import numpy as np

from trainer.examples import Example

__all__ = ["dedupe", "exact_key", "near_text"]

CONTEXT_CHARS = 200  # context around the middle that makes two exact repeats "the same place"
NEAR_CONTEXT_CHARS = 120  # at most this much of the line either side, for near repeats
SHINGLE_TOKENS = 5
NUM_PERMUTATIONS = 128
SEED = 20240611
_CHUNK_TEXTS = 8192  # texts tokenised and hashed per numpy step
_CHUNK_SHINGLES = 1 << 14  # shingles hashed per numpy step: 16 MiB of uint64 for 128 permutations
_TOKEN = re.compile(r"\w+|[^\w\s]")
_ESTIMATE_SLACK = 0.2  # over 4 standard deviations of a 128-permutation estimate
_SENTINEL = np.uint64(0x9E3779B97F4A7C15)  # stands for "past the end" in short shingles


def dedupe(examples: list[Example], threshold: float) -> tuple[list[Example], int, int]:
    """Return (kept examples in their original order, exact repeats removed, near removed).

    Near repeat: an example of the same kind with Jaccard similarity >= `threshold` between the
    5-token shingle sets of the middle with its nearby context (`near_text`), verified exactly
    on LSH candidates.
    """
    if not examples:
        return [], 0, 0
    near = _NearIndex(examples, threshold)
    seen: set[bytes] = set()
    keep = [False] * len(examples)
    exact_removed = near_removed = 0
    for i in sorted(range(len(examples)), key=lambda i: examples[i].time):  # stable: ties keep list order
        key = exact_key(examples[i])
        if key in seen:
            exact_removed += 1
        elif near.has_near_repeat(i):
            near_removed += 1
        else:
            near.add(i)
            keep[i] = True
        seen.add(key)
    return [e for e, k in zip(examples, keep) if k], exact_removed, near_removed


class _NearIndex:
    """MinHash LSH over the kept examples: which earlier example is a near repeat of this one.

    Examples that share a band key are found by sorting each band's keys once (numpy), not
    with per-example dictionaries: most examples share no key and cost nothing more.
    """

    def __init__(self, examples: list[Example], threshold: float):
        self.threshold = threshold
        self.shingles, self.bounds = _shingles([near_text(e) for e in examples])
        self.signatures = _minhash(self.shingles, self.bounds)
        # Near repeats only within a kind: a function's body and the hunk that added the whole
        # function look alike, but teach different things.
        kinds = np.array([zlib.crc32(e.kind.encode()) for e in examples], dtype=np.uint64)
        keys = _band_keys(self.signatures, _band_rows(threshold)) ^ kinds[:, None]
        has_tokens = self.bounds[:, 1] > self.bounds[:, 0]
        self.kept = np.zeros(len(examples), dtype=bool)  # kept so far, with tokens: candidates
        self.bands: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # order, group start, end
        self.colliding = np.zeros(len(examples), dtype=bool)  # shares some band key with another
        for band in range(keys.shape[1]):
            order = np.argsort(keys[:, band], kind="stable")
            ordered = keys[order, band]
            new_group = np.ones(len(order), dtype=bool)
            new_group[1:] = ordered[1:] != ordered[:-1]
            group_starts = np.flatnonzero(new_group)
            group = np.cumsum(new_group) - 1  # of each position in `order`
            start, end = np.empty_like(order), np.empty_like(order)
            start[order] = group_starts[group]
            end[order] = np.append(group_starts[1:], len(order))[group]
            self.bands.append((order, start, end))
            self.colliding |= end - start > 1
        self.colliding &= has_tokens
        self.has_tokens = has_tokens
        self.sets: dict[int, np.ndarray] = {}  # unique shingles, computed for candidates only

    def has_near_repeat(self, i: int) -> bool:
        if not self.colliding[i]:
            return False
        found: set[int] = set()
        for order, start, end in self.bands:
            if end[i] - start[i] > 1:
                members = order[start[i] : end[i]]
                found.update(members[self.kept[members]].tolist())
        if not found:
            return False
        candidates = sorted(found)
        # The signatures estimate the similarity (to +-0.05): only plausible ones are verified.
        estimates = (self.signatures[candidates] == self.signatures[i]).mean(axis=1)
        plausible = [c for c, estimate in zip(candidates, estimates) if estimate >= self.threshold - _ESTIMATE_SLACK]
        return any(self._jaccard(i, c) >= self.threshold for c in plausible)

    def add(self, i: int) -> None:
        self.kept[i] = self.has_tokens[i]

    def _jaccard(self, i: int, j: int) -> float:
        for k in (i, j):
            if k not in self.sets:
                self.sets[k] = np.unique(self.shingles[self.bounds[k, 0] : self.bounds[k, 1]])
        common = len(np.intersect1d(self.sets[i], self.sets[j], assume_unique=True))
        return common / (len(self.sets[i]) + len(self.sets[j]) - common)


def exact_key(example: Example) -> bytes:
    """The middle and the context next to it, whitespace-normalised, hashed."""
    parts = (
        _normalise(example.prefix[-2 * CONTEXT_CHARS :])[-CONTEXT_CHARS:],
        _normalise(example.middle),
        _normalise(example.suffix[: 2 * CONTEXT_CHARS])[:CONTEXT_CHARS],
    )
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def near_text(example: Example) -> str:
    """What near-duplicate detection compares: the middle with the line each side of it.

    Only a line: with more, the context of a short middle outweighs it, and different
    middles at the same place of the same file would look alike.
    """
    before = example.prefix[-NEAR_CONTEXT_CHARS:].rsplit("\n", 2)
    before_line = before[-2] + "\n" if len(before) >= 2 and not before[-1] else before[-1]
    after_line = example.suffix[:NEAR_CONTEXT_CHARS].split("\n", 1)[0]
    return before_line + example.middle + after_line


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _shingles(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hash every 5-token window of every text (a text shorter than 5 tokens is one shingle).

    Returns the shingle hashes of all texts back to back, and per text its [start, end).
    Texts are hashed _CHUNK_TEXTS at a time, to bound the temporary arrays.
    """
    vocab: dict[str, int] = {}
    fresh = itertools.count()  # a token's id: the first number it was offered (gaps are harmless)
    parts: list[np.ndarray] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for lo in range(0, len(texts), _CHUNK_TEXTS):
        ids = array("q")  # machine integers: a list of 10M Python ints would take 400 MB
        starts = [0]
        for text in texts[lo : lo + _CHUNK_TEXTS]:
            ids.extend(map(vocab.setdefault, _TOKEN.findall(text), fresh))
            starts.append(len(ids))
        hashes, counts[lo : lo + len(starts) - 1] = _window_hashes(np.frombuffer(ids, dtype=np.int64), np.asarray(starts))
        parts.append(hashes)
    bounds = np.zeros((len(texts), 2), dtype=np.int64)
    bounds[:, 1] = np.cumsum(counts)
    bounds[1:, 0] = bounds[:-1, 1]
    return np.concatenate(parts), bounds


def _window_hashes(tokens: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shingle hashes of texts whose token ids lie back to back, and how many per text."""
    lengths = np.diff(starts)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    ends = starts[1:][owner]
    positions = np.arange(len(tokens))
    # A window starts at each token with 5 tokens left, and at the first token of a short text.
    valid = (positions + SHINGLE_TOKENS <= ends) | ((positions == starts[:-1][owner]) & (lengths[owner] < SHINGLE_TOKENS))
    first, ends = positions[valid], ends[valid]
    rng = np.random.default_rng(SEED)
    multipliers = rng.integers(1, 2**63, size=SHINGLE_TOKENS, dtype=np.uint64) | np.uint64(1)
    padded = np.concatenate([tokens.astype(np.uint64), np.zeros(SHINGLE_TOKENS, dtype=np.uint64)])
    hashes = np.zeros(len(first), dtype=np.uint64)
    for j in range(SHINGLE_TOKENS):
        value = np.where(first + j < ends, padded[first + j], _SENTINEL)
        hashes = hashes * multipliers[j] + value * multipliers[j] + np.uint64(j)  # wraps mod 2**64
    return _mix(hashes), np.bincount(owner[valid], minlength=len(lengths))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the bits of a combined hash."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _minhash(shingles: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """MinHash signatures (texts x NUM_PERMUTATIONS, uint32): h_k(x) = high bits of a_k*x + b_k."""
    rng = np.random.default_rng(SEED + 1)
    a = rng.integers(1, 2**63, size=NUM_PERMUTATIONS, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=NUM_PERMUTATIONS, dtype=np.uint64)
    signatures = np.full((len(bounds), NUM_PERMUTATIONS), np.iinfo(np.uint32).max, dtype=np.uint32)
    nonempty = np.flatnonzero(bounds[:, 1] > bounds[:, 0])
    ends = bounds[nonempty, 1]
    done = 0
    while done < len(nonempty):
        # A chunk of whole texts holding about _CHUNK_SHINGLES shingles.
        last = np.searchsorted(ends, bounds[nonempty[done], 0] + _CHUNK_SHINGLES, side="right")
        chunk = nonempty[done : max(last, done + 1)]
        lo, hi = bounds[chunk[0], 0], bounds[chunk[-1], 1]
        values = np.multiply(a[:, None], shingles[None, lo:hi])  # permutations x shingles
        values += b[:, None]
        lowest = np.minimum.reduceat(values >> np.uint64(32), bounds[chunk, 0] - lo, axis=1)
        signatures[chunk] = lowest.T.astype(np.uint32)
        done += len(chunk)
    return signatures


def _band_rows(threshold: float) -> int:
    """Rows per LSH band: the most that still finds a pair at `threshold` with 99% odds."""
    rows = 1
    while rows * 2 <= NUM_PERMUTATIONS:
        bands = NUM_PERMUTATIONS // (rows * 2)
        if 1 - (1 - threshold ** (rows * 2)) ** bands < 0.99:
            break
        rows *= 2
    return rows


def _band_keys(signatures: np.ndarray, rows: int) -> np.ndarray:
    """One 64-bit key per (text, band): the band's rows hashed together."""
    rng = np.random.default_rng(SEED + 2)
    weights = rng.integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
    keys = np.zeros((len(signatures), NUM_PERMUTATIONS // rows), dtype=np.uint64)
    for row in range(rows):  # column by column: no texts x permutations uint64 temporary
        keys += signatures[:, row::rows].astype(np.uint64) * weights[row]
    return _mix(keys)
