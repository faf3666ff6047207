"""What a report shows, read and computed from the store: the studies, each dataset's leaderboard rows, the
significance tests, the time to target and the probes' results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.report.collect import Study, collect
from bench.report.convergence import Curve, budget_curves
from bench.report.format import DATASET_TITLES
from bench.report.leaderboard import Row, leaderboard_rows
from bench.report.probes import ProbedStudy, collect_probes
from bench.report.significance import SplitComparison, split_comparisons
from bench.report.targets import TargetRow, time_to_target


@dataclass
class Collected:
    """What a report shows, as read and computed from the store."""

    studies: list[Study]
    experiment_id: str
    rows_by_dataset: dict[str, list[Row]]  # leaderboard rows, dataset by dataset
    splits: list[SplitComparison]  # per dataset and test split: every architecture against the best
    targets: dict[str, list[TargetRow]]  # per dataset: seconds to the target validation accuracy
    probes: list[ProbedStudy]  # the probed studies' probe metrics and sets
    curves: dict[str, list[Curve]]  # per dataset: each study's replicates' best-so-far validation accuracy
    against: tuple[str, list[Study]] | None = None  # another sweep of the same store, to set beside this one

    @property
    def datasets(self) -> list[str]:
        return list(self.rows_by_dataset)


def collect_all(client: MlflowClient, sweep: str, downloads: Path, against: str | None = None) -> Collected:
    studies, experiment_id = collect(client, sweep)
    datasets = sorted({s.dataset for s in studies}, key=lambda d: (list(DATASET_TITLES).index(d)
                                                                     if d in DATASET_TITLES else 99, d))
    of = {d: [s for s in studies if s.dataset == d] for d in datasets}
    targets = {d: rows for d in datasets if (rows := time_to_target(client, of[d]))}
    return Collected(studies, experiment_id, {d: leaderboard_rows(client, of[d]) for d in datasets},
                     split_comparisons(client, studies, datasets, downloads), targets,
                     collect_probes(client, studies, downloads), budget_curves(client, studies),
                     (against, collect(client, against)[0]) if against else None)
