"""The report's findings: the claims the significance tests and the time to target support, dataset by dataset, and
the seed articles' published figures against the mean over the seeds."""

from __future__ import annotations

from bench.report.format import dataset_title, interval, num, p_value, pct, probability
from bench.report.significance import ALPHA, Comparison, SplitComparison
from bench.report.targets import TargetRow

# Published figures of the seed articles (shared/seeds), for comparison only.
SEED_FIGURES = {
    ("imdb", "simple_rnn"): [(83.25, "seed 003, Keras SimpleRNN(32), 10,000 words, 500 tokens, 5 epochs")],
    ("imdb", "lstm"): [(84.41, "seed 004, R Keras LSTM(64), 2,500 words, 100 tokens")],
}


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
        lines += _seed_article_claims(title, [s for s in dataset_splits if s.split == "test"])
    return lines


def _seed_article_claims(title: str, test_splits: list[SplitComparison]) -> list[str]:
    """Each architecture's mean test accuracy over its seeds, with its interval, against a seed article's published
    run: a mean against one run, not a best trial picked from several."""
    lines = []
    for split in test_splits:
        for c in split.comparisons:
            s = c.scores
            for figure, source in SEED_FIGURES.get((split.dataset, s.arch), []):
                diff = 100 * s.mean - figure
                spread = f" (95% interval {interval(s.seed_interval)})" if s.seed_interval else " (one seed)"
                lines.append(f"- {title}: `{s.arch}`'s mean test accuracy over {len(s.accuracies)} seed(s) is "
                             f"{pct(s.mean)}%{spread} against {figure:.2f}% in {source}: {abs(diff):.2f} points "
                             f"{'above' if diff >= 0 else 'below'}.")
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
