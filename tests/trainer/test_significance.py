"""The promotion gate's statistics against cases with known answers."""
from __future__ import annotations

import math
import random

import pytest

from trainer.significance import bootstrap_mean_ci, compare_paired, mcnemar_exact, paired_bootstrap_diff


def pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_mcnemar_all_discordant_one_way():
    a, b = pairs(both=7, a_only=0, b_only=10, neither=3)
    test = mcnemar_exact(a, b)
    assert (test.b_only, test.a_only) == (10, 0)
    assert test.p_value == pytest.approx(2 * 0.5**10, rel=1e-12)


def test_mcnemar_balanced_is_one_and_no_discordant_is_one():
    assert mcnemar_exact(*pairs(3, 5, 5, 2)).p_value == 1.0
    assert mcnemar_exact(*pairs(4, 0, 0, 4)).p_value == 1.0


def test_mcnemar_matches_hand_computed_binomial_sum():
    # 2 vs 12 discordant: p = 2 * (C(14,0) + C(14,1) + C(14,2)) / 2**14 = 2 * 106 / 16384.
    test = mcnemar_exact(*pairs(20, 2, 12, 5))
    assert test.p_value == pytest.approx(2 * 106 / 16384, rel=1e-12)
    assert mcnemar_exact(*pairs(20, 12, 2, 5)).p_value == test.p_value  # two-sided: symmetric


def test_mcnemar_large_counts_use_log_space_and_agree_with_exact():
    # 1500 discordant pairs: past the exact branch; compare with Python's exact integers.
    a, b = pairs(0, 700, 800, 0)
    exact = 2 * sum(math.comb(1500, i) for i in range(701)) / 2**1500
    assert mcnemar_exact(a, b).p_value == pytest.approx(exact, rel=1e-9)
    assert 0 < exact < 0.05


def test_bootstrap_of_a_constant_is_that_constant():
    assert bootstrap_mean_ci([0.7] * 50) == (0.7, 0.7)


def test_bootstrap_interval_covers_the_true_mean_of_a_large_sample():
    rng = random.Random(3)
    values = [rng.gauss(2.5, 1.0) for _ in range(4000)]
    low, high = bootstrap_mean_ci(values, level=0.95)
    assert low < 2.5 < high
    assert high - low < 0.1  # about 4 standard errors of 1/sqrt(4000)
    narrow = bootstrap_mean_ci(values, level=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_is_seeded():
    values = [1.0, 2.0, 5.0, 3.0, 0.5, 4.0]
    assert bootstrap_mean_ci(values, seed=1) == bootstrap_mean_ci(values, seed=1)


def test_paired_diff_sign_and_pairing():
    a = [float(i) for i in range(30)]
    b = [x + 1.0 for x in a]  # every pair gains exactly 1: no spread at all once paired
    assert paired_bootstrap_diff(a, b) == (1.0, 1.0, 1.0)
    mean, low, high = paired_bootstrap_diff(b, a)
    assert mean == -1.0 and high == -1.0
    rng = random.Random(5)
    base = [rng.random() for _ in range(300)]
    better = [x + 0.1 + rng.gauss(0, 0.05) for x in base]
    mean, low, high = paired_bootstrap_diff(base, better)
    assert 0 < low < mean < high and mean == pytest.approx(0.1, abs=0.02)


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])
    with pytest.raises(ValueError):
        compare_paired([True], [True], [0.5], [0.5, 0.6])
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])


def test_compare_paired_significant_only_for_a_real_gain():
    base, cand = pairs(both=10, a_only=1, b_only=20, neither=69)
    sims_base = [1.0 if x else 0.4 for x in base]
    sims_cand = [1.0 if x else 0.4 for x in cand]
    gain = compare_paired(base, cand, sims_base, sims_cand)
    assert gain.n == 100 and gain.cand_only == 20 and gain.base_only == 1
    assert gain.exact_gain == pytest.approx(0.19) and gain.exact_low > 0 and gain.p_value < 0.001
    assert gain.edit_sim_gain == pytest.approx(0.19 * 0.6) and gain.significant()
    assert gain.to_dict()["p_value"] == gain.p_value and gain.to_dict()["n"] == 100

    loss = compare_paired(cand, base, sims_cand, sims_base)  # the same, the other way round
    assert loss.p_value == gain.p_value and loss.exact_gain < 0 and not loss.significant()

    small = compare_paired(*pairs(10, 1, 4, 85), [0.5] * 100, [0.5] * 100)
    assert small.exact_gain > 0 and small.p_value > 0.05 and not small.significant()
