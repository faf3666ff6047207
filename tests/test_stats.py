"""Statistics against independent references."""

import itertools
import math
import random

import numpy as np
import pytest
import scipy.stats

from bench.stats import expected_max, holm, mean_interval, paired_test, prob_outperform, wilson_interval


@pytest.mark.parametrize("seed", range(5))
def test_expected_max_equals_brute_force_over_every_subset(seed):
    rng = random.Random(seed)
    values = [round(rng.random(), 2) for _ in range(rng.randint(1, 8))]  # rounded: ties happen
    for n in range(1, len(values) + 1):
        maxima = [max(subset) for subset in itertools.combinations(values, n)]
        mean = sum(maxima) / len(maxima)
        std = math.sqrt(sum((m - mean) ** 2 for m in maxima) / len(maxima))
        assert expected_max(values, n) == pytest.approx((mean, std), abs=1e-12)


def test_expected_max_ends_and_bad_budget():
    values = [0.3, 0.9, 0.5]
    assert expected_max(values, 1)[0] == pytest.approx(sum(values) / 3)
    assert expected_max(values, 3) == (0.9, 0.0)
    with pytest.raises(ValueError, match="between 1 and 3"):
        expected_max(values, 4)


def test_wilson_interval_matches_its_closed_form():
    # Wilson (1927): (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z the normal 97.5% quantile.
    z = 1.959963984540054
    for correct, n in [(292, 359), (22125, 25000), (3, 10)]:
        p = correct / n
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        expected = ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))
        assert wilson_interval(p, n) == pytest.approx(expected, abs=1e-9)


def test_mean_interval_covers_a_known_mean_as_often_as_it_says():
    rng = random.Random(0)
    draws = [[rng.gauss(10.0, 2.0) for _ in range(3)] for _ in range(4000)]
    coverage = sum(low <= 10.0 <= high for low, high in map(mean_interval, draws)) / len(draws)
    assert 0.93 < coverage < 0.97
    assert mean_interval([1.0, 2.0, 3.0]) == pytest.approx((2 - 4.302652729911275 / math.sqrt(3),
                                                            2 + 4.302652729911275 / math.sqrt(3)))
    assert mean_interval([0.5]) is None and mean_interval([0.5, 0.5]) == (0.5, 0.5)


def one_seed(both_right, both_wrong, only_a, only_b):
    a = np.array([True] * both_right + [False] * both_wrong + [True] * only_a + [False] * only_b)[None, :]
    b = np.array([True] * both_right + [False] * both_wrong + [False] * only_a + [True] * only_b)[None, :]
    return a, b


def test_paired_test_with_one_seed_is_mcnemar_s_test():
    # 100 rows, 9 discordant: 8 that only A gets right, 1 only B. Exact McNemar: 2 (1 + 9) / 2^9.
    a, b = one_seed(80, 11, 8, 1)
    assert paired_test(a, b) == pytest.approx((7 / 100, 20 / 512))
    assert scipy.stats.binomtest(8, 9).pvalue == pytest.approx(20 / 512)
    assert paired_test(b, a) == pytest.approx((-7 / 100, 20 / 512))
    assert paired_test(a, a) == (0.0, 1.0)
    # 50 discordant rows: sampled sign flips, within three standard errors of the exact test.
    a, b = one_seed(800, 150, 33, 17)
    exact = scipy.stats.binomtest(33, 50).pvalue
    assert abs(paired_test(a, b)[1] - exact) < 3 * np.sqrt(exact * (1 - exact) / 999)


def test_paired_test_over_seeds_flips_signs_of_the_row_means():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 12)) < 0.8, rng.random((3, 12)) < 0.4
    rows = a.mean(axis=0) - b.mean(axis=0)
    reference = scipy.stats.permutation_test((rows,), np.mean, permutation_type="samples", n_resamples=10_000)
    assert paired_test(a, b, n_resamples=10_000) == pytest.approx((rows.mean(), reference.pvalue))  # both exact


def test_holm_against_its_definition():
    # Sorted p: 0.01 x 4 = 0.04; 0.03 x 3 = 0.09; 0.04 x 2 = 0.08, raised to 0.09 to stay monotone; 0.5 x 1.
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6]) and holm([]) == []


def test_prob_outperform_counts_seed_pairs_and_bootstraps_over_seeds():
    assert prob_outperform([0.9, 0.91, 0.92], [0.8, 0.81, 0.82]) == (1.0, 1.0, 1.0)
    estimate, low, high = prob_outperform([0.9, 0.85, 0.8], [0.85, 0.7, 0.95])
    assert estimate == pytest.approx((2 + 1.5 + 1) / 9)  # 0.9 beats two; 0.85 one and ties one; 0.8 one
    assert 0.0 <= low < estimate < high <= 1.0
