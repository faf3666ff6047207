"""Convergence and budget: why each replicate's training ended (patience or the epoch cap), so whether its study
converged; and the replicates' mean best-so-far validation accuracy against seconds, with the ranking of the
architectures it gives at each training budget and where two architectures' curves cross."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from bench.report.collect import Study, history
from bench.report.format import dataset_title, num, pct

BUDGETS = (10, 30, 100, 300, 1000)  # seconds of training at which the ranking table reads the curves


def stop_counts(study: Study) -> dict[str, int]:
    """How many of the study's replicates ended by patience, and how many at the epoch cap."""
    reasons = [r.stopped_by for r in study.replicates]
    return {"patience": reasons.count("patience"), "epoch cap": reasons.count("epoch cap")}


def convergence(study: Study) -> str:
    """`converged` when every replicate ended by patience (its val/acc stopped improving before the cap), `capped`
    when one reached the epoch cap, `unknown` for replicates that predate the stopped_by tag."""
    counts = stop_counts(study)
    if not study.replicates or sum(counts.values()) < len(study.replicates):
        return "unknown"
    return "converged" if counts["epoch cap"] == 0 else "capped"


@dataclass
class Curve:
    """A study's replicates at each validation: mean seconds since training started, and the mean and standard
    deviation of their best validation accuracy so far (a replicate that has stopped keeps its final best)."""

    arch: str
    seconds: list[float]
    mean: list[float]
    std: list[float]

    def at(self, budget: float) -> float | None:
        """The mean best-so-far accuracy with `budget` seconds of training: its last validation by then."""
        reached = [m for s, m in zip(self.seconds, self.mean) if s <= budget]
        return reached[-1] if reached else None


def budget_curve(client: MlflowClient, study: Study) -> Curve | None:
    runs = []
    for replicate in study.replicates:
        acc, elapsed = history(client, replicate.run_id, "val/acc"), history(client, replicate.run_id, "time/elapsed_s")
        steps = sorted(set(acc) & set(elapsed))
        if steps:
            best = [max(acc[k] for k in steps[: i + 1]) for i in range(len(steps))]
            runs.append(([elapsed[k] for k in steps], best))
    if not runs:
        return None
    longest = max(len(seconds) for seconds, _ in runs)
    seconds = [statistics.mean(s[i] for s, _ in runs if i < len(s)) for i in range(longest)]
    values = [[best[min(i, len(best) - 1)] for _, best in runs] for i in range(longest)]
    return Curve(study.arch, seconds, [statistics.mean(v) for v in values],
                 [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values])


def budget_curves(client: MlflowClient, studies: list[Study]) -> dict[str, list[Curve]]:
    """Dataset -> a curve per study with replicates."""
    curves: dict[str, list[Curve]] = {}
    for s in studies:
        if (curve := budget_curve(client, s)) is not None:
            curves.setdefault(s.dataset, []).append(curve)
    return curves


def ranking(curves: list[Curve], budget: float | None) -> list[tuple[str, float]]:
    """(architecture, mean best-so-far accuracy) at `budget` seconds (None: at the end), best first; architectures
    with no validation by then left out."""
    values = [(c.arch, c.mean[-1] if budget is None else c.at(budget)) for c in curves]
    return sorted(((a, v) for a, v in values if v is not None), key=lambda av: (-av[1], av[0]))


def crossings(a: Curve, b: Curve) -> list[float]:
    """The seconds at which the lead between two curves changes hands, read at every validation of either."""
    times = sorted(t for t in {*a.seconds, *b.seconds} if t >= max(a.seconds[0], b.seconds[0]))
    signs = [(t, a.at(t) - b.at(t)) for t in times]
    changes, last = [], None
    for t, difference in signs:
        sign = (difference > 0) - (difference < 0)
        if sign and last is not None and sign != last:
            changes.append(t)
        last = sign or last
    return changes


def search_gain(study: Study) -> str:
    """The best validation accuracy after the first half of the study's finished trials, and after all of them."""
    accs = [t.val_acc for t in study.trials if t.state in ("complete", "pruned") and t.val_acc is not None]
    if not accs:
        return "–"
    half = max(1, len(accs) // 2)
    return f"{pct(max(accs[:half]))} ({half}) / {pct(max(accs))} ({len(accs)})"


def stop_table(studies: list[Study]) -> list[str]:
    lines = ["| dataset | architecture | replicates | ended by patience | ended at the epoch cap | study | best val "
             "acc %: first half of the trials / all (trials) |", "|---|---|---|---|---|---|---|"]
    for s in studies:
        counts = stop_counts(s)
        lines.append(f"| {dataset_title(s.dataset)} | `{s.arch}` | {len(s.replicates)} | {counts['patience']} | "
                     f"{counts['epoch cap']} | {convergence(s)} | {search_gain(s)} |")
    return lines


def ranking_table(curves: dict[str, list[Curve]]) -> list[str]:
    lines = ["| dataset | training budget (s) | ranking: mean best validation accuracy so far (%) |", "|---|---|---|"]
    for dataset, dataset_curves in curves.items():
        for budget in [*BUDGETS, None]:
            ranked = ranking(dataset_curves, budget)
            if budget is not None and budget > max(c.seconds[-1] for c in dataset_curves):
                continue  # every replicate has stopped by then: the same as at convergence
            shown = " > ".join(f"`{a}` {pct(v)}" for a, v in ranked) or "no validation yet"
            lines.append(f"| {dataset_title(dataset)} | {'at convergence' if budget is None else budget} | {shown} |")
    return lines


def _order(ranked: list[tuple[str, float]]) -> str:
    return " > ".join(f"`{a}`" for a, _ in ranked)


def budget_findings(curves: dict[str, list[Curve]]) -> list[str]:
    """Which ranks change with the budget, and where the curves cross."""
    lines = []
    for dataset, dataset_curves in curves.items():
        first_budget = max(c.seconds[0] for c in dataset_curves)  # every architecture has validated once
        early, final = ranking(dataset_curves, first_budget), ranking(dataset_curves, None)
        claim = (f"- {dataset_title(dataset)}: at convergence the order of the mean validation accuracy is "
                 f"{_order(final)}")
        if [a for a, _ in early] == [a for a, _ in final]:
            lines.append(claim + f"; it is the same at {num(first_budget)} s, once every architecture has validated.")
            continue
        lines.append(claim + f"; at {num(first_budget)} s, once every architecture has validated, it was "
                             f"{_order(early)}.")
        by_arch = {c.arch: c for c in dataset_curves}
        final_rank = [a for a, _ in final]
        for i, winner in enumerate(final_rank):
            for loser in final_rank[i + 1:]:
                times = crossings(by_arch[winner], by_arch[loser])
                if times and by_arch[winner].at(first_budget) < by_arch[loser].at(first_budget):
                    lines.append(f"  - `{winner}` overtakes `{loser}` at {num(times[-1])} s"
                                 + (f" (after {len(times) - 1} earlier crossing(s))" if len(times) > 1 else "") + ".")
    return lines


def section(studies: list[Study], curves: dict[str, list[Curve]], against: list[str]) -> list[str]:
    """The report's convergence and budget section; none for a store whose runs predate the stopped_by tag."""
    if not any(r.stopped_by for s in studies for r in s.replicates):
        return []
    lines = ["## Convergence", "",
             "Each replicate trains until its validation accuracy has not improved for `study.patience` epochs, or "
             "until the epoch cap. A study is *converged* when every replicate ended by patience, *capped* when one "
             "reached the cap still improving (or only just stopped improving).", "", *stop_table(studies), ""]
    if curves:
        lines += ["## Ranking against training budget", "",
                  "Each curve is the mean over a study's replicates of the best validation accuracy so far, against "
                  "the seconds since training started (validations included), with one standard deviation shaded; a "
                  "replicate that has stopped keeps its final best, which is what the budget would have bought.", "",
                  "![ranking against training budget](budget_curves.png)", "", *ranking_table(curves), "",
                  *budget_findings(curves), ""]
    return lines + against
