"""Time to target: for each seed of a study's best configuration, the seconds its validation accuracy took to first
reach the dataset's target; the median over the seeds, against the fastest architecture's."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from bench.report.collect import Study, history, median_or_none
from bench.report.format import dataset_title, num, pct


@dataclass
class TargetRow:
    arch: str
    target: float
    seconds: list[float | None]  # per seed: seconds until validation accuracy first reached the target, or None

    @property
    def reached(self) -> int:
        return sum(s is not None for s in self.seconds)

    @property
    def median(self) -> float | None:
        return median_or_none(s for s in self.seconds if s is not None)


def time_to_target(client: MlflowClient, studies: list[Study]) -> list[TargetRow]:
    """For each study with a target and replicates, each replicate's seconds to reach the target."""
    rows = []
    for s in studies:
        if "target_val_acc" not in s.tags or not s.replicates:
            continue
        target, seconds = float(s.tags["target_val_acc"]), []
        for replicate in s.replicates:
            acc = history(client, replicate.run_id, "val/acc")
            elapsed = history(client, replicate.run_id, "time/elapsed_s")
            seconds.append(next((elapsed[k] for k in sorted(set(acc) & set(elapsed)) if acc[k] >= target), None))
        rows.append(TargetRow(s.arch, target, seconds))
    return rows


def time_to_target_table(targets: dict[str, list[TargetRow]]) -> list[str]:
    lines = ["| dataset | target val acc % | architecture | seeds that reached it | median s to reach it | "
             "x the fastest |", "|---|---|---|---|---|---|"]
    for dataset, rows in targets.items():
        medians = [r.median for r in rows if r.median is not None]
        for r in sorted(rows, key=lambda r: (r.median is None, r.median or 0, r.arch)):
            ratio = "–" if r.median is None else f"{r.median / min(medians):.1f}"
            lines.append(f"| {dataset_title(dataset)} | {pct(r.target)} | `{r.arch}` "
                         f"| {r.reached}/{len(r.seconds)} | {num(r.median)} | {ratio} |")
    return lines if len(lines) > 2 else []
