"""Statistics of a sweep's results, computed from what the MLflow store holds."""

from __future__ import annotations

import math
import statistics

import scipy.stats


def expected_max(values: list[float], n: int) -> tuple[float, float]:
    """Mean and standard deviation of the best of n values drawn without replacement from `values`: the expected
    best validation accuracy after a tuning budget of n trials (Dodge et al. 2019, "Show Your Work", with the
    unbiased without-replacement estimator of Tang et al. 2020). It assumes the trials are i.i.d. draws.

    The i-th smallest of N values is the best of a draw exactly when the other n - 1 come from the i - 1 below it:
    C(i - 1, n - 1) of the C(N, n) draws.
    """
    ordered, total = sorted(values), math.comb(len(values), n)
    if not 1 <= n <= len(ordered):
        raise ValueError(f"n must be between 1 and {len(ordered)}, got {n}")
    weights = [math.comb(i, n - 1) / total for i in range(len(ordered))]
    mean = sum(w * v for w, v in zip(weights, ordered))
    second = sum(w * v * v for w, v in zip(weights, ordered))
    return mean, math.sqrt(max(0.0, second - mean * mean))


def wilson_interval(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The interval that the test set's size alone puts around an accuracy measured on n texts: Wilson's score
    interval for a binomial proportion (scipy.stats). It says nothing of the spread over training seeds."""
    interval = scipy.stats.binomtest(round(accuracy * n), n).proportion_ci(confidence_level=confidence,
                                                                           method="wilson")
    return float(interval.low), float(interval.high)


def mean_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student's t interval for the mean of a few values (scipy.stats); None for fewer than two."""
    if len(values) < 2:
        return None
    mean, sem = statistics.mean(values), scipy.stats.sem(values)
    if sem == 0:  # identical values: scipy's interval would be nan
        return mean, mean
    low, high = scipy.stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)
