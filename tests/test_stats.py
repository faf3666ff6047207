"""Statistics against independent references."""

import itertools
import math
import random

import pytest

from bench.stats import expected_max


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
