"""The figures of the report's "Probes" section: word order, long-range memory and the gradient through time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.report.figures import arch_colors, figure_grid, figure_per_dataset, save_figure
from bench.report.format import dataset_title
from bench.report.probes import (
    ProbedStudy,
    gradient_curve,
    mean_or_none,
    memory_distances,
    of_dataset,
    share_interval,
)


def order_figure(probed: list[ProbedStudy], datasets: list[str], path: Path) -> None:
    colors = arch_colors([p.arch for p in probed])
    fig, panels = figure_per_dataset(datasets)
    for ax, dataset in panels:
        studies = of_dataset(probed, dataset)
        x = np.arange(len(studies))
        for offset, key, name, hatch in ((-0.2, "ordered_right", "positive text ranked higher", ""),
                                         (0.2, "flipped_right", "pair flipped the right way", "//")):
            means = [100 * (mean_or_none(p.values(f"probe/order/{key}")) or 0) for p in studies]
            errors = np.array([_error_bar(p.values(f"probe/order/{key}")) for p in studies]).T
            ax.bar(x + offset, means, 0.4, yerr=errors if len(studies) else None, capsize=3, hatch=hatch,
                   color=[colors[p.arch] for p in studies], edgecolor="black",
                   label=name)
        ax.axhline(50, color="black", linestyle="--", linewidth=1, label="chance (order-blind: exactly this)")
        ax.set_xticks(x, [p.label for p in studies], rotation=20, fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("share of the minimal pairs (%)")
        ax.set_title(f"{dataset_title(dataset)}: word order")
    # One legend, below the panels: the bars reach 100%.
    fig.legend(*ax.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=8)
    save_figure(fig, path)


def _error_bar(values: list[float]) -> tuple[float, float]:
    interval = share_interval(values)
    if not interval:
        return 0.0, 0.0
    mean = np.mean(values)
    return 100 * (mean - interval[0]), 100 * (interval[1] - mean)


def memory_figure(probed: list[ProbedStudy], datasets: list[str], path: Path) -> None:
    datasets = [d for d in datasets if any(p.values("probe/memory/texts") for p in of_dataset(probed, d))]
    if not datasets:  # no dataset long enough for the memory probe
        return
    colors = arch_colors([p.arch for p in probed])
    fig, axes = figure_grid(2 * len(datasets), 2, (5.5, 4))
    for row, dataset in enumerate(datasets):
        studies = of_dataset(probed, dataset)
        distances = memory_distances(studies)
        for r, metric in enumerate(("acc", "auroc")):
            for c, side in enumerate(("after", "before")):
                ax = axes[2 * row + r][c]
                for p in studies:
                    _line_with_band(ax, distances, [p.values(f"probe/memory/{side}/{metric}", k) for k in distances],
                                    colors[p.arch], p.label)
                ax.set_xscale("symlog", linthresh=25)
                ax.set_xticks(distances, [str(k) for k in distances])
                ax.set_xlabel(f"filler tokens {side} the review")
                ax.set_ylabel(f"{'accuracy' if metric == 'acc' else 'AUROC'} (%)")
                ax.axhline(50, color="black", linestyle=":", linewidth=1)
                ax.set_ylim(0, 102)
                ax.set_title(f"{dataset_title(dataset)}: filler {side} the review")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _line_with_band(ax, xs, values_at, color, label) -> None:
    means = [100 * np.mean(v) if v else np.nan for v in values_at]
    ax.plot(xs, means, marker="o", markersize=3, color=color, label=label)
    intervals = [share_interval(v) for v in values_at]
    if all(intervals):
        ax.fill_between(xs, [100 * i[0] for i in intervals], [100 * i[1] for i in intervals], color=color,
                        alpha=0.15, linewidth=0)


def gradient_figure(probed: list[ProbedStudy], datasets: list[str], path: Path) -> None:
    colors = arch_colors([p.arch for p in probed])
    fig, panels = figure_per_dataset(datasets)
    for ax, dataset in panels:
        for p in (p for p in of_dataset(probed, dataset) if any("probe/gradient/norm" in m for m in p.models)):
            distances, norms = gradient_curve(p)
            ax.plot(distances, np.where(norms > 0, norms, np.nan), color=colors[p.arch], label=f"{p.label}, trained")
            if p.initial:
                initial = np.array([p.initial.get(d, np.nan) for d in distances])
                ax.plot(distances, np.where(initial > 0, initial, np.nan), color=colors[p.arch], linestyle="--",
                        linewidth=1, label=f"{p.label}, at initialisation")
        ax.set_yscale("log")
        ax.set_xlabel("distance from the text's last token (tokens)")
        ax.set_ylabel("|d loss / d input embedding| (mean over texts)")
        ax.set_title(f"{dataset_title(dataset)}: gradient through time\n(trained: the geometric mean "
                     "over the models)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def write_figures(probed: list[ProbedStudy], datasets: list[str], folder: Path) -> None:
    datasets = [d for d in datasets if of_dataset(probed, d)]
    if not datasets:
        return
    order_figure(probed, datasets, folder / "probe_word_order.png")
    memory_figure(probed, datasets, folder / "probe_memory.png")
    gradient_figure(probed, datasets, folder / "probe_gradient.png")
