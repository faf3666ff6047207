"""Published from-scratch accuracies (no pretrained vectors or language models) of each architecture, beside this
sweep's mean over its seeds. docs/published.md gives each source in full and how it was checked."""

from __future__ import annotations

from dataclasses import dataclass

from bench.report.against import seed_means
from bench.report.collect import Study
from bench.report.format import dataset_title, interval, pct
from bench.stats import mean_interval


@dataclass(frozen=True)
class Published:
    figure: float  # accuracy, %
    split: str  # what it was measured on: "test" (the 25,000 test reviews, or the 359 tweets) or "val"
    setting: str
    source: str  # short; docs/published.md has it in full


PUBLISHED = {
    ("imdb", "averaging"): [
        Published(90.56, "test", "fastText: mean of word and bigram embeddings, 400 tokens, 5 epochs",
                  "Keras examples/imdb_fasttext.py"),
        Published(88.13, "test", "the same, words only", "Keras examples/imdb_fasttext.py"),
        Published(88.9, "test", "NBOW-RAND", "Iyyer et al. 2015, Table 1"),
    ],
    ("imdb", "bag_concat"): [Published(76, "val", "Embedding + Flatten + Dense, the first 20 tokens",
                                       "Chollet, DLwP 1st ed., 6.1")],
    ("imdb", "simple_rnn"): [Published(85, "val", "SimpleRNN(32), 500 tokens", "Chollet, DLwP 1st ed., 6.2"),
                             Published(83.25, "test", "SimpleRNN(32), 10,000 words, 500 tokens, 5 epochs",
                                       "seed article 003")],
    ("imdb", "gru"): [Published(86.96, "val", "GRU(128), masking, a 1,000-token vocabulary",
                                "Géron, HOML 3rd ed., ch. 16 notebook")],
    ("imdb", "lstm"): [Published(89, "val", "LSTM(32), 500 tokens", "Chollet, DLwP 1st ed., 6.2"),
                       Published(86.5, "test", "LSTM with tuning and dropout", "Dai & Le 2015, Table 2"),
                       Published(84.41, "test", "LSTM(64), 2,500 words, 100 tokens", "seed article 004")],
    ("imdb", "bilstm"): [Published(88, "test", "BiLSTM(32), masking, 600 tokens", "Chollet, DLwP 2nd ed., 11.3")],
    ("sentiment140", "averaging"): [Published(83.0, "test", "MaxEnt on words and bigrams (no network)",
                                              "Go et al. 2009 (not checked here)")],
}


def standing(mean: float, spread: tuple[float, float] | None, figure: float) -> str:
    """At or above the published figure, or below it by how much, and whether the interval over seeds reaches it."""
    gap = figure - 100 * mean
    if gap <= 0:
        return "at or above"
    reaches = spread is not None and 100 * spread[1] >= figure
    return f"below by {gap:.2f}" + (" (its interval reaches it)" if reaches else "")


def section(studies: list[Study]) -> list[str]:
    means = seed_means(studies, "test")
    rows = []
    for (dataset, arch), mean in sorted(means.items(), key=lambda kv: (kv[0][0], -kv[1].mean)):
        spread = mean_interval(mean.accuracies)
        for p in PUBLISHED.get((dataset, arch), []):
            rows.append(f"| {dataset_title(dataset)} | `{arch}` | {len(mean.accuracies)} | {pct(mean.mean)} "
                        f"({interval(spread)}) | {p.figure:g} | {p.split} | {p.setting} | {p.source} | "
                        f"{standing(mean.mean, spread, p.figure)} |")
    if not rows:
        return []
    return ["## Published figures", "",
            "Each architecture's mean test accuracy over its seeds (95% interval) beside the best-known published "
            "figures for it trained from scratch; sources and how each was checked: "
            "[docs/published.md](../../docs/published.md). A figure marked *val* was read on a validation split, "
            "often the best epoch's, so it is optimistic against a test accuracy.", "",
            "| dataset | architecture | seeds | mean test acc % (95% interval) | published % | on | setting | "
            "source | this sweep's mean |", "|---|---|---|---|---|---|---|---|---|", *rows, ""]
