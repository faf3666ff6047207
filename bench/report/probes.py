"""The report's "Probes" section: what the probes (bench/probes.py) logged for each study's models, read from the
MLflow store, as tables and findings on the seed articles' claims (probe_figures.py draws its figures)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from bench.models import RECURRENT
from bench.probe_sets import (
    GRADIENT_DISTANCES,
    GRADIENT_TEXTS,
    MEMORY_MIN_LEN,
    MIN_POLARITY,
    MIN_WORD_COUNT,
    NEUTRAL_POLARITY,
    PART_TOKENS,
    SENTENCE_TOKENS,
    TEMPLATES,
)
from bench.probes import ORDER_PAIRS, PROBE_SETS
from bench.report.collect import history
from bench.report.format import dataset_title
from bench.stats import mean_interval

ORDER_KEYS = ("acc", "flipped", "flipped_right", "ordered_right")
STEPPED = ("probe/memory/after/acc", "probe/memory/before/acc", "probe/memory/after/auroc",
           "probe/memory/before/auroc", "probe/gradient/norm")
UNIDIRECTIONAL = ("simple_rnn", "gru", "lstm")
SAMPLE_PAIRS = 10
SMALLEST = 1e-45  # float32's smallest positive number: a norm below it is 0, and is counted as this


@dataclass
class ProbedStudy:
    dataset: str
    arch: str
    label: str  # the architecture, and whether its averaging sees word pairs
    models: list[dict] = field(default_factory=list)  # per model: metric -> value, or metric -> {step: value}
    initial: dict = field(default_factory=dict)  # distance -> gradient norm at initialisation
    sets: dict = field(default_factory=dict)  # probe_sets.json
    pairs: pd.DataFrame | None = None

    def values(self, key: str, step: int | None = None) -> list[float]:
        """The models' values of a metric (at a step), where they have it."""
        if step is None:
            return [m[key] for m in self.models if key in m]
        return [m[key][step] for m in self.models if step in m.get(key, {})]


def _model_metrics(client: MlflowClient, run_id: str, metrics: dict) -> dict:
    found = {k: v for k, v in metrics.items() if k.startswith("probe/") and k not in STEPPED}
    found.update({k: history(client, run_id, k) for k in STEPPED if k in metrics})
    return found


def collect_probes(client: MlflowClient, studies, downloads: Path) -> list[ProbedStudy]:
    """The probed studies (collect.Study), each with its models' probe metrics, probe sets and word-order pairs."""
    probed = []
    for study in (s for s in studies if s.tags.get("probes") == "done"):
        pairs_seen = study.tags.get("best/bigram_buckets", "0") not in ("0", "None")
        result = ProbedStudy(study.dataset, study.arch, f"{study.arch} (word pairs)" if pairs_seen else study.arch)
        for run_id, metrics in [(study.run_id, study.metrics), *((r.run_id, r.metrics) for r in study.replicates)]:
            if "probe/order/acc" in metrics:
                result.models.append(_model_metrics(client, run_id, metrics))
        if "probe/gradient_init/norm" in study.metrics:
            result.initial = history(client, study.run_id, "probe/gradient_init/norm")
        folder = downloads / study.run_id
        result.sets = json.loads(Path(client.download_artifacts(study.run_id, PROBE_SETS, str(folder))).read_text())
        result.pairs = pd.read_csv(client.download_artifacts(study.run_id, ORDER_PAIRS, str(folder)))
        probed.append(result)
    return probed


def mean_or_none(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def share_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95% interval of a mean share over the models, cut to 0-1; None for fewer than two."""
    interval = mean_interval(values)
    return (max(0.0, interval[0]), min(1.0, interval[1])) if interval else None


def _bounds(values: list[float]) -> tuple[float, float]:
    """The 95% interval of the mean over the models; with one model, its value."""
    return mean_interval(values) or (min(values), max(values))


def _estimate(values: list[float]) -> str:
    """Mean share over the models in %, with its 95% interval where there are several."""
    if not values:
        return "—"
    interval = share_interval(values)
    return f"{100 * np.mean(values):.1f}" + (f" [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]" if interval else "")


def of_dataset(probed: list[ProbedStudy], dataset: str) -> list[ProbedStudy]:
    return [p for p in probed if p.dataset == dataset]


def order_table(studies: list[ProbedStudy]) -> list[str]:
    lines = ["| architecture | models | accuracy on the pair texts (%) | pairs flipped (%) | flipped the right way "
             "(%) | positive text ranked higher (%; chance 50) |", "|---|---|---|---|---|---|"]
    for p in studies:
        cells = [_estimate(p.values(f"probe/order/{k}")) for k in ORDER_KEYS]
        lines.append(f"| `{p.label}` | {len(p.models)} | " + " | ".join(cells) + " |")
    return lines


def order_finding(studies: list[ProbedStudy]) -> str:
    """Seed 001's claim: an average of word embeddings cannot tell the pair's texts apart; an ordered reader can."""
    parts = []
    for p in (p for p in studies if p.arch == "averaging"):
        ranked = p.values("probe/order/ordered_right")
        if p.label != "averaging":
            parts.append(f"`{p.label}` sees neighbouring words, so it is not order-blind: it ranks the positive text "
                         f"higher in {_estimate(ranked)}% of the pairs")
        elif all(v == 0.5 for v in ranked):
            parts.append(f"`averaging` gives both texts of every pair the same probability in all {len(ranked)} "
                         "models: exactly chance, as the claim says")
        else:
            parts.append(f"`averaging` does not rank every pair's texts equally ({_estimate(ranked)}%): check the "
                         "probe")
    ordered = [p for p in studies if p.arch in RECURRENT]
    above = [p.label for p in ordered if _above_chance(p.values("probe/order/ordered_right"))]
    rest = [p.label for p in ordered if p.label not in above]
    parts.append(f"recurrent networks that rank the positive text higher more often than chance (the interval above "
                 f"50%): {', '.join(f'`{a}`' for a in above) or 'none'}"
                 + (f"; not above chance: {', '.join(f'`{a}`' for a in rest)}" if rest else ""))
    return "; ".join(parts) + "."


def _above_chance(values: list[float]) -> bool:
    """The interval over the models lies above 0.5 (one model: its value does)."""
    return _bounds(values)[0] > 0.5


def memory_distances(studies: list[ProbedStudy]) -> list[int]:
    return sorted({k for p in studies for m in p.models for k in m.get("probe/memory/after/acc", {})})


def memory_table(studies: list[ProbedStudy]) -> list[str]:
    far = memory_distances(studies)[-1]
    lines = [f"| architecture | reviews right alone | accuracy, {far} filler tokens after (%) | before (%) | AUROC "
             "after (%) | AUROC before (%) | P(positive) on filler alone (%) |", "|---|---|---|---|---|---|---|"]
    for p in studies:
        cells = [_estimate(p.values(f"probe/memory/{side}/{m}", far)) for m in ("acc", "auroc")
                 for side in ("after", "before")]
        texts = mean_or_none(p.values("probe/memory/texts"))
        lines.append(f"| `{p.label}` | {texts:.0f} | " + " | ".join(cells)
                     + f" | {_estimate(p.values('probe/memory/filler_positive'))} |")
    return lines


def memory_finding(studies: list[ProbedStudy]) -> str:
    """Seeds 000 and 002: a SimpleRNN forgets the start of a long text; LSTM and GRU gates keep it. Judged at each
    filler length by AUROC (a filler that pushes every text one way moves accuracy, not AUROC)."""
    by_arch = {p.arch: p for p in studies}
    if not {"simple_rnn", "lstm", "gru"} <= set(by_arch):
        return "The comparison needs `simple_rnn`, `gru` and `lstm` studies."
    distances = [k for k in memory_distances(studies) if k > 0]

    def auroc(arch, k, side="after"):
        return by_arch[arch].values(f"probe/memory/{side}/auroc", k)

    holds = [k for k in distances
             if all(_bounds(auroc(a, k))[0] > _bounds(auroc("simple_rnn", k))[1] for a in ("gru", "lstm"))]
    far = distances[-1]
    verdict = (f"holds with {', '.join(map(str, holds))} filler tokens after the review (both gated networks' AUROC "
               f"intervals above the SimpleRNN's), not with the others" if holds else
               "is not established: at no filler length do both gated networks' AUROC intervals lie above the "
               "SimpleRNN's")
    return (f"The claim that gates keep what a SimpleRNN forgets {verdict}. The most filler after the review with a "
            f"mean AUROC of 90% or more: {', '.join(f'`{p.arch}` {_span(p)}' for p in studies)}. At {far}: "
            f"`simple_rnn` {_estimate(auroc('simple_rnn', far))}%, `gru` {_estimate(auroc('gru', far))}%, `lstm` "
            f"{_estimate(auroc('lstm', far))}% (50: forgotten); with the filler before the review (the control) "
            f"{_estimate(auroc('simple_rnn', far, 'before'))}%, {_estimate(auroc('gru', far, 'before'))}% and "
            f"{_estimate(auroc('lstm', far, 'before'))}%.")


def _span(study: ProbedStudy) -> str:
    kept = [k for k in memory_distances([study]) if np.mean(study.values("probe/memory/after/auroc", k)) >= 0.9]
    return f"{max(kept)} tokens" if kept else "none"


def gradient_curve(study: ProbedStudy) -> tuple[np.ndarray, np.ndarray]:
    """Distances and the models' geometric mean gradient norm at each (their norms span orders of magnitude)."""
    curves = [m["probe/gradient/norm"] for m in study.models if "probe/gradient/norm" in m]
    distances = np.array(sorted(curves[0]))
    norms = np.array([[c[d] for d in distances] for c in curves])
    return distances, np.exp(np.log(np.maximum(norms, SMALLEST)).mean(axis=0))


def _log_ratios(study: ProbedStudy) -> list[float]:
    """Each model's log10 of its gradient norm at the farthest distance over the one at the last token."""
    return [np.log10(max(c[max(c)], SMALLEST) / c[0]) for c in (m["probe/gradient/norm"] for m in study.models
                                                                if "probe/gradient/norm" in m)]


def _ratio_estimate(logs: list[float]) -> str:
    low, high = _bounds(logs)
    return f"{10 ** np.mean(logs):.2g}" + (f" [{10 ** low:.2g}, {10 ** high:.2g}]" if len(logs) > 1 else "")


def gradient_table(studies: list[ProbedStudy]) -> list[str]:
    lines = ["| architecture | distance D | norm at the last token | at D | at D / at the last token | the same at "
             "initialisation |", "|---|---|---|---|---|---|"]
    for p in studies:
        distances, norms = gradient_curve(p)
        far = distances[-1]
        initial = p.initial.get(far, 0.0) / p.initial[0] if p.initial.get(0) else None
        initial = "-" if initial is None else f"{initial:.2g}" if initial > 0 else "0 (below float32's range)"
        lines.append(f"| `{p.label}` | {far} | {norms[0]:.3g} | {norms[-1]:.3g} | {_ratio_estimate(_log_ratios(p))} "
                     f"| {initial} |")
    return lines


def gradient_finding(studies: list[ProbedStudy]) -> str:
    """Seeds 000 and 002: a SimpleRNN's gradient vanishes with the distance; gates let it through. Judged by each
    model's gradient at the farthest distance over the one at the last token, on a log scale."""
    logs = {p.arch: _log_ratios(p) for p in studies if p.arch in UNIDIRECTIONAL}
    if "simple_rnn" not in logs or len(logs) < 2:
        return "The comparison needs `simple_rnn` and a gated network."
    listed = ", ".join(f"`{a}` {_ratio_estimate(v)}" for a, v in sorted(logs.items(), key=lambda i: np.mean(i[1])))
    gated = [a for a in logs if a != "simple_rnn"]
    below = [a for a in gated if _bounds(logs["simple_rnn"])[1] < _bounds(logs[a])[0]]
    verdict = ("holds: the SimpleRNN's interval lies below every gated network's" if below == gated else
               f"is not established: the SimpleRNN's interval lies below {', '.join(f'`{a}`' for a in below)}'s only"
               if below else "is not established: the intervals overlap")
    return (f"Trained, each model's gradient at the farthest distance over the one at the last token (geometric mean "
            f"over the models, 95% interval): {listed}. The claim that a SimpleRNN's gradient fades fastest {verdict}.")


def _construction(sets: dict) -> list[str]:
    order = sets["order"]
    return [f"- {order['pairs']} pairs from {len(order['templates'])} templates; positive words: "
            f"{', '.join(order['positive_words'])}; negative words: {', '.join(order['negative_words'])}."]


def _sample_pairs(study: ProbedStudy) -> list[str]:
    lines = ["| positive text | negative text |", "|---|---|"]
    for row in study.pairs.head(SAMPLE_PAIRS).itertuples():
        lines.append(f"| {row.positive} | {row.negative} |")
    return lines


ORDER_RULES = [
    f"Each template gives a positive and a negative text of the same words, a positive word and a negative one "
    f"swapped: {'; '.join(f'*{a}* / *{b}*' for a, b in TEMPLATES)}. A template is used where the dataset's "
    f"vocabulary holds all its words. The words come from a fixed list of common sentiment adjectives, each kept "
    f"where the dataset's training texts confirm it: seen {MIN_WORD_COUNT} times or more, with a log-odds of "
    f"occurring in a positive rather than a negative text of at least {MIN_POLARITY} in its direction. Pairs are "
    "drawn from every (positive, negative) combination, seeded.",
    "An order-blind network (an average of word embeddings) gives both texts of a pair the same probability: it "
    "ranks them at exactly chance (50%) and flips none.",
]


def memory_rules(sets: dict) -> str:
    memory = sets["memory"]
    return (f"Reviews of at most {PART_TOKENS} tokens from the {sets['split']} split ({memory['texts']}, seeded), "
            f"each followed (or, the control, preceded) by k tokens of neutral filler, k in "
            f"{', '.join(map(str, memory['distances']))}, cut to what max_len ({sets['max_len']}) leaves beside "
            f"the review. The filler is the other {sets['split']} reviews' sentences of {SENTENCE_TOKENS[0]} to "
            f"{SENTENCE_TOKENS[1]} tokens in which every token is in the vocabulary with a training log-odds under "
            f"{NEUTRAL_POLARITY} in size, with no digit (ratings) and no exclamation mark: {memory['sentences']} "
            f"sentences, {memory['filler_tokens']} tokens, shuffled; e.g. "
            + "; ".join(f"*{s}*" for s in memory["filler_examples"][:3])
            + ". Each model is scored on the reviews it classifies right alone (so 100% at k = 0). Accuracy moves "
            "when the filler pushes every text one way (its last column: P(positive) on filler alone); AUROC, over "
            "the same texts, does not: 50% means the review no longer reaches the prediction.")


def section(probed: list[ProbedStudy], datasets: list[str], skipped: dict[str, str]) -> list[str]:
    """The markdown of the Probes section; empty when no study was probed or skipped (`skipped`: dataset -> why)."""
    not_run = [f"Not run on {dataset_title(d)}: {why}." for d, why in skipped.items()]
    datasets = [d for d in datasets if of_dataset(probed, d)]
    if not datasets:
        return ["## Probes", "", *not_run, ""] if not_run else []
    counts = sorted({len(p.models) for p in probed})
    lines = ["## Probes", "",
             "What the seed articles say about the architectures, measured on each study's best model and its "
             f"replicates ({'/'.join(map(str, counts))} models per study; `nox -s probe -- NAME`, bench/probes.py). "
             "Values are means over those models, with a 95% Student-t interval over them in brackets.", "",
             "### Word order (seed 001: \"good, not bad\" and \"bad, not good\")", "", *ORDER_RULES, "",
             *not_run, *([""] if not_run else []), "![word order probe](probe_word_order.png)", ""]
    for dataset in datasets:
        studies = of_dataset(probed, dataset)
        lines += [f"#### {dataset_title(dataset)}", "", *_construction(studies[0].sets), "",
                  *order_table(studies), "", f"Finding: {order_finding(studies)}", "",
                  f"The first {SAMPLE_PAIRS} pairs:", "", *_sample_pairs(studies[0]), ""]
    lines += _memory_section(probed, datasets) + _gradient_section(probed, datasets)
    return lines


def _memory_section(probed: list[ProbedStudy], datasets: list[str]) -> list[str]:
    lines = ["### Long-range memory (seeds 000 and 002: a SimpleRNN forgets the start of a long text)", ""]
    for dataset in datasets:
        studies, title = of_dataset(probed, dataset), dataset_title(dataset)
        sets = studies[0].sets
        if sets.get("memory") is None:
            lines += [f"{title}: not run ({sets['notes'].get('memory', 'no memory set')}; it needs max_len "
                      f"{MEMORY_MIN_LEN} or more).", ""]
            continue
        lines += [f"#### {title}", "", memory_rules(sets), "", "![memory probe](probe_memory.png)", "",
                  *memory_table(studies), "", f"Finding: {memory_finding(studies)}", ""]
    return lines


def _gradient_section(probed: list[ProbedStudy], datasets: list[str]) -> list[str]:
    lines = ["### Gradient through time (seeds 000 and 002: the vanishing gradient)", "",
             "For each recurrent model, on test texts longer than a distance D (the largest of "
             f"{', '.join(map(str, GRADIENT_DISTANCES[:3]))}, ... that {GRADIENT_TEXTS[0]} texts exceed; up to "
             f"{GRADIENT_TEXTS[1]} of them, seeded): the norm of the summed loss's gradient with respect "
             "to the input embedding at each position, against its distance from the text's last token, averaged "
             "over the texts; dashed, the same network built before training (the best trial's parameters and "
             "seed). Bidirectional networks also read each text backwards, so their far positions are near an end.",
             "", "![gradient through time](probe_gradient.png)", ""]
    for dataset in datasets:
        studies = [p for p in of_dataset(probed, dataset) if any("probe/gradient/norm" in m for m in p.models)]
        if not studies:
            continue
        sets = studies[0].sets
        lines += [f"#### {dataset_title(dataset)}", "",
                  f"{sets['gradient']['texts']} texts of the {sets['split']} split, D = "
                  f"{sets['gradient']['max_distance']}.", "", *gradient_table(studies), "",
                  f"Finding: {gradient_finding(studies)}", ""]
    return lines
