"""Statistics for A/B tests of adapters: acceptance rates, z-tests and an always-valid test.

Platform teams read the experiment report every day. A fixed-sample z-test checked daily and
stopped at the first p < alpha declares far more false winners than alpha (see
`simulate_peeking`). The sequential decision is therefore a mixture SPRT (mSPRT; Johari,
Pekelis & Walsh, "Always valid inference", 2017) on the normal approximation of the difference
of two proportions with a N(0, tau^2) mixing distribution. Its p-value is valid however often
and whenever the report is looked at; the z-test is reported only as a familiar per-look figure.

Counts are per suggestion while users are what is randomised; when users differ in how often
they accept, suggestions are correlated and every test here is somewhat optimistic (the
`user_sd` option of `simulate_peeking` shows how much).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist

import numpy as np

# tau is the sd of the effects the mixture expects: adapters move acceptance by a few
# percentage points (0.30 -> 0.33). Power is flat around it: in bench/ab_simulation.py, taus
# of 0.02 and 0.03 are the best tried for +1 to +5 points; 0.01 and 0.1 detect later.
DEFAULT_TAU = 0.03


def _count(value: object, name: str) -> int:
    """An integer count >= 0; floats and bools are refused, numpy integers are accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer count, got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer count, got {value!r}") from None
    if count < 0:
        raise ValueError(f"{name} must be >= 0, got {count}")
    return count


def _counts(successes: object, n: object, label: str = "") -> tuple[int, int]:
    x, m = _count(successes, f"successes{label}"), _count(n, f"n{label}")
    if x > m:
        raise ValueError(f"successes{label} ({x}) exceed n{label} ({m})")
    return x, m


def _probability(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def _positive(value: float, name: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval: unlike p +- z*se it stays in [0, 1] and is not empty at 0/n or n/n."""
    x, m = _counts(successes, n)
    z = NormalDist().inv_cdf(0.5 + _probability(confidence, "confidence") / 2)
    if m == 0:
        return 0.0, 1.0
    p, z2 = x / m, z * z
    centre = (p + z2 / (2 * m)) / (1 + z2 / m)
    half = z * math.sqrt(p * (1 - p) / m + z2 / (4 * m * m)) / (1 + z2 / m)
    # At 0/n and n/n the bound is exactly 0 (1); computing it leaves rounding noise like 1e-17.
    return (0.0 if x == 0 else centre - half), (1.0 if x == m else centre + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: under "no difference" each decisive pair goes either way
    with probability 1/2, so the smaller count is binomial(wins + losses, 1/2); ties are left
    out before. min(1, 2 * P(X <= smaller)); 1.0 with nothing decisive. One home for it: the
    trainer's McNemar test and the blind-review report both call it."""
    won, lost = _count(wins, "wins"), _count(losses, "losses")
    n, k = won + lost, min(won, lost)
    if n == 0:
        return 1.0
    if n <= 1000:
        # Exact: integers, one division at the end.
        tail = sum(math.comb(n, i) for i in range(k + 1))
        return min(1.0, 2 * tail / 2**n)
    # Log space: 2**n overflows a float past n = 1023.
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(logs)
    log_tail = top + math.log(sum(math.exp(v - top) for v in logs)) - n * math.log(2)
    return min(1.0, 2 * math.exp(log_tail))


def _pooled_z(x1, n1, x2, n2) -> np.ndarray:
    """Pooled two-proportion z (positive when arm 2 is higher); 0 where it is undefined."""
    x1, n1, x2, n2 = (np.asarray(a, dtype=float) for a in (x1, n1, x2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (x2 / n2 - x1 / n1) / se
    return np.where((n1 > 0) & (n2 > 0) & (se > 0), z, 0.0)


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of the pooled z-test of p2 - p1; (0.0, 1.0) when a rate is undefined."""
    _counts(x1, n1, "1"), _counts(x2, n2, "2")
    z = float(_pooled_z(x1, n1, x2, n2))
    return z, math.erfc(abs(z) / math.sqrt(2))


def _variance(x1, n1, x2, n2) -> np.ndarray:
    """Unpooled Var(p2 - p1); where it is 0 (both rates at 0 or 1) the pooled variance with one
    pseudo-success and one pseudo-failure, so that 0/n vs n/n still counts as evidence."""
    x1, n1, x2, n2 = (np.asarray(a, dtype=float) for a in (x1, n1, x2, n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p1, p2 = x1 / n1, x2 / n2
        v = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
        pooled = (x1 + x2 + 1) / (n1 + n2 + 2)
        fallback = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    return np.where(v > 0, v, fallback)


def _log_lambda(x1, n1, x2, n2, tau: float) -> np.ndarray:
    """log of the mSPRT mixture likelihood ratio; 0 (no evidence) while an arm has no data.
    Logs, because Lambda itself overflows a float once the evidence is overwhelming."""
    n1a, n2a = np.asarray(n1), np.asarray(n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.asarray(x2) / n2a - np.asarray(x1) / n1a
        v, t2 = _variance(x1, n1, x2, n2), tau * tau
        log_lam = 0.5 * np.log(v / (v + t2)) + theta**2 * t2 / (2 * v * (v + t2))
    return np.where((n1a > 0) & (n2a > 0), log_lam, 0.0)


@dataclass
class SequentialState:
    """What the sequential test carries from one look to the next (stored as JSON by the server)."""

    min_p: float = 1.0
    looks: int = 0
    decided_at_look: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "SequentialState":
        """Refuses a state that could not have come from `to_dict` rather than silently reset it."""
        state = cls(float(data.get("min_p", 1.0)), int(data.get("looks", 0)), data.get("decided_at_look"))
        if not 0.0 <= state.min_p <= 1.0 or state.looks < 0:
            raise ValueError(f"invalid sequential state {dict(data)!r}")
        if state.decided_at_look is not None:
            state.decided_at_look = int(state.decided_at_look)
        return state


@dataclass
class SequentialResult:
    lambda_: float  # mixture likelihood ratio at this look (inf when it overflows)
    p_value: float  # always-valid: running minimum over looks of min(1, 1/Lambda)
    decision: str  # "continue" | "difference"; once "difference", stays so
    effect: float  # p2 - p1 at this look
    state: SequentialState
    log_lambda: float = 0.0


def msprt_update(state: SequentialState, x1: int, n1: int, x2: int, n2: int, *,
                 alpha: float = 0.05, tau: float = DEFAULT_TAU) -> SequentialResult:
    """One look at cumulative counts (arm 1 = control). Returns a new state; `state` is untouched."""
    _counts(x1, n1, "1"), _counts(x2, n2, "2")
    alpha, tau = _probability(alpha, "alpha"), _positive(tau, "tau")
    log_lam = float(_log_lambda(x1, n1, x2, n2, tau))
    p_now = min(1.0, math.exp(-log_lam))
    looks = state.looks + 1
    min_p = min(state.min_p, p_now)
    decided = state.decided_at_look
    if decided is None and log_lam >= math.log(1 / alpha):
        decided = looks
    lam = math.exp(log_lam) if log_lam < 700 else math.inf
    effect = (x2 / n2 if n2 else 0.0) - (x1 / n1 if n1 else 0.0)
    return SequentialResult(lam, min_p, "continue" if decided is None else "difference", effect,
                            replace(state, min_p=min_p, looks=looks, decided_at_look=decided), log_lam)


def always_valid_interval(x1: int, n1: int, x2: int, n2: int, *, alpha: float = 0.05,
                          tau: float = DEFAULT_TAU) -> tuple[float, float]:
    """Confidence sequence for p2 - p1: the effects the mSPRT would not reject at this look.
    Unlike the normal CI it may be read every day; it excludes 0 exactly when Lambda >= 1/alpha."""
    if not (n1 and n2):
        return -1.0, 1.0
    v, t2 = float(_variance(x1, n1, x2, n2)), tau * tau
    half = math.sqrt(2 * v * (v + t2) / t2 * (math.log(1 / alpha) + 0.5 * math.log((v + t2) / v)))
    theta = x2 / n2 - x1 / n1
    return max(-1.0, theta - half), min(1.0, theta + half)


@dataclass
class ArmSummary:
    name: str
    shown: int
    accepted: int
    rate: float | None  # None when nothing was shown
    wilson_low: float
    wilson_high: float


@dataclass
class Comparison:
    arm: str  # compared with the control; effect = rate(arm) - rate(control)
    z: float
    p_value: float  # per-look z-test: only valid if the report is read once, at a planned end
    sequential_p_value: float
    decision: str
    effect: float
    effect_ci_low: float  # 95 % normal (Wald) interval, per look
    effect_ci_high: float
    always_valid_ci_low: float  # at the per-comparison alpha, valid at every look
    always_valid_ci_high: float
    log_lambda: float
    state: SequentialState


@dataclass
class ArmsReport:
    control: str
    alpha: float
    alpha_per_comparison: float  # Bonferroni over the comparisons with the control
    tau: float
    arms: list[ArmSummary]
    comparisons: list[Comparison]
    winner: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_arms(arms: Mapping[str, tuple[int, int]], control: str, *, alpha: float = 0.05,
                 tau: float = DEFAULT_TAU, state: Mapping[str, SequentialState] | None = None) -> ArmsReport:
    """Each arm against the control, one look of each sequential test. `arms`: name -> (accepted,
    shown), cumulative; `state`: name -> the state its comparison returned at the previous look.

    alpha is split across the comparisons (Bonferroni) so that with several treatment arms the
    chance of any false winner stays <= alpha. The winner is the significantly better arm with
    the largest effect; the control if some arm is significantly worse and none is better."""
    alpha, tau = _probability(alpha, "alpha"), _positive(tau, "tau")
    if control not in arms:
        raise ValueError(f"control arm {control!r} is not among the arms {sorted(arms)}")
    counts = {name: _counts(*pair, f" of arm {name!r}") for name, pair in arms.items()}
    state = state or {}
    summaries = [ArmSummary(name, n, x, x / n if n else None, *wilson_interval(x, n)) for name, (x, n) in counts.items()]
    others = [name for name in counts if name != control]
    alpha_each = alpha / max(1, len(others))
    x1, n1 = counts[control]
    z95 = NormalDist().inv_cdf(0.975)
    comparisons = []
    for name in others:
        x2, n2 = counts[name]
        z, p = two_proportion_ztest(x1, n1, x2, n2)
        seq = msprt_update(state.get(name, SequentialState()), x1, n1, x2, n2, alpha=alpha_each, tau=tau)
        se = math.sqrt(float(_variance(x1, n1, x2, n2))) if n1 and n2 else math.inf
        lo, hi = (max(-1.0, seq.effect - z95 * se), min(1.0, seq.effect + z95 * se)) if n1 and n2 else (-1.0, 1.0)
        comparisons.append(Comparison(name, z, p, seq.p_value, seq.decision, seq.effect, lo, hi,
                                      *always_valid_interval(x1, n1, x2, n2, alpha=alpha_each, tau=tau),
                                      seq.log_lambda, seq.state))
    decided = [c for c in comparisons if c.decision == "difference"]
    better = sorted((c for c in decided if c.effect > 0), key=lambda c: -c.effect)
    winner = better[0].arm if better else (control if any(c.effect < 0 for c in decided) else None)
    return ArmsReport(control, alpha, alpha_each, tau, summaries, comparisons, winner)


@dataclass
class SimulationResult:
    experiments: int
    days: int
    msprt_rate: float  # fraction of experiments in which the mSPRT ever declared a difference
    peeking_rate: float  # same for a z-test at alpha read every day
    final_rate: float  # z-test at alpha read once, after the last day
    median_detection_day: float | None  # among the mSPRT detections (1 = first day)
    detection_days: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))

    @staticmethod
    def standard_error(rate: float, experiments: int) -> float:
        """Monte-Carlo standard error of a simulated rate."""
        return math.sqrt(max(rate * (1 - rate), 1e-12) / experiments)


def _daily_counts(p: float, users: int, per_user: int, shape: tuple[int, int], user_sd: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Accepted suggestions per (experiment, day) for one arm. With user_sd > 0 every user has
    their own rate (beta with mean p and that sd), so a user's suggestions are correlated."""
    if user_sd == 0:
        return rng.binomial(users * per_user, p, size=shape)
    concentration = p * (1 - p) / user_sd**2 - 1
    if concentration <= 0:
        raise ValueError(f"user_sd {user_sd} is too large for a mean rate of {p}")
    rates = rng.beta(p * concentration, (1 - p) * concentration, size=(*shape, users))
    return rng.binomial(per_user, rates).sum(axis=-1)


def simulate_peeking(p_control: float, p_treatment: float, *, users_per_day: int, suggestions_per_user: int,
                     days: int, experiments: int, alpha: float = 0.05, tau: float = DEFAULT_TAU,
                     rng: np.random.Generator, user_sd: float = 0.0) -> SimulationResult:
    """Many experiments at once, each looked at once a day on its cumulative counts. The users of
    a day are split evenly between the two arms; every user sees `suggestions_per_user`."""
    for value, name in ((p_control, "p_control"), (p_treatment, "p_treatment")):
        _probability(value, name)
    alpha, tau = _probability(alpha, "alpha"), _positive(tau, "tau")
    for value, name in ((users_per_day, "users_per_day"), (suggestions_per_user, "suggestions_per_user"),
                        (days, "days"), (experiments, "experiments")):
        if _count(value, name) == 0:
            raise ValueError(f"{name} must be >= 1")
    users = users_per_day // 2
    if users == 0:
        raise ValueError("users_per_day must be >= 2 (one user per arm)")
    shape = (experiments, days)
    x1 = np.cumsum(_daily_counts(p_control, users, suggestions_per_user, shape, user_sd, rng), axis=1)
    x2 = np.cumsum(_daily_counts(p_treatment, users, suggestions_per_user, shape, user_sd, rng), axis=1)
    n = np.broadcast_to(np.arange(1, days + 1) * users * suggestions_per_user, shape)
    crossed = _log_lambda(x1, n, x2, n, tau) >= math.log(1 / alpha)
    significant = np.abs(_pooled_z(x1, n, x2, n)) >= NormalDist().inv_cdf(1 - alpha / 2)
    detected = crossed.any(axis=1)
    detection_days = crossed.argmax(axis=1)[detected] + 1
    return SimulationResult(
        experiments, days, float(detected.mean()), float(significant.any(axis=1).mean()),
        float(significant[:, -1].mean()), float(np.median(detection_days)) if detected.any() else None, detection_days,
    )


def effective_counts(per_user: Sequence[tuple[int, int]]) -> tuple[int, int, float]:
    """Arm counts shrunk for clustering: (accepted, shown, design effect).

    Users are what is randomised, but suggestions are what is counted, and one person's
    suggestions are not independent (some accept far more than others). Treating them as
    independent overstates the evidence (simulated: 6 % false positives for a 1.5 % test).
    The cluster-robust variance of the pooled rate over users, divided by the binomial one,
    is the design effect; dividing both counts by it keeps the rate and gives the tests the
    right variance. `per_user`: (accepted, shown) for each user of the arm.
    """
    x = np.array([a for a, _ in per_user], dtype=float)
    n = np.array([s for _, s in per_user], dtype=float)
    if (x < 0).any() or (x > n).any():
        raise ValueError("each user needs 0 <= accepted <= shown")
    total_x, total_n, users = x.sum(), n.sum(), int((n > 0).sum())
    if total_n == 0 or users < 2:
        return int(total_x), int(total_n), 1.0
    p = total_x / total_n
    binomial = p * (1 - p) / total_n
    if binomial == 0:
        return int(total_x), int(total_n), 1.0
    clustered = users / (users - 1) * ((x - p * n) ** 2).sum() / total_n**2
    deff = max(1.0, clustered / binomial)
    return round(total_x / deff), round(total_n / deff), deff
