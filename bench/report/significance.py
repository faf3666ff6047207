"""Which architectures a dataset's test rows and training seeds can tell apart from the best, from the predictions
each study logged to MLflow (the best trial's, or its replicates').

Per test split: the architecture with the highest mean accuracy over its seeds is the best; every other one is
compared with it by a paired permutation test on the same rows (Holm-adjusted over the comparisons), and by
P(best > other) over their seeds with a bootstrap interval. "Below" needs both: the rows and the seeds. The
report shows each split as a table (significance_table).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from bench.report.collect import ReportError, Study
from bench.report.format import dataset_title, interval, p_value, pct, probability
from bench.stats import holm, mean_interval, paired_test, prob_outperform, wilson_interval

ALPHA = 0.05  # significance level of the paired test, after Holm's adjustment
@dataclass
class Scores:
    """One architecture's correctness on each row of a test split, for each of its seeds."""

    arch: str
    correct: np.ndarray  # (seeds, rows) booleans

    @property
    def accuracies(self) -> list[float]:
        return self.correct.mean(axis=1).tolist()

    @property
    def mean(self) -> float:
        return statistics.mean(self.accuracies)

    @property
    def seed_interval(self) -> tuple[float, float] | None:
        return mean_interval(self.accuracies)

    @property
    def rows_interval(self) -> tuple[float, float]:
        """What the number of test rows alone allows around the mean accuracy (Wilson)."""
        return wilson_interval(self.mean, self.correct.shape[1])


@dataclass
class Comparison:
    """An architecture against its split's best: None fields on the best's own line."""

    scores: Scores
    difference: float | None = None  # the best's accuracy minus this one's, on the same rows
    p_holm: float | None = None  # paired test, Holm-adjusted over the split's comparisons
    prob_best_above: tuple[float, float, float] | None = None  # P(best > this): estimate, interval low, high

    @property
    def rows_separate(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA

    @property
    def seeds_separate(self) -> bool:
        return self.prob_best_above is not None and self.prob_best_above[1] > 0.5

    @property
    def verdict(self) -> str:
        if self.difference is None:
            return "best"
        if self.rows_separate and self.seeds_separate:
            return "below"
        if not self.rows_separate:
            return "tied: test rows"
        return "tied: seeds" if self.prob_best_above is not None else "tied: one seed"


def compare(scores: list[Scores]) -> list[Comparison]:
    """The split's architectures, best first, each compared with the best."""
    ranked = sorted(scores, key=lambda s: (-s.mean, s.arch))
    best, others = ranked[0], ranked[1:]
    tests = [paired_test(best.correct, other.correct) for other in others]
    adjusted = holm([p for _, p in tests])
    comparisons = [Comparison(best)]
    for other, (difference, _), p in zip(others, tests, adjusted):
        several_seeds = min(len(best.accuracies), len(other.accuracies)) >= 2
        prob = prob_outperform(best.accuracies, other.accuracies) if several_seeds else None
        comparisons.append(Comparison(other, difference, p, prob))
    return comparisons


def correctness(predictions: pd.DataFrame) -> np.ndarray:
    """Each row's correctness, from a predictions table (label, probability) in row order; a probability above
    0.5 predicts positive, as torchmetrics' accuracy does."""
    if "predicted" in predictions:  # more than two classes
        return predictions["predicted"].to_numpy() == predictions["label"].to_numpy()
    return (predictions["probability"].to_numpy() > 0.5) == predictions["label"].to_numpy().astype(bool)


def prediction_runs(study, split: str) -> list[str]:
    """The runs holding a study's predictions on the split: its replicates', else its best trial's (logged to the
    study's own run)."""
    replicates = [r.run_id for r in study.replicates if f"{split}/acc" in r.metrics]
    return replicates or ([study.run_id] if f"{split}/acc" in study.metrics else [])


def split_scores(client, studies, split: str, folder: Path) -> list[Scores]:
    """Each study's Scores on the split, from the predictions its runs logged (downloaded under `folder`)."""
    scores, labels = [], None
    for study in studies:
        correct = []
        for run_id in prediction_runs(study, split):
            name = f"{split}_predictions.csv"
            if name not in {a.path for a in client.list_artifacts(run_id)}:
                continue  # a run logged before predictions were kept
            path = client.download_artifacts(run_id, name, str(folder / run_id))
            predictions = pd.read_csv(path).sort_values("row")
            if labels is None:
                labels = predictions["label"].to_numpy()
            elif not np.array_equal(labels, predictions["label"].to_numpy()):
                raise ReportError(f"{study.dataset}/{study.arch}: its {split} predictions (run {run_id}) are on other "
                                  "rows than the other architectures': were the studies run with other data settings?")
            correct.append(correctness(predictions))
        if correct:
            scores.append(Scores(study.arch, np.stack(correct)))
    return scores


@dataclass
class SplitComparison:
    dataset: str
    split: str  # test or heldout
    rows: int
    comparisons: list[Comparison]  # best first

    @property
    def title(self) -> str:
        return f"{dataset_title(self.dataset)} {SPLIT_TITLES[self.split]} ({self.rows:,} rows)"

    @property
    def best(self) -> Comparison:
        return self.comparisons[0]

    def with_verdict(self, prefix: str) -> list[Comparison]:
        return [c for c in self.comparisons[1:] if c.verdict.startswith(prefix)]


SPLIT_TITLES = {"test": "test", "heldout": "held-out"}
# What each test split can and cannot tell, where a dataset has two.
SPLIT_NOTES = {
    ("sentiment140", "test"): "human labels (positive or negative; the neutral tweets dropped): the task users care "
                              "about, but too few rows to separate accuracies a few points apart.",
    ("sentiment140", "heldout"): "tweets set aside from the training file before any training or tuning: the "
                                 "distribution and the noisy emoticon-derived labels the models learnt from. Enough "
                                 "rows to rank the architectures on that task; it does not say how they agree with "
                                 "people.",
}


def split_comparisons(client: MlflowClient, studies: list[Study], datasets: list[str],
                      folder: Path) -> list[SplitComparison]:
    """For each dataset and test split with predictions, every architecture compared with the best."""
    found = []
    for dataset in datasets:
        for split in SPLIT_TITLES:
            scores = split_scores(client, [s for s in studies if s.dataset == dataset], split, folder)
            if scores:
                found.append(SplitComparison(dataset, split, scores[0].correct.shape[1], compare(scores)))
    return found


def significance_table(split: SplitComparison, studies: list[Study]) -> list[str]:
    best_trial = {s.arch: s.metrics.get(f"{split.split}/acc") for s in studies if s.dataset == split.dataset}
    best = split.best.scores.arch
    lines = [f"| architecture | seeds | acc % (mean) | 95% interval over seeds | 95% interval from the rows (Wilson) "
             f"| best trial's acc % | points behind `{best}` | paired p (Holm) | P(`{best}` > it) [95% bootstrap] "
             "| verdict |", "|" + "---|" * 10]
    for c in split.comparisons:
        s = c.scores
        behind = "–" if c.difference is None else f"{100 * c.difference:.2f}"
        lines.append(f"| `{s.arch}` | {len(s.accuracies)} | {pct(s.mean)} | {interval(s.seed_interval)} "
                     f"| {interval(s.rows_interval)} | {pct(best_trial.get(s.arch))} | {behind} "
                     f"| {p_value(c.p_holm)} | {probability(c.prob_best_above)} | {c.verdict} |")
    return lines
