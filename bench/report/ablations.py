"""Ablations: each recipe element measured with and without it on the same seeds: the best configuration's
replicates against its ablations (the same seeds, one parameter changed), paired seed by seed."""

from __future__ import annotations

import statistics

from bench.report.collect import Study
from bench.report.format import dataset_title, pct, short
from bench.stats import mean_interval


def _split(study: Study) -> str:
    """The split the pairs are read on: the held-out one where the dataset has one (it has the rows to rank)."""
    return "heldout" if any("heldout/acc" in r.metrics for r in study.replicates) else "test"


def _signed_interval(bounds: tuple[float, float] | None) -> str:
    return "–" if bounds is None else f"{pct(bounds[0])} to {pct(bounds[1])}"  # "a-b" misreads with negatives


def ablation_rows(study: Study) -> list[str]:
    split = _split(study)
    replicates = {r.number: r for r in study.replicates if f"{split}/acc" in r.metrics}
    rows = []
    for param, ablations in sorted(study.ablations.items()):
        pairs = [(replicates[a.number], a) for a in ablations if a.number in replicates and f"{split}/acc" in a.metrics]
        if not pairs:
            continue
        best, changed = ([run.metrics[f"{split}/acc"] for run in side] for side in zip(*pairs))
        differences = [b - c for b, c in zip(best, changed)]
        spread = mean_interval(differences)
        if spread is None or spread[0] <= 0 <= spread[1]:
            verdict = "no difference beyond the seeds"
        else:
            verdict = "the best's value is better" if spread[0] > 0 else "the change is better"
        rows.append(f"| {dataset_title(study.dataset)} | `{study.arch}` | {split} | `{param}` | "
                    f"{short(pairs[0][0].params.get(param, '?'))} | {short(pairs[0][1].params.get(param, '?'))} | "
                    f"{len(pairs)} | {pct(statistics.mean(best))} | {pct(statistics.mean(changed))} | "
                    f"{pct(statistics.mean(differences))} ({_signed_interval(spread)}) | {verdict} |")
    return rows


def section(studies: list[Study]) -> list[str]:
    rows = [row for s in studies for row in ablation_rows(s)]
    if not rows:
        return []
    return ["## Ablations", "",
            "Each recipe element measured with and without it on the same seeds: the best configuration's replicates "
            "against the same seeds retrained with one parameter changed (`ablations` in the config), each tested "
            "once. The difference is the best's accuracy minus the changed one's, seed by seed, with Student's t "
            "interval over the paired seeds.", "",
            "| dataset | architecture | split | parameter | best's value | changed to | seeds | best's mean acc % | "
            "changed mean acc % | difference, points (95% interval) | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
