"""Markdown report of a sweep, generated from the MLflow tracking store alone: accuracy versus time.

reports/<sweep>/README.md with its figures beside it, and reports/README.md indexing every report.
The same store gives the same markdown (apart from the generated-at line) and the same figures.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.figures import DATASET_TITLES, arch_colors, figure_per_dataset, save_figure
from bench.probe_report import ProbedStudy, collect_probes
from bench.probe_report import section as probes_section
from bench.probe_report import write_figures as write_probe_figures
from bench.runtime import redacted
from bench.significance import ALPHA, Comparison, ReportError, compare, split_scores
from bench.stats import expected_max, wilson_interval

GENERATED_PREFIX = "_Generated at "  # the one line that differs between two reports of the same store
LIBRARIES = ["python", "torch", "lightning", "optuna", "optuna_integration", "mlflow"]
# Published figures of the seed articles (shared/seeds), for comparison only.
SEED_FIGURES = {
    ("imdb", "simple_rnn"): [(83.25, "seed 003, Keras SimpleRNN(32), 10,000 words, 500 tokens, 5 epochs")],
    ("imdb", "lstm"): [(84.41, "seed 004, R Keras LSTM(64), 2,500 words, 100 tokens")],
}


@dataclass
class Trial:
    run_id: str
    number: int
    state: str  # complete, pruned, failed, killed, or running (no final state: still running, or killed unseen)
    val_acc: float | None
    train_seconds: float | None  # wall-clock seconds of the trial's fit
    run_seconds: float  # MLflow run duration
    params: dict
    metrics: dict
    error: str = ""
    worker: str = ""  # host:pid of the process that ran it


@dataclass
class Study:
    dataset: str
    arch: str
    run_id: str
    tags: dict
    params: dict
    metrics: dict
    trials: list[Trial] = field(default_factory=list)
    # Each finished retraining of the best trial's configuration with another seed, tested once.
    replicates: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        run_id = self.tags.get("best_trial_run_id")
        return next((t for t in self.trials if t.run_id == run_id), None)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


def _seconds(run) -> float:
    end = run.info.end_time or run.info.start_time
    return (end - run.info.start_time) / 1000


def collect(client: MlflowClient, sweep: str) -> tuple[list[Study], str]:
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise ReportError(f"no sweep {sweep!r} in the tracking store {client.tracking_uri}; sweeps there: {names}")
    runs = client.search_runs([experiment.experiment_id], max_results=50_000)
    parents = {r.info.run_id: r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags}
    studies = {
        run_id: Study(r.data.tags.get("dataset", "?"), r.data.tags.get("architecture", "?"), run_id,
                      r.data.tags, r.data.params, r.data.metrics)
        for run_id, r in parents.items()
    }
    for r in runs:
        parent = r.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent not in studies:
            continue
        m = r.data.metrics
        replicate = "replicate" in r.data.tags
        if replicate and (r.data.tags.get("replicate_of_trial") != studies[parent].tags.get("best_trial")
                          or "test/acc" not in m):
            continue  # a replicate of an earlier best trial, or one that did not finish
        (studies[parent].replicates if replicate else studies[parent].trials).append(Trial(
            run_id=r.info.run_id,
            number=int(r.data.tags.get("replicate" if replicate else "trial", -1)),
            state=r.data.tags.get("state", "running"),
            val_acc=m.get("val/acc_best"),
            train_seconds=m.get("time/elapsed_s"),
            run_seconds=_seconds(r),
            params=r.data.params,
            metrics=m,
            error=r.data.tags.get("error", ""),
            worker=r.data.tags.get("worker", ""),
        ))
    for study in studies.values():
        study.trials.sort(key=lambda t: t.number)
        study.replicates.sort(key=lambda t: t.number)
    ordered = sorted(studies.values(), key=lambda s: (s.dataset, s.arch))
    return ordered, experiment.experiment_id


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _median_or_none(values) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def _interval(interval: tuple[float, float] | None) -> str:
    return "–" if interval is None else f"{_pct(interval[0])}-{_pct(interval[1])}"


def _significant(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


@dataclass
class Row:
    study: Study
    val_acc: float | None
    test: dict
    n_params: str
    train_seconds: float | None
    epoch_seconds: float | None
    tokens_per_s: float | None
    flops_per_token: float | None
    latency: float | None
    total_seconds: float

    @property
    def test_interval(self) -> tuple[float, float] | None:
        """95% interval of the test accuracy from the test set's size alone (Wilson)."""
        n = self.study.params.get("data/rows_test")
        return None if self.test["acc"] is None or n is None else wilson_interval(self.test["acc"], int(n))


def leaderboard_rows(client: MlflowClient, studies: list[Study]) -> list[Row]:
    rows = []
    for s in studies:
        best = s.best
        epoch_seconds = tokens = None
        if best is not None:
            epoch_seconds = _median_or_none(_history(client, best.run_id, "train/epoch_time_s").values())
            tokens = _median_or_none(_history(client, best.run_id, "train/tokens_per_s").values())
        rows.append(Row(
            study=s,
            val_acc=s.metrics.get("val/acc_best"),
            test={**{k: s.metrics.get(f"test/{k}") for k in ("acc", "f1", "auroc")},
                  "heldout": s.metrics.get("heldout/acc")},
            n_params=best.params.get("n_params", "–") if best else "–",
            train_seconds=best.train_seconds if best else None,
            epoch_seconds=epoch_seconds,
            tokens_per_s=tokens,
            flops_per_token=best.metrics.get("cost/train_flops_per_token") if best else None,
            latency=s.metrics.get("test/ms_per_1k_texts"),
            total_seconds=sum(t.run_seconds for t in s.trials),
        ))
    rows.sort(key=lambda r: (-(r.test["acc"] or -1), r.study.arch))
    return rows


def _mark(values: list, best_is_max: bool | None) -> set[int]:
    """Rows holding the column's best value; none for a column without a best (best_is_max None)."""
    present = [v for v in values if v is not None]
    if best_is_max is None or len(present) < 2:  # nothing to compare
        return set()
    target = max(present) if best_is_max else min(present)
    return {i for i, v in enumerate(values) if v == target}


def leaderboard(rows: list[Row], experiment_id: str) -> list[str]:
    columns = [
        ("val acc %", lambda r: r.val_acc, _pct, True),
        ("test acc %", lambda r: r.test["acc"], _pct, True),
        ("test acc 95% interval", lambda r: r.test_interval, _interval, None),
        ("test F1 %", lambda r: r.test["f1"], _pct, True),
        ("test AUROC %", lambda r: r.test["auroc"], _pct, True),
        ("held-out acc %", lambda r: r.test["heldout"], _pct, True),
        ("best trial train s", lambda r: r.train_seconds, _num, False),
        ("s / epoch", lambda r: r.epoch_seconds, _num, False),
        ("tokens / s", lambda r: r.tokens_per_s, lambda v: _num(v, 0), True),
        ("train MFLOP / token", lambda r: r.flops_per_token and r.flops_per_token / 1e6, _significant, False),
        ("ms / 1k texts", lambda r: r.latency, _num, False),
        ("study s", lambda r: r.total_seconds, _num, False),
    ]
    if all(r.test["heldout"] is None for r in rows):  # a dataset without a held-out split
        columns = [c for c in columns if c[0] != "held-out acc %"]
    header = ["architecture", "params"] + [c[0] for c in columns] + ["trials ok/pruned/failed", "MLflow runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    marks = [_mark([get(r) for r in rows], best_is_max) for _, get, _, best_is_max in columns]
    for i, r in enumerate(rows):
        cells = [f"`{r.study.arch}`", r.n_params]
        for (_, get, fmt, _), marked in zip(columns, marks):
            text = fmt(get(r))
            cells.append(f"**{text}**" if i in marked else text)
        s = r.study
        cells.append(f"{s.count('complete')}/{s.count('pruned')}/{s.count('failed')}")
        best = s.best
        links = f"study `{s.run_id[:8]}`" + (f", best trial `{best.run_id[:8]}`" if best else "")
        cells.append(links)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Bold: the best value of each column. Runs are in MLflow experiment `{experiment_id}` "
                 "(`nox -s ui`); the ids shown are the first 8 characters of each run id.")
    return lines


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats in both time (lower) and accuracy (higher)."""
    frontier, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            frontier.append((x, y))
            best = y
    return frontier


def _plain_log_ticks(ax) -> None:
    """Plain numbers at 1, 2 and 5 of each decade: the default 3x10^0 labels collide on a narrow range."""
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _finish_axes(ax, title: str, xlabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)  # placed where it hides the fewest points


# What the accuracy-versus-cost figures put on their x axis: a trial's training seconds, or its training FLOPs;
# and whether to label it with plain numbers (a narrow range of seconds) rather than powers of ten.
COSTS = {
    "time": (lambda t: t.train_seconds, "training time of the trial (s, log scale)", True),
    "flops": (lambda t: t.metrics.get("cost/train_flops"), "training FLOPs of the trial (log scale)", False),
}


def accuracy_vs_cost_figure(studies: list[Study], datasets: list[str], cost: str, path: Path) -> None:
    cost_of, xlabel, plain_ticks = COSTS[cost]
    colors = arch_colors([s.arch for s in studies])
    fig, panels = figure_per_dataset(datasets)
    for ax, dataset in panels:
        points = []
        for s in (s for s in studies if s.dataset == dataset):
            trials = [t for t in s.trials if t.val_acc is not None and cost_of(t) is not None]
            if not trials:
                continue
            xs, ys = [cost_of(t) for t in trials], [100 * t.val_acc for t in trials]
            ax.scatter(xs, ys, color=colors[s.arch], label=s.arch, alpha=0.8, s=28)
            points += zip(xs, ys)
        frontier = pareto(points)
        if not frontier:  # no trial with a cost yet: nothing to put on a log scale
            _finish_axes(ax, DATASET_TITLES.get(dataset, dataset), xlabel)
            continue
        ax.step([p[0] for p in frontier], [p[1] for p in frontier], where="post", color="black",
                linewidth=1, label="Pareto frontier")
        ax.set_xscale("log")
        if plain_ticks:
            _plain_log_ticks(ax)
        _finish_axes(ax, DATASET_TITLES.get(dataset, dataset), xlabel)
    save_figure(fig, path)


def learning_curves_figure(client: MlflowClient, studies: list[Study], datasets: list[str], path: Path) -> None:
    colors = arch_colors([s.arch for s in studies])
    fig, panels = figure_per_dataset(datasets)
    for ax, dataset in panels:
        for s in (s for s in studies if s.dataset == dataset and s.best is not None):
            acc = _history(client, s.best.run_id, "val/acc")
            seconds = _history(client, s.best.run_id, "time/elapsed_s")
            steps = sorted(set(acc) & set(seconds))
            ax.plot([seconds[k] for k in steps], [100 * acc[k] for k in steps], marker="o", markersize=3,
                    color=colors[s.arch], label=s.arch)
        _finish_axes(ax, f"{DATASET_TITLES.get(dataset, dataset)}: best trial of each architecture",
                     "wall-clock seconds since the trial started")
    save_figure(fig, path)


def tuning_budget_figure(studies: list[Study], datasets: list[str], path: Path) -> None:
    """Expected best validation accuracy after n trials (mean and one standard deviation over draws of n of the
    study's finished trials), against n (top) and against n times the study's mean trial seconds (bottom)."""
    colors = arch_colors([s.arch for s in studies])
    fig, axes = plt.subplots(2, len(datasets), figsize=(6 * len(datasets), 8), squeeze=False, layout="constrained")
    for column, dataset in enumerate(datasets):
        for s in (s for s in studies if s.dataset == dataset):
            trials = [t for t in s.trials if t.state in ("complete", "pruned") and t.val_acc is not None]
            if not trials:
                continue
            budgets = range(1, len(trials) + 1)
            mean, std = zip(*(expected_max([100 * t.val_acc for t in trials], n) for n in budgets))
            low, high = [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)]
            seconds_per_trial = statistics.mean(t.run_seconds for t in trials)
            seconds = [n * seconds_per_trial for n in budgets]
            for ax, xs in ((axes[0][column], list(budgets)), (axes[1][column], seconds)):
                ax.plot(xs, mean, color=colors[s.arch], label=s.arch, marker="o", markersize=3)
                ax.fill_between(xs, low, high, color=colors[s.arch], alpha=0.15, linewidth=0)
        title = DATASET_TITLES.get(dataset, dataset)
        _finish_axes(axes[0][column], title, "tuning budget (trials)")
        axes[1][column].set_xscale("log")
        _plain_log_ticks(axes[1][column])
        _finish_axes(axes[1][column], title, "tuning budget (seconds: trials x mean trial seconds, log scale)")
        for ax in axes[:, column]:
            ax.set_ylabel("expected best validation accuracy (%)")
    save_figure(fig, path)


@dataclass
class SplitComparison:
    dataset: str
    split: str  # test or heldout
    rows: int
    comparisons: list[Comparison]  # best first

    @property
    def title(self) -> str:
        return f"{DATASET_TITLES.get(self.dataset, self.dataset)} {SPLIT_TITLES[self.split]} ({self.rows:,} rows)"

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


def _p_value(p: float | None) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _probability(prob: tuple[float, float, float] | None) -> str:
    return "–" if prob is None else f"{prob[0]:.2f} [{prob[1]:.2f}, {prob[2]:.2f}]"


def significance_table(split: SplitComparison, studies: list[Study]) -> list[str]:
    best_trial = {s.arch: s.metrics.get(f"{split.split}/acc") for s in studies if s.dataset == split.dataset}
    best = split.best.scores.arch
    lines = [f"| architecture | seeds | acc % (mean) | 95% interval over seeds | 95% interval from the rows (Wilson) "
             f"| best trial's acc % | points behind `{best}` | paired p (Holm) | P(`{best}` > it) [95% bootstrap] "
             "| verdict |", "|" + "---|" * 10]
    for c in split.comparisons:
        s = c.scores
        behind = "–" if c.difference is None else f"{100 * c.difference:.2f}"
        lines.append(f"| `{s.arch}` | {len(s.accuracies)} | {_pct(s.mean)} | {_interval(s.seed_interval)} "
                     f"| {_interval(s.rows_interval)} | {_pct(best_trial.get(s.arch))} | {behind} "
                     f"| {_p_value(c.p_holm)} | {_probability(c.prob_best_above)} | {c.verdict} |")
    return lines


def _names(comparisons: list[Comparison], why=None) -> str:
    return ", ".join(f"`{c.scores.arch}`" + (f" ({why(c)})" if why else "") for c in comparisons)


def split_finding(split: SplitComparison) -> str:
    """The best of a split, which architectures the data cannot tell apart from it and why, and which are below."""
    best = split.best.scores
    claim = (f"- {split.title}: the highest mean accuracy over {len(best.accuracies)} seed(s) is `{best.arch}`'s, "
             f"{_pct(best.mean)}%")
    rows_tied = split.with_verdict("tied: test rows")
    if rows_tied:
        claim += (f"; the test rows cannot tell {_names(rows_tied, lambda c: f'p = {_p_value(c.p_holm)}')} apart "
                  "from it (paired test, Holm)")
    seeds_tied = split.with_verdict("tied: seeds")
    if seeds_tied:
        claim += (f"; the spread over seeds cannot tell "
                  f"{_names(seeds_tied, lambda c: f'P = {_probability(c.prob_best_above)}')} apart from it, though the "
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
        title = DATASET_TITLES.get(dataset, dataset)
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
                spread = f" (95% interval {_interval(s.seed_interval)})" if s.seed_interval else " (one seed)"
                lines.append(f"- {title}: `{s.arch}`'s mean test accuracy over {len(s.accuracies)} seed(s) is "
                             f"{_pct(s.mean)}%{spread} against {figure:.2f}% in {source}: {abs(diff):.2f} points "
                             f"{'above' if diff >= 0 else 'below'}.")
    return lines


def _fastest_claim(title: str, targets: list[TargetRow]) -> list[str]:
    reached = sorted((t for t in targets if t.median is not None), key=lambda t: (t.median, t.arch))
    if not reached:
        return []
    fastest, target = reached[0], reached[0].target
    others = ", ".join(f"`{t.arch}` {_num(t.median)} s" for t in reached[1:])
    return [f"- {title}: of the architectures not below the best on test, `{fastest.arch}` reaches {_pct(target)}% "
            f"validation accuracy soonest: median {_num(fastest.median)} s over its {fastest.reached} seed(s) that "
            f"reached it" + (f" ({others})." if others else ".")]


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
        return _median_or_none(s for s in self.seconds if s is not None)


def time_to_target(client: MlflowClient, studies: list[Study]) -> list[TargetRow]:
    """For each study with a target and replicates, each replicate's seconds to reach the target."""
    rows = []
    for s in studies:
        if "target_val_acc" not in s.tags or not s.replicates:
            continue
        target, seconds = float(s.tags["target_val_acc"]), []
        for replicate in s.replicates:
            acc = _history(client, replicate.run_id, "val/acc")
            elapsed = _history(client, replicate.run_id, "time/elapsed_s")
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
            lines.append(f"| {DATASET_TITLES.get(dataset, dataset)} | {_pct(r.target)} | `{r.arch}` "
                         f"| {r.reached}/{len(r.seconds)} | {_num(r.median)} | {ratio} |")
    return lines if len(lines) > 2 else []


def _data_table(studies: list[Study], datasets: list[str]) -> list[str]:
    lines = ["| dataset | train | val | test | test rows dropped | vocabulary | train tokens per text "
             "(mean / median / p95 / max) |", "|---|---|---|---|---|---|---|"]
    for dataset in datasets:
        p = next((s.params for s in studies if s.dataset == dataset and "data/rows_train" in s.params), {})
        tokens = " / ".join(p.get(f"data/train_tokens_{k}", "–") for k in ("mean", "median", "p95", "max"))
        lines.append(f"| {DATASET_TITLES.get(dataset, dataset)} | {p.get('data/rows_train', '–')} | "
                     f"{p.get('data/rows_val', '–')} | {p.get('data/rows_test', '–')} | "
                     f"{p.get('data/dropped_test_rows', '–')} | {p.get('data/vocab_size', '–')} | {tokens} |")
    return lines


def _short(value: str) -> str:
    """A float parameter to 4 significant digits; anything else as logged."""
    if "." in value or "e-" in value:
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value


def _architecture_details(studies: list[Study]) -> list[str]:
    lines = []
    for s in studies:
        best_params = {k[len("best/"):]: v for k, v in sorted(s.tags.items()) if k.startswith("best/")}
        importances = sorted(((k[len("importance/"):], v) for k, v in s.metrics.items()
                              if k.startswith("importance/")), key=lambda kv: (-kv[1], kv[0]))
        params = ", ".join(f"`{k}={_short(v)}`" for k, v in best_params.items()) or "none (no completed trial)"
        imp = ", ".join(f"`{k}` {v:.2f}" for k, v in importances) or "not computed (too few completed trials)"
        lines.append(f"| {DATASET_TITLES.get(s.dataset, s.dataset)} | `{s.arch}` | {params} | {imp} |")
    return ["| dataset | architecture | best hyperparameters | importance (fANOVA) |", "|---|---|---|---|"] + lines


def _problems(studies: list[Study]) -> list[str]:
    lines = []
    for s in studies:
        name = f"{s.dataset}/{s.arch}"
        if not any(t.state in ("complete", "pruned") for t in s.trials):
            lines.append(f"- `{name}`: no finished trial yet.")
        elif s.metrics.get("test/acc") is None:
            lines.append(f"- `{name}`: no test accuracy yet (no completed trial, or the study is still running).")
        for t in s.trials:
            if t.state == "failed":
                error = t.error or "no error recorded"
                lines.append(f"- `{name}` trial {t.number} failed (run `{t.run_id[:8]}`): {error}")
            elif t.state == "killed":
                lines.append(f"- `{name}` trial {t.number} was killed with its process (run `{t.run_id[:8]}`); a "
                             "later run retried its parameters.")
            elif t.state == "running":
                lines.append(f"- `{name}` trial {t.number} has no final state: still running, or killed.")
    return lines


@dataclass
class Collected:
    """What a report shows, as read and computed from the store."""

    studies: list[Study]
    experiment_id: str
    rows_by_dataset: dict[str, list[Row]]  # leaderboard rows, dataset by dataset
    splits: list[SplitComparison]  # per dataset and test split: every architecture against the best
    targets: dict[str, list[TargetRow]]  # per dataset: seconds to the target validation accuracy
    probes: list[ProbedStudy]  # the probed studies' probe metrics and sets

    @property
    def datasets(self) -> list[str]:
        return list(self.rows_by_dataset)


def collect_all(client: MlflowClient, sweep: str, downloads: Path) -> Collected:
    studies, experiment_id = collect(client, sweep)
    datasets = sorted({s.dataset for s in studies}, key=lambda d: (list(DATASET_TITLES).index(d)
                                                                     if d in DATASET_TITLES else 99, d))
    of = {d: [s for s in studies if s.dataset == d] for d in datasets}
    targets = {d: rows for d in datasets if (rows := time_to_target(client, of[d]))}
    return Collected(studies, experiment_id, {d: leaderboard_rows(client, of[d]) for d in datasets},
                     split_comparisons(client, studies, datasets, downloads), targets,
                     collect_probes(client, studies, downloads))


def write_report(sweep: str, tracking_uri: str, out_dir: Path = Path("reports"), now: dt.datetime | None = None,
                 log=print) -> Path:
    """Collect the sweep's runs, render the markdown, draw the figures, write them and the index."""
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as downloads:  # the predictions, read once
        report = collect_all(client, sweep, Path(downloads))
    generated = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    markdown = render_markdown(sweep, report, f"{GENERATED_PREFIX}{generated} from the MLflow store "
                                              f"`{redacted(tracking_uri)}` by `nox -s report -- {sweep}`._")
    folder = out_dir / sweep
    folder.mkdir(parents=True, exist_ok=True)
    studies, datasets = report.studies, report.datasets
    for cost in COSTS:
        accuracy_vs_cost_figure(studies, datasets, cost, folder / f"accuracy_vs_{cost}.png")
    learning_curves_figure(client, studies, datasets, folder / "learning_curves.png")
    tuning_budget_figure(studies, datasets, folder / "tuning_budget.png")
    write_probe_figures(report.probes, datasets, folder)
    (folder / "README.md").write_text(markdown)
    write_index(out_dir)
    log(f"report written to {folder / 'README.md'}")
    return folder / "README.md"


def _header(studies: list[Study]) -> list[str]:
    tags = studies[0].tags if studies else {}
    trial_seconds = [t.run_seconds for s in studies for t in s.trials]
    workers = {t.worker for s in studies for t in s.trials + s.replicates if t.worker}
    hosts = {w.rsplit(":", 1)[0] for w in workers}
    return [
        f"- Config: `{tags.get('config', '?')}` (sha256 of the validated config `{tags.get('config_sha256', '?')}`); "
        f"git commit `{tags.get('git_commit', '?')[:12]}`",
        f"- Machine: {tags.get('cpu', '?')}, {tags.get('cores', '?')} cores, GPU: {tags.get('gpu', '?')}; "
        f"device used: {tags.get('device', '?')}",
        "- Libraries: " + ", ".join(f"{lib} {tags.get(lib, '?')}" for lib in LIBRARIES),
        f"- Studies: {len(studies)}; trials: {len(trial_seconds)}; time in trials: "
        f"{_num(sum(trial_seconds) / 60)} min; worker processes: "
        + (f"{len(workers)}, on {len(hosts)} host(s)" if workers else "not recorded (runs older than the tag)"),
    ]


def render_markdown(sweep: str, report: Collected, generated_line: str) -> str:
    """The report's README.md, from what collect_all() read and computed."""
    lines = [f"# Sweep `{sweep}`: accuracy versus time", "", generated_line, "", *_header(report.studies), "",
             "## Data", "", *_data_table(report.studies, report.datasets), "",
             "## Accuracy versus cost", "",
             "Every trial is a point: validation accuracy of its best epoch against the wall-clock time of its "
             "training (this machine's cost), and against its training FLOPs (a cost that does not depend on the "
             "machine: FLOPs per token counted by PyTorch's FlopCounterMode on a training batch, times the tokens "
             "trained on; matrix multiplications only, so averaging's embedding means are not counted). The black "
             "line is the Pareto frontier: no trial is both cheaper and more accurate.", "",
             "![accuracy versus training time](accuracy_vs_time.png)", "",
             "![accuracy versus training FLOPs](accuracy_vs_flops.png)", ""]
    for dataset in report.datasets:
        lines += [f"## Leaderboard: {DATASET_TITLES.get(dataset, dataset)}", "",
                  *leaderboard(report.rows_by_dataset[dataset], report.experiment_id), ""]
    lines += [
        "Columns: validation accuracy of the study's best trial; test metrics of that trial, evaluated once (and "
        "on the held-out split where the dataset has one); its parameter count, training time, median seconds per "
        "epoch, training tokens per second and training FLOPs per token (forward and backward); inference time "
        "per 1,000 test texts; the study's total trial time.",
        "", *_uncertainty_sections(report),
        "## Learning curves", "", "![learning curves](learning_curves.png)", "",
        "## Accuracy against tuning budget", "",
        "What a user pays is a tuning budget, not one trial. Each curve is the expected best validation accuracy "
        "after n of the study's finished trials (complete or pruned), with one standard deviation, by the unbiased "
        "without-replacement estimator of Dodge et al. 2019 and Tang et al. 2020; in seconds, n times the study's "
        "mean trial time. It assumes i.i.d. trials: TPE and pruning make later trials depend on earlier ones, so "
        "read it as indicative; `sweeps/iid.yaml` (random sampler, no pruner) meets the assumption.", "",
        "![accuracy against tuning budget](tuning_budget.png)", "",
        "## Findings", "", *findings(report.datasets, report.splits, report.targets), "",
        *probes_section(report.probes, report.datasets),
        "## Best hyperparameters and their importance", "", *_architecture_details(report.studies), "",
    ]
    problems = _problems(report.studies)
    if problems:
        lines += ["## Missing or failed", "", *problems, ""]
    return "\n".join(lines)


def _uncertainty_sections(report: Collected) -> list[str]:
    """Which architectures the data can tell apart, and the time each takes to reach a target."""
    if not report.splits:
        return []
    lines = ["## Which architectures the data can tell apart", "",
             "Each study's best configuration is retrained with other seeds (initialisation, data order and dropout; "
             "the same splits), each tested once; a study without replicates counts its best trial as one seed. On "
             "each test split:",
             "- **interval over seeds**: Student's t over the seeds' accuracies (scipy.stats); assumes they are "
             "normally distributed.",
             "- **interval from the rows**: Wilson's interval for the mean accuracy on that many rows; assumes the "
             "rows are independent draws from the population the split stands for.",
             "- **paired test**: the best architecture against each other one on the same rows, a sign-flip "
             "permutation test on each row's correctness averaged over seeds (scipy.stats.permutation_test, 999 "
             "resamples; exact McNemar with one seed each); assumes only that rows are independent. p-values are "
             "Holm-adjusted over the split's comparisons.",
             "- **P(best > it)**: the share of seed pairs in which the best's seed scores higher (ties half), with a "
             "95% percentile bootstrap interval over seeds (scipy.stats.bootstrap; Bouthillier et al. 2021); with 3 "
             "seeds the interval is coarse.",
             f"- **verdict**: *below* when the paired p < {ALPHA} and P's interval lies above 0.5; otherwise *tied*, "
             "with what ties them: the test rows (p too high) or the seeds (P's interval reaches 0.5).", ""]
    for split in report.splits:
        note = SPLIT_NOTES.get((split.dataset, split.split))
        lines += [f"### {split.title}", "", *([note, ""] if note else []),
                  *significance_table(split, report.studies), ""]
    table = time_to_target_table(report.targets)
    if table:
        lines += ["## Time to target", "",
                  "Seconds from the start of training (validations included) until the validation accuracy first "
                  "reaches the dataset's target (`study.target_val_acc`), for each seed of the best configuration; "
                  "the median over the seeds that reached it, and its ratio to the fastest architecture's. Validation "
                  "runs several times an epoch (`study.validations_per_epoch`), so the time is known to within one "
                  "validation interval.", "", *table, ""]
    return lines


def write_index(out_dir: Path) -> None:
    lines = ["# Reports", "", "One folder per sweep, generated by `nox -s report -- NAME` from the MLflow store; "
             "`perf` is the speed benchmark, generated by `nox -s perf`.", "", "| sweep | report |", "|---|---|"]
    for readme in sorted(out_dir.glob("*/README.md")):
        name = readme.parent.name
        lines.append(f"| `{name}` | [{name}/README.md]({name}/README.md) |")
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")
