"""How the report writes its names and numbers: dataset titles, percentages, intervals, p-values, parameters."""

from __future__ import annotations

# Each dataset's title, in the order the report lists the datasets.
DATASET_TITLES = {"imdb": "IMDB", "sentiment140": "Sentiment140"}


def dataset_title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def interval(bounds: tuple[float, float] | None) -> str:
    return "–" if bounds is None else f"{pct(bounds[0])}-{pct(bounds[1])}"


def significant(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def p_value(p: float | None) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def probability(prob: tuple[float, float, float] | None) -> str:
    return "–" if prob is None else f"{prob[0]:.2f} [{prob[1]:.2f}, {prob[2]:.2f}]"


def short(value: str) -> str:
    """A float parameter to 4 significant digits; anything else as logged."""
    if "." in value or "e-" in value:
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value
