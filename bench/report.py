"""Markdown report of a sweep, generated from the MLflow tracking store alone: accuracy versus time.

reports/<sweep>/README.md with its figures beside it, and reports/README.md indexing every report.
The same store gives the same markdown (apart from the generated-at line) and the same figures.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.models import ARCHITECTURES
from bench.runtime import UserError
from bench.stats import expected_max, mean_interval, wilson_interval

GENERATED_PREFIX = "_Generated at "  # the one line that differs between two reports of the same store
LIBRARIES = ["python", "torch", "lightning", "optuna", "optuna_integration", "mlflow"]
DATASET_TITLES = {"imdb": "IMDB", "sentiment140": "Sentiment140"}
# Published figures of the seed articles (shared/seeds), for comparison only.
SEED_FIGURES = {
    ("imdb", "simple_rnn"): [(83.25, "seed 003, Keras SimpleRNN(32), 10,000 words, 500 tokens, 5 epochs")],
    ("imdb", "lstm"): [(84.41, "seed 004, R Keras LSTM(64), 2,500 words, 100 tokens")],
}


class ReportError(UserError, RuntimeError):
    pass


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


@dataclass
class Study:
    dataset: str
    arch: str
    run_id: str
    tags: dict
    params: dict
    metrics: dict
    trials: list[Trial] = field(default_factory=list)
    # Test accuracy of each finished retraining of the best trial's configuration with another seed.
    replicate_accuracies: list[float] = field(default_factory=list)

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
        if "replicate" in r.data.tags:
            if r.data.tags.get("replicate_of_trial") == studies[parent].tags.get("best_trial") and "test/acc" in m:
                studies[parent].replicate_accuracies.append(m["test/acc"])
            continue
        studies[parent].trials.append(Trial(
            run_id=r.info.run_id,
            number=int(r.data.tags.get("trial", -1)),
            state=r.data.tags.get("state", "running"),
            val_acc=m.get("val/acc_best"),
            train_seconds=m.get("time/elapsed_s"),
            run_seconds=_seconds(r),
            params=r.data.params,
            metrics=m,
            error=r.data.tags.get("error", ""),
        ))
    for study in studies.values():
        study.trials.sort(key=lambda t: t.number)
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
            test={k: s.metrics.get(f"test/{k}") for k in ("acc", "f1", "auroc")},
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
        ("best trial train s", lambda r: r.train_seconds, _num, False),
        ("s / epoch", lambda r: r.epoch_seconds, _num, False),
        ("tokens / s", lambda r: r.tokens_per_s, lambda v: _num(v, 0), True),
        ("train MFLOP / token", lambda r: r.flops_per_token and r.flops_per_token / 1e6, _significant, False),
        ("ms / 1k texts", lambda r: r.latency, _num, False),
        ("study s", lambda r: r.total_seconds, _num, False),
    ]
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


def _colors(archs: list[str]) -> dict[str, str]:
    """One colour per architecture, the same in every figure: the registry's order picks it."""
    palette = plt.get_cmap("tab10").colors
    order = list(ARCHITECTURES)
    ordered = sorted(set(archs), key=lambda a: (order.index(a) if a in order else 99, a))
    return {a: matplotlib.colors.to_hex(palette[i % 10]) for i, a in enumerate(ordered)}


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no version stamp: reproducible
    plt.close(fig)


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


def _figure_per_dataset(datasets: list[str]):
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    return fig, zip(axes[0], datasets)


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
    colors = _colors([s.arch for s in studies])
    fig, panels = _figure_per_dataset(datasets)
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
    _save(fig, path)


def learning_curves_figure(client: MlflowClient, studies: list[Study], datasets: list[str], path: Path) -> None:
    colors = _colors([s.arch for s in studies])
    fig, panels = _figure_per_dataset(datasets)
    for ax, dataset in panels:
        for s in (s for s in studies if s.dataset == dataset and s.best is not None):
            acc = _history(client, s.best.run_id, "val/acc")
            seconds = _history(client, s.best.run_id, "time/elapsed_s")
            steps = sorted(set(acc) & set(seconds))
            ax.plot([seconds[k] for k in steps], [100 * acc[k] for k in steps], marker="o", markersize=3,
                    color=colors[s.arch], label=s.arch)
        _finish_axes(ax, f"{DATASET_TITLES.get(dataset, dataset)}: best trial of each architecture",
                     "wall-clock seconds since the trial started")
    _save(fig, path)


def tuning_budget_figure(studies: list[Study], datasets: list[str], path: Path) -> None:
    """Expected best validation accuracy after n trials (mean and one standard deviation over draws of n of the
    study's finished trials), against n (top) and against n times the study's mean trial seconds (bottom)."""
    colors = _colors([s.arch for s in studies])
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
    _save(fig, path)


def findings(rows_by_dataset: dict[str, list[Row]]) -> list[str]:
    """Claims computed from the leaderboard cells only, and only those that their uncertainty supports."""
    lines = []
    for dataset, rows in rows_by_dataset.items():
        title = DATASET_TITLES.get(dataset, dataset)
        tested = [r for r in rows if r.test["acc"] is not None]
        if not tested:
            lines.append(f"- {title}: no architecture has a test accuracy yet.")
            continue
        lines.append(_best_claim(title, tested))
        best = tested[0]
        close = [r for r in tested if r.train_seconds is not None and best.test["acc"] - r.test["acc"] <= 0.01]
        if close:
            fastest = min(close, key=lambda r: (r.train_seconds, r.study.arch))
            lines.append(
                f"- {title}: within one point of the best test accuracy, `{fastest.study.arch}` trained its best "
                f"model in the least time, {_num(fastest.train_seconds)} s ({_pct(fastest.test['acc'])}%)."
            )
        for r in tested:
            for figure, source in SEED_FIGURES.get((dataset, r.study.arch), []):
                diff = 100 * r.test["acc"] - figure
                lines.append(
                    f"- {title}: `{r.study.arch}` reaches {_pct(r.test['acc'])}% against {figure:.2f}% in {source}: "
                    f"{abs(diff):.2f} points {'above' if diff >= 0 else 'below'}."
                )
    return lines


def _best_claim(title: str, tested: list[Row]) -> str:
    """Which architectures the test set cannot tell apart from the highest: those whose 95% Wilson interval
    overlaps its interval. One seed each: the spread over training seeds is not in these intervals."""
    best = tested[0]
    if best.test_interval is None:
        return f"- {title}: `{best.study.arch}` has the highest test accuracy, {_pct(best.test['acc'])}%."
    low = best.test_interval[0]
    tied = [r.study.arch for r in tested[1:] if r.test_interval is not None and r.test_interval[1] >= low]
    claim = (f"- {title}: the highest test accuracy is `{best.study.arch}`'s, {_pct(best.test['acc'])}% "
             f"(95% interval {_interval(best.test_interval)} from the test set's size alone)")
    if tied:
        names = ", ".join(f"`{a}`" for a in tied)
        claim += f"; the test set cannot tell {names} apart from it (their intervals overlap)"
    below = [r.study.arch for r in tested[1:] if r.study.arch not in tied]
    if below:
        claim += (f"; {', '.join(f'`{a}`' for a in below)} score lower by more than that interval, on one training "
                  "seed each")
    return claim + "."


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


def _replicates_table(rows_by_dataset: dict[str, list[Row]]) -> list[str]:
    lines = ["| dataset | architecture | replicates | test acc % mean | 95% interval over seeds | min-max "
             "| best trial's test acc % |", "|---|---|---|---|---|---|---|"]
    for dataset, rows in rows_by_dataset.items():
        for r in rows:
            accuracies = r.study.replicate_accuracies
            if not accuracies:
                continue
            interval = mean_interval(accuracies)
            lines.append(f"| {DATASET_TITLES.get(dataset, dataset)} | `{r.study.arch}` | {len(accuracies)} "
                         f"| {_pct(statistics.mean(accuracies))} | {_interval(interval)} "
                         f"| {_pct(min(accuracies))}-{_pct(max(accuracies))} | {_pct(r.test['acc'])} |")
    return lines if len(lines) > 2 else []


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


def write_report(sweep: str, tracking_uri: str, out_dir: Path = Path("reports"), now: dt.datetime | None = None,
                 log=print) -> Path:
    """Collect the sweep's runs, render the markdown, draw the figures, write them and the index."""
    client = MlflowClient(tracking_uri)
    studies, experiment_id = collect(client, sweep)
    datasets = sorted({s.dataset for s in studies}, key=lambda d: (list(DATASET_TITLES).index(d)
                                                                     if d in DATASET_TITLES else 99, d))
    rows_by_dataset = {d: leaderboard_rows(client, [s for s in studies if s.dataset == d]) for d in datasets}
    generated = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    markdown = render_markdown(sweep, studies, rows_by_dataset, experiment_id,
                               f"{GENERATED_PREFIX}{generated} from the MLflow store `{tracking_uri}` by "
                               f"`nox -s report -- {sweep}`._")
    folder = out_dir / sweep
    folder.mkdir(parents=True, exist_ok=True)
    for cost in COSTS:
        accuracy_vs_cost_figure(studies, datasets, cost, folder / f"accuracy_vs_{cost}.png")
    learning_curves_figure(client, studies, datasets, folder / "learning_curves.png")
    tuning_budget_figure(studies, datasets, folder / "tuning_budget.png")
    (folder / "README.md").write_text(markdown)
    write_index(out_dir)
    log(f"report written to {folder / 'README.md'}")
    return folder / "README.md"


def _header(studies: list[Study]) -> list[str]:
    tags = studies[0].tags if studies else {}
    trial_seconds = [t.run_seconds for s in studies for t in s.trials]
    return [
        f"- Config: `{tags.get('config', '?')}` (sha256 of the validated config `{tags.get('config_sha256', '?')}`); "
        f"git commit `{tags.get('git_commit', '?')[:12]}`",
        f"- Machine: {tags.get('cpu', '?')}, {tags.get('cores', '?')} cores, GPU: {tags.get('gpu', '?')}; "
        f"device used: {tags.get('device', '?')}",
        "- Libraries: " + ", ".join(f"{lib} {tags.get(lib, '?')}" for lib in LIBRARIES),
        f"- Studies: {len(studies)}; trials: {len(trial_seconds)}; time in trials: {_num(sum(trial_seconds) / 60)} min",
    ]


def render_markdown(sweep: str, studies: list[Study], rows_by_dataset: dict[str, list[Row]], experiment_id: str,
                    generated_line: str) -> str:
    """The report's README.md, from what collect() and leaderboard_rows() read."""
    datasets = list(rows_by_dataset)
    lines = [f"# Sweep `{sweep}`: accuracy versus time", "", generated_line, "", *_header(studies), "",
             "## Data", "", *_data_table(studies, datasets), "",
             "## Accuracy versus cost", "",
             "Every trial is a point: validation accuracy of its best epoch against the wall-clock time of its "
             "training (this machine's cost), and against its training FLOPs (a cost that does not depend on the "
             "machine: FLOPs per token counted by PyTorch's FlopCounterMode on a training batch, times the tokens "
             "trained on; matrix multiplications only, so averaging's embedding means are not counted). The black "
             "line is the Pareto frontier: no trial is both cheaper and more accurate.", "",
             "![accuracy versus training time](accuracy_vs_time.png)", "",
             "![accuracy versus training FLOPs](accuracy_vs_flops.png)", ""]
    for dataset in datasets:
        lines += [f"## Leaderboard: {DATASET_TITLES.get(dataset, dataset)}", "",
                  *leaderboard(rows_by_dataset[dataset], experiment_id), ""]
    lines += [
        "Columns: validation accuracy of the study's best trial; test metrics of that trial, evaluated once; "
        "its parameter count, training time, median seconds per epoch, training tokens per second and training "
        "FLOPs per token (forward and backward); "
        "inference time per 1,000 test texts; the study's total trial time.",
        "", "## Learning curves", "", "![learning curves](learning_curves.png)", "",
        "## Accuracy against tuning budget", "",
        "What a user pays is a tuning budget, not one trial. Each curve is the expected best validation accuracy "
        "after n of the study's finished trials (complete or pruned), with one standard deviation, by the unbiased "
        "without-replacement estimator of Dodge et al. 2019 and Tang et al. 2020; in seconds, n times the study's "
        "mean trial time. It assumes i.i.d. trials: TPE and pruning make later trials depend on earlier ones, so "
        "read it as indicative; `sweeps/iid.yaml` (random sampler, no pruner) meets the assumption.", "",
        "![accuracy against tuning budget](tuning_budget.png)", "",
        "## Findings", "", *findings(rows_by_dataset), "",
        "## Best hyperparameters and their importance", "", *_architecture_details(studies), "",
    ]
    replicates = _replicates_table(rows_by_dataset)
    if replicates:
        lines += ["## Replicates", "",
                  "The best trial's configuration retrained with other seeds (initialisation, data order, dropout; "
                  "the same splits), each evaluated once on test. The interval is Student's t over the seeds "
                  "(scipy.stats), which assumes their accuracies are normally distributed around the mean.", "",
                  *replicates, ""]
    problems = _problems(studies)
    if problems:
        lines += ["## Missing or failed", "", *problems, ""]
    return "\n".join(lines)


def write_index(out_dir: Path) -> None:
    lines = ["# Reports", "", "One folder per sweep, generated by `nox -s report -- NAME` from the MLflow store; "
             "`perf` is the speed benchmark, generated by `nox -s perf`.", "", "| sweep | report |", "|---|---|"]
    for readme in sorted(out_dir.glob("*/README.md")):
        name = readme.parent.name
        lines.append(f"| `{name}` | [{name}/README.md]({name}/README.md) |")
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")
