"""What every figure of a report shares: dataset titles, one colour per architecture, the saved file's format."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.models import ARCHITECTURES

DATASET_TITLES = {"imdb": "IMDB", "sentiment140": "Sentiment140"}


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
