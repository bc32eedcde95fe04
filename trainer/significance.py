"""Is a candidate really better than the model it would replace? Intervals and a paired test.

The same held-out examples are scored by both models, so the comparison is paired: the
bootstrap resamples example indices jointly (each resample keeps each example's pair), and
McNemar's exact test looks only at the examples where the two disagree. Pure Python + numpy:
the trainer must not need scipy for its promotion gate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from feedback.stats import sign_test

# Resampled means computed per numpy call: bounds the [rounds, n] index matrix's memory.
_CHUNK_CELLS = 4_000_000


def bootstrap_mean_ci(values: Sequence[float], *, level: float = 0.95, rounds: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    x = _as_array(values, "values")
    return _percentile_interval(_resampled_means(x, rounds, seed), x, level)


def paired_bootstrap_diff(a: Sequence[float], b: Sequence[float], *, level: float = 0.95, rounds: int = 2000,
                          seed: int = 0) -> tuple[float, float, float]:
    """(mean of b - a, low, high): the interval from resampling examples, each with its pair."""
    x, y = _same_length(a, b)
    diff = y - x
    return float(diff.mean()), *_percentile_interval(_resampled_means(diff, rounds, seed), diff, level)


@dataclass(frozen=True)
class McNemar:
    b_only: int  # pairs where b is right and a is wrong
    a_only: int  # pairs where a is right and b is wrong
    p_value: float  # two-sided exact binomial test on the discordant pairs


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact McNemar test: under "no difference" each discordant pair goes either way with
    probability 1/2, so the smaller count is binomial(n_discordant, 1/2)."""
    x, y = _same_length(a, b)
    x, y = x.astype(bool), y.astype(bool)
    b_only, a_only = int(np.sum(y & ~x)), int(np.sum(x & ~y))
    return McNemar(b_only, a_only, sign_test(b_only, a_only))


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs baseline on the same examples; gains are candidate minus baseline."""

    n: int
    level: float
    base_exact: float
    cand_exact: float
    exact_gain: float
    exact_low: float
    exact_high: float
    edit_sim_gain: float
    edit_sim_low: float
    edit_sim_high: float
    cand_only: int  # examples only the candidate got exactly right
    base_only: int  # examples only the baseline got exactly right
    p_value: float  # McNemar exact, on exact match

    def significant(self, alpha: float = 0.05) -> bool:
        """A real exact-match gain: the paired test rejects "no difference" and the whole
        interval of the gain is above zero (so a significant loss never counts)."""
        return self.p_value < alpha and self.exact_low > 0

    def to_dict(self) -> dict:
        return asdict(self)


def compare_paired(base_exact: Sequence[bool], cand_exact: Sequence[bool], base_sim: Sequence[float],
                   cand_sim: Sequence[float], *, level: float = 0.95, seed: int = 0) -> PairedComparison:
    n = len(base_exact)
    if not (len(cand_exact) == len(base_sim) == len(cand_sim) == n):
        raise ValueError(f"per-example lists differ in length: {n}, {len(cand_exact)}, {len(base_sim)}, {len(cand_sim)}")
    if n == 0:
        raise ValueError("no examples to compare")
    base_e = np.asarray(base_exact, dtype=bool).astype(float)
    cand_e = np.asarray(cand_exact, dtype=bool).astype(float)
    gain, low, high = paired_bootstrap_diff(base_e, cand_e, level=level, seed=seed)
    sim_gain, sim_low, sim_high = paired_bootstrap_diff(base_sim, cand_sim, level=level, seed=seed)
    test = mcnemar_exact(base_exact, cand_exact)
    return PairedComparison(
        n=n, level=level, base_exact=float(base_e.mean()), cand_exact=float(cand_e.mean()),
        exact_gain=gain, exact_low=low, exact_high=high,
        edit_sim_gain=sim_gain, edit_sim_low=sim_low, edit_sim_high=sim_high,
        cand_only=test.b_only, base_only=test.a_only, p_value=test.p_value,
    )


def _resampled_means(x: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    rng = np.random.default_rng(seed)
    n = x.size
    per_chunk = max(1, _CHUNK_CELLS // n)
    means = []
    for start in range(0, rounds, per_chunk):
        idx = rng.integers(0, n, size=(min(per_chunk, rounds - start), n))
        means.append(x[idx].mean(axis=1))
    return np.concatenate(means)


def _percentile_interval(means: np.ndarray, x: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    # A resample's mean lies within the sample's range; clamping removes the rounding of
    # summing, so that a constant sample's interval is exactly that constant.
    lo, hi = float(x.min()), float(x.max())
    return min(max(float(low), lo), hi), min(max(float(high), lo), hi)


def _as_array(values: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name}: need a non-empty list of numbers")
    return x


def _same_length(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    return _as_array(a, "a"), _as_array(b, "b")
