"""Statistics against independent references."""

import itertools
import math
import random

import pytest

from bench.stats import expected_max, mean_interval, wilson_interval


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
