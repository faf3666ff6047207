"""One architecture at two training budgets: this sweep's mean test accuracy over its seeds beside another sweep's
from the same store (`nox -s report -- reference --against default`), and each architecture's rank in both."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.report.collect import Study, median_or_none
from bench.report.format import dataset_title, interval, num, pct
from bench.stats import mean_interval


@dataclass
class SeedMean:
    """A study's test accuracies over its seeds (its replicates; its best trial where it has none), on one split."""

    arch: str
    accuracies: list[float]
    seconds: float | None  # median training seconds of those seeds

    @property
    def mean(self) -> float:
        return statistics.mean(self.accuracies)


def seed_means(studies: list[Study], split: str) -> dict[tuple[str, str], SeedMean]:
    """(dataset, architecture) -> its seeds' accuracies on `split` (`test` or `heldout`)."""
    means = {}
    for s in studies:
        runs = s.replicates or ([s.best] if s.best else [])
        accuracies = [r.metrics[f"{split}/acc"] for r in runs if f"{split}/acc" in r.metrics]
        if accuracies:
            seconds = median_or_none(r.train_seconds for r in runs if r.train_seconds is not None)
            means[(s.dataset, s.arch)] = SeedMean(s.arch, accuracies, seconds)
    return means


def _ranks(means: dict[tuple[str, str], SeedMean], dataset: str) -> dict[str, int]:
    ranked = sorted((m for (d, _), m in means.items() if d == dataset), key=lambda m: (-m.mean, m.arch))
    return {m.arch: i + 1 for i, m in enumerate(ranked)}


def _cell(mean: SeedMean | None, rank: int | None) -> str:
    if mean is None:
        return "– | – | – | –"
    spread = interval(mean_interval(mean.accuracies))
    return f"{len(mean.accuracies)} | {num(mean.seconds)} | {pct(mean.mean)} ({spread}) | {rank}"


def against_table(this: str, studies: list[Study], other: str, other_studies: list[Study]) -> list[str]:
    """Per dataset and split (the held-out one where there is one: it has the rows to rank), each architecture's
    mean test accuracy in both sweeps, best of this sweep first."""
    lines = [f"| dataset | split | architecture | `{other}`: seeds | median train s | mean acc % (95% interval) | "
             f"rank | `{this}`: seeds | median train s | mean acc % (95% interval) | rank |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for split in ("test", "heldout"):
        mine, theirs = seed_means(studies, split), seed_means(other_studies, split)
        for dataset in dict.fromkeys(d for d, _ in mine):
            my_ranks, their_ranks = _ranks(mine, dataset), _ranks(theirs, dataset)
            for arch in sorted(my_ranks, key=my_ranks.get):
                lines.append(f"| {dataset_title(dataset)} | {split} | `{arch}` | "
                             f"{_cell(theirs.get((dataset, arch)), their_ranks.get(arch))} | "
                             f"{_cell(mine[(dataset, arch)], my_ranks[arch])} |")
    return lines
