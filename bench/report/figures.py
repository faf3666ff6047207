"""The report's figures: what every figure shares (a colour per architecture, the panels, the file format), and
accuracy against cost, the learning curves and accuracy against tuning budget."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient

from bench.models import ARCHITECTURES
from bench.report.collect import Study, history
from bench.report.contents import Collected
from bench.report.convergence import Curve
from bench.report.format import dataset_title
from bench.stats import expected_max


def arch_colors(archs: list[str]) -> dict[str, str]:
    """One colour per architecture, the same in every figure: the registry's order picks it."""
    palette = plt.get_cmap("tab10").colors
    order = list(ARCHITECTURES)
    ordered = sorted(set(archs), key=lambda a: (order.index(a) if a in order else 99, a))
    return {a: matplotlib.colors.to_hex(palette[i % 10]) for i, a in enumerate(ordered)}


def figure_per_dataset(datasets: list[str]):
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    return fig, zip(axes[0], datasets)


def figure_grid(rows: int, columns: int, panel_size: tuple[float, float]):
    """A figure of rows x columns panels, and the panels as a 2-d array."""
    return plt.subplots(rows, columns, figsize=(columns * panel_size[0], rows * panel_size[1]), squeeze=False)


def save_figure(fig, path: Path) -> None:
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
            _finish_axes(ax, dataset_title(dataset), xlabel)
            continue
        ax.step([p[0] for p in frontier], [p[1] for p in frontier], where="post", color="black",
                linewidth=1, label="Pareto frontier")
        ax.set_xscale("log")
        if plain_ticks:
            _plain_log_ticks(ax)
        _finish_axes(ax, dataset_title(dataset), xlabel)
    save_figure(fig, path)


def learning_curves_figure(client: MlflowClient, studies: list[Study], datasets: list[str], path: Path) -> None:
    colors = arch_colors([s.arch for s in studies])
    fig, panels = figure_per_dataset(datasets)
    for ax, dataset in panels:
        for s in (s for s in studies if s.dataset == dataset and s.best is not None):
            acc = history(client, s.best.run_id, "val/acc")
            seconds = history(client, s.best.run_id, "time/elapsed_s")
            steps = sorted(set(acc) & set(seconds))
            ax.plot([seconds[k] for k in steps], [100 * acc[k] for k in steps], marker="o", markersize=3,
                    color=colors[s.arch], label=s.arch)
        _finish_axes(ax, f"{dataset_title(dataset)}: best trial of each architecture",
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
        title = dataset_title(dataset)
        _finish_axes(axes[0][column], title, "tuning budget (trials)")
        axes[1][column].set_xscale("log")
        _plain_log_ticks(axes[1][column])
        _finish_axes(axes[1][column], title, "tuning budget (seconds: trials x mean trial seconds, log scale)")
        for ax in axes[:, column]:
            ax.set_ylabel("expected best validation accuracy (%)")
    save_figure(fig, path)


def budget_curves_figure(curves: dict[str, list[Curve]], path: Path) -> None:
    """Each study's mean best-so-far validation accuracy over its replicates against seconds, one standard deviation
    shaded."""
    colors = arch_colors([c.arch for dataset_curves in curves.values() for c in dataset_curves])
    fig, panels = figure_per_dataset(list(curves))
    for ax, dataset in panels:
        for c in curves[dataset]:
            mean, std = [100 * m for m in c.mean], [100 * d for d in c.std]
            ax.plot(c.seconds, mean, color=colors[c.arch], label=c.arch, marker="o", markersize=2)
            ax.fill_between(c.seconds, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                            color=colors[c.arch], alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        _plain_log_ticks(ax)
        _finish_axes(ax, f"{dataset_title(dataset)}: mean over the replicates",
                     "seconds since training started (log scale)")
        ax.set_ylabel("best validation accuracy so far (%)")
    save_figure(fig, path)


def write_figures(client: MlflowClient, report: Collected, folder: Path) -> None:
    """The report's figures but the probes', into the report's folder."""
    studies, datasets = report.studies, report.datasets
    for cost in COSTS:
        accuracy_vs_cost_figure(studies, datasets, cost, folder / f"accuracy_vs_{cost}.png")
    learning_curves_figure(client, studies, datasets, folder / "learning_curves.png")
    tuning_budget_figure(studies, datasets, folder / "tuning_budget.png")
    if report.curves and any(r.stopped_by for s in studies for r in s.replicates):  # as the section shows them
        budget_curves_figure(report.curves, folder / "budget_curves.png")
