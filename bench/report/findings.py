"""The report's findings: the claims the significance tests and the time to target support, dataset by dataset."""

from __future__ import annotations

from bench.report.format import dataset_title, num, p_value, pct, probability
from bench.report.significance import ALPHA, Comparison, SplitComparison
from bench.report.targets import TargetRow


def _names(comparisons: list[Comparison], why=None) -> str:
    return ", ".join(f"`{c.scores.arch}`" + (f" ({why(c)})" if why else "") for c in comparisons)


def split_finding(split: SplitComparison) -> str:
    """The best of a split, which architectures the data cannot tell apart from it and why, and which are below."""
    best = split.best.scores
    claim = (f"- {split.title}: the highest mean accuracy over {len(best.accuracies)} seed(s) is `{best.arch}`'s, "
             f"{pct(best.mean)}%")
    rows_tied = split.with_verdict("tied: test rows")
    if rows_tied:
        claim += (f"; the test rows cannot tell {_names(rows_tied, lambda c: f'p = {p_value(c.p_holm)}')} apart "
                  "from it (paired test, Holm)")
    seeds_tied = split.with_verdict("tied: seeds")
    if seeds_tied:
        claim += (f"; the spread over seeds cannot tell "
                  f"{_names(seeds_tied, lambda c: f'P = {probability(c.prob_best_above)}')} apart from it, though the "
                  "rows can")
    one_seed = split.with_verdict("tied: one seed")
    if one_seed:
        claim += f"; {_names(one_seed)} differ from it on the rows, but with one seed each their spread is unknown"
    below = split.with_verdict("below")
    if below:
        claim += (f"; `{best.arch}` beats {_names(below)} (paired p < {ALPHA} after Holm, and the interval of P "
                  "above 0.5)")
    return claim + "."


def findings(datasets: list[str], splits: list[SplitComparison], targets: dict[str, list[TargetRow]]) -> list[str]:
    """Claims computed from the tables, and only those that their tests support."""
    lines = []
    for dataset in datasets:
        title = dataset_title(dataset)
        dataset_splits = [s for s in splits if s.dataset == dataset]
        if not dataset_splits:
            lines.append(f"- {title}: no architecture has a test accuracy yet.")
            continue
        lines += [split_finding(s) for s in dataset_splits]
        tied = {c.scores.arch for c in dataset_splits[0].comparisons if c.verdict != "below"}
        lines += _fastest_claim(title, [t for t in targets.get(dataset, []) if t.arch in tied])
    return lines


def _fastest_claim(title: str, targets: list[TargetRow]) -> list[str]:
    reached = sorted((t for t in targets if t.median is not None), key=lambda t: (t.median, t.arch))
    if not reached:
        return []
    fastest, target = reached[0], reached[0].target
    others = ", ".join(f"`{t.arch}` {num(t.median)} s" for t in reached[1:])
    return [f"- {title}: of the architectures not below the best on test, `{fastest.arch}` reaches {pct(target)}% "
            f"validation accuracy soonest: median {num(fastest.median)} s over its {fastest.reached} seed(s) that "
            f"reached it" + (f" ({others})." if others else ".")]
