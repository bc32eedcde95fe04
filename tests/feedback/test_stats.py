"""feedback.stats: intervals, z-test, the always-valid sequential test and its simulated error rates."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from feedback import stats
from feedback.stats import (
    DEFAULT_TAU,
    SequentialState,
    always_valid_interval,
    compare_arms,
    msprt_update,
    simulate_peeking,
    two_proportion_ztest,
    wilson_interval,
)


# --- Wilson interval ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(x, n, low, high):
    lo, hi = wilson_interval(x, n)
    assert lo == pytest.approx(low, abs=6e-5) and hi == pytest.approx(high, abs=6e-5)


def test_wilson_edges_stay_in_unit_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0  # no rounding noise
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and 0.0 < hi < 0.1
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and 0.9 < lo < 1.0
    assert wilson_interval(10, 50, confidence=0.99)[0] < wilson_interval(10, 50)[0]


@pytest.mark.parametrize(("x", "n"), [(11, 10), (-1, 10), (1, -1), (1.0, 10), (True, 10)])
def test_wilson_refuses_bad_counts(x, n):
    with pytest.raises(ValueError):
        wilson_interval(x, n)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_wilson_refuses_bad_confidence(confidence):
    with pytest.raises(ValueError):
        wilson_interval(5, 10, confidence)


# --- z-test -------------------------------------------------------------------------------------
def test_ztest_hand_computed():
    # pooled p = 0.5, se = sqrt(0.25 * (1/100 + 1/100)) = sqrt(0.005); z = 0.2 / se = 2*sqrt(2)
    z, p = two_proportion_ztest(40, 100, 60, 100)
    assert z == pytest.approx(2 * math.sqrt(2))
    assert p == pytest.approx(math.erfc(2.0)) and p == pytest.approx(0.004678, abs=1e-6)
    z_rev, p_rev = two_proportion_ztest(60, 100, 40, 100)
    assert z_rev == pytest.approx(-z) and p_rev == pytest.approx(p)


def test_ztest_undefined_gives_p_one():
    assert two_proportion_ztest(0, 0, 5, 10) == (0.0, 1.0)
    assert two_proportion_ztest(0, 10, 0, 20) == (0.0, 1.0)
    assert two_proportion_ztest(3, 10, 6, 20)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("args", [(11, 10, 1, 10), (1, 10, -1, 10), (1, 10, 1, 10.0)])
def test_ztest_refuses_bad_counts(args):
    with pytest.raises(ValueError):
        two_proportion_ztest(*args)


# --- mSPRT --------------------------------------------------------------------------------------
def test_msprt_lambda_matches_formula():
    x1, n1, x2, n2, tau = 300, 1000, 345, 1000, 0.03
    p1, p2 = x1 / n1, x2 / n2
    v = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    expected = math.sqrt(v / (v + tau**2)) * math.exp((p2 - p1) ** 2 * tau**2 / (2 * v * (v + tau**2)))
    result = msprt_update(SequentialState(), x1, n1, x2, n2, tau=tau)
    assert result.lambda_ == pytest.approx(expected)
    assert result.p_value == pytest.approx(min(1.0, 1 / expected))
    assert result.effect == pytest.approx(0.045)


def test_msprt_decision_persists_and_state_round_trips():
    state = SequentialState()
    looks = [(300, 1000, 300, 1000), (600, 2000, 760, 2000), (900, 3000, 900, 3000), (1200, 4000, 1190, 4000)]
    history = []
    for counts in looks:
        result = msprt_update(state, *counts)
        history.append(result)
        stored = json.dumps(result.state.to_dict())  # what the server keeps between daily looks
        state = SequentialState.from_dict(json.loads(stored))
        assert state == result.state
    assert [r.decision for r in history] == ["continue", "difference", "difference", "difference"]
    assert history[2].lambda_ < 1 / 0.05  # no evidence at this look, yet the decision stands
    assert state.looks == 4 and state.decided_at_look == 2
    assert [r.p_value for r in history] == sorted((r.p_value for r in history), reverse=True)
    assert history[-1].p_value == pytest.approx(1 / history[1].lambda_)


def test_msprt_does_not_mutate_the_given_state():
    state = SequentialState()
    msprt_update(state, 300, 1000, 500, 1000)
    assert state == SequentialState()


def test_msprt_zero_variance_and_empty_arms():
    assert msprt_update(SequentialState(), 0, 500, 500, 500).decision == "difference"
    same = msprt_update(SequentialState(), 0, 500, 0, 500)
    assert same.decision == "continue" and math.isfinite(same.lambda_) and same.p_value == 1.0
    empty = msprt_update(SequentialState(), 0, 0, 10, 20)
    assert empty.lambda_ == 1.0 and empty.decision == "continue"
    huge = msprt_update(SequentialState(), 0, 10**7, 10**7, 10**7)
    assert huge.lambda_ == math.inf and math.isfinite(huge.log_lambda) and huge.p_value == 0.0


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.0}, {"alpha": 1.5}, {"tau": 0.0}, {"tau": -0.1}])
def test_msprt_refuses_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        msprt_update(SequentialState(), 30, 100, 40, 100, **kwargs)


def test_msprt_refuses_bad_counts():
    with pytest.raises(ValueError):
        msprt_update(SequentialState(), 101, 100, 40, 100)


@pytest.mark.parametrize("data", [{"min_p": 1.5}, {"min_p": -0.1}, {"looks": -1}])
def test_state_from_dict_refuses_impossible_states(data):
    with pytest.raises(ValueError):
        SequentialState.from_dict(data)


@pytest.mark.parametrize("counts", [(300, 1000, 345, 1000), (300, 1000, 360, 1000), (3000, 10000, 3150, 10000)])
def test_always_valid_interval_agrees_with_the_test(counts):
    lo, hi = always_valid_interval(*counts)
    rejected = msprt_update(SequentialState(), *counts).decision == "difference"
    assert (not lo <= 0.0 <= hi) == rejected


# --- compare_arms -------------------------------------------------------------------------------
def test_compare_arms_picks_clear_winner():
    report = compare_arms({"base": (3000, 10000), "lora-a": (3600, 10000), "lora-b": (3010, 10000)}, "base")
    assert report.winner == "lora-a"
    assert report.alpha_per_comparison == pytest.approx(0.025)
    by_arm = {c.arm: c for c in report.comparisons}
    assert by_arm["lora-a"].decision == "difference" and by_arm["lora-b"].decision == "continue"
    assert by_arm["lora-a"].effect_ci_low > 0 and by_arm["lora-a"].always_valid_ci_low > 0
    assert [a.name for a in report.arms] == ["base", "lora-a", "lora-b"]
    assert report.arms[1].rate == pytest.approx(0.36)
    assert report.arms[1].wilson_low < 0.36 < report.arms[1].wilson_high
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["winner"] == "lora-a" and data["comparisons"][0]["state"]["decided_at_look"] == 1


def test_compare_arms_identical_arms_have_no_winner():
    report = compare_arms({"base": (3000, 10000), "lora": (3000, 10000)}, "base")
    assert report.winner is None and report.comparisons[0].decision == "continue"


def test_compare_arms_worse_arm_makes_control_the_winner():
    assert compare_arms({"base": (3600, 10000), "lora": (3000, 10000)}, "base").winner == "base"


def test_compare_arms_carries_state_between_looks():
    first = compare_arms({"base": (300, 1000), "lora": (420, 1000)}, "base")
    stored = {c.arm: SequentialState.from_dict(c.state.to_dict()) for c in first.comparisons}
    second = compare_arms({"base": (600, 2000), "lora": (600, 2000)}, "base", state=stored)
    assert second.comparisons[0].decision == "difference" and second.comparisons[0].state.looks == 2
    assert second.winner is None  # decided earlier, but today the rates are equal


def test_compare_arms_empty_arm_is_json_safe():
    report = compare_arms({"base": (0, 0), "lora": (0, 0)}, "base")
    assert report.arms[0].rate is None and report.winner is None
    json.dumps(report.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("arms", "control", "kwargs"),
    [({"base": (1, 2)}, "missing", {}), ({"base": (3, 2), "a": (1, 2)}, "base", {}), ({"base": (1, 2)}, "base", {"alpha": 0})],
)
def test_compare_arms_refuses_bad_input(arms, control, kwargs):
    with pytest.raises(ValueError):
        compare_arms(arms, control, **kwargs)


# --- simulation ---------------------------------------------------------------------------------
def _se(rate: float, n: int) -> float:
    return math.sqrt(rate * (1 - rate) / n)


def test_peeking_inflates_false_positives_but_msprt_does_not():
    experiments, alpha = 800, 0.05
    result = simulate_peeking(0.30, 0.30, users_per_day=200, suggestions_per_user=20, days=30,
                              experiments=experiments, alpha=alpha, rng=np.random.default_rng(20240601))
    print(f"\nH0, 30 daily looks, {experiments} experiments: mSPRT {result.msprt_rate:.3f}, "
          f"daily z-test {result.peeking_rate:.3f}, final-only z-test {result.final_rate:.3f}")
    slack = 2 * _se(alpha, experiments)
    assert result.msprt_rate <= alpha + slack, result
    assert result.peeking_rate >= 3 * alpha, result  # the reason for the sequential test
    assert abs(result.final_rate - alpha) <= slack, result  # the simulator itself is calibrated


def test_msprt_detects_a_real_difference():
    result = simulate_peeking(0.30, 0.36, users_per_day=40, suggestions_per_user=10, days=30,
                              experiments=400, rng=np.random.default_rng(7))
    print(f"\n0.30 vs 0.36: mSPRT power {result.msprt_rate:.3f}, median day {result.median_detection_day}")
    assert result.msprt_rate >= 0.80, result
    assert result.median_detection_day is not None and result.median_detection_day < 30


def test_simulation_is_deterministic_under_a_seed():
    run = lambda: simulate_peeking(0.3, 0.33, users_per_day=20, suggestions_per_user=5, days=10,  # noqa: E731
                                   experiments=50, rng=np.random.default_rng(3))
    assert run().msprt_rate == run().msprt_rate and np.array_equal(run().detection_days, run().detection_days)


def test_user_heterogeneity_option_runs():
    result = simulate_peeking(0.3, 0.3, users_per_day=20, suggestions_per_user=10, days=5, experiments=50,
                              rng=np.random.default_rng(1), user_sd=0.1)
    assert 0.0 <= result.msprt_rate <= 1.0
    with pytest.raises(ValueError):
        simulate_peeking(0.3, 0.3, users_per_day=20, suggestions_per_user=10, days=5, experiments=5,
                         rng=np.random.default_rng(1), user_sd=0.6)


@pytest.mark.parametrize("kwargs", [{"days": 0}, {"users_per_day": 1}, {"experiments": 0}, {"alpha": 1.0}])
def test_simulation_refuses_bad_input(kwargs):
    base = dict(users_per_day=20, suggestions_per_user=5, days=5, experiments=5, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        simulate_peeking(0.3, 0.3, **(base | kwargs))


def test_default_tau_is_a_few_points():
    assert 0.01 <= DEFAULT_TAU <= 0.05


# --- clustering by user -------------------------------------------------------------------

def test_effective_counts_leave_independent_users_alone():
    x, n, deff = stats.effective_counts([(3, 10)] * 50)  # every user exactly at the mean
    assert (x, n, deff) == (150, 500, 1.0)
    with pytest.raises(ValueError):
        stats.effective_counts([(5, 3)])


def test_effective_counts_shrink_clustered_users():
    # Half the users accept everything, half nothing: 20 users carry the information, not 400.
    x, n, deff = stats.effective_counts([(20, 20)] * 10 + [(0, 20)] * 10)
    assert deff > 10 and n < 40 and x == pytest.approx(n / 2, abs=1)


def test_effective_counts_restore_the_false_positive_rate_with_heterogeneous_users():
    """Users who differ (sd 0.1 around 0.3) inflate a per-suggestion z-test; shrunk counts do not."""
    rng = np.random.default_rng(5)
    experiments, users, per_user = 600, 60, 40
    naive = corrected = 0
    for _ in range(experiments):
        arms = []
        for _arm in range(2):
            p = np.clip(rng.normal(0.3, 0.1, users), 0.01, 0.99)
            accepted = rng.binomial(per_user, p)
            arms.append([(int(a), per_user) for a in accepted])
        (xa, na), (xb, nb) = [(sum(a for a, _ in arm), sum(s for _, s in arm)) for arm in arms]
        naive += stats.two_proportion_ztest(xa, na, xb, nb)[1] < 0.05
        (ea, ma, _), (eb, mb, _) = [stats.effective_counts(arm) for arm in arms]
        corrected += stats.two_proportion_ztest(ea, ma, eb, mb)[1] < 0.05
    se = (0.05 * 0.95 / experiments) ** 0.5
    assert naive / experiments > 0.05 + 3 * se  # the problem is real
    assert corrected / experiments <= 0.05 + 2 * se  # and the correction removes it
