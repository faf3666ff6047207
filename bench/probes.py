"""Probes: the seed articles' claims about each architecture, measured on the sweep's trained models.

- word order (seed 001): minimal pairs, the same words in another order and the opposite meaning;
- long-range memory (seeds 000, 002): a short review followed, or preceded, by k tokens of neutral filler;
- gradient through time (seeds 000, 002): the loss gradient's norm at each input position, by its distance from the
  last token, on the trained network and at initialisation.

`bench probe NAME` runs them on each study's best model and its replicates, loaded from the MLflow store. The
results are metrics of each model's run (their steps: the filler's length, or the distance), the probe sets
artifacts of the study's run; bench/report/probes.py turns them into the report's "Probes" section.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from bench import data as bench_data
from bench.config import SweepConfig
from bench.data import EncodedDataset
from bench.models import RECURRENT, build_network
from bench.probe_sets import MEMORY_DISTANCES, GradientSet, MemorySet, OrderSet, ProbeSets, as_split, probe_sets
from bench.runtime import UserError, log, redacted
from bench.serving import load_checkpoint, predict_probabilities
from bench.tracking import CHECKPOINT

# The probe sets are negative and positive reviews: a user's dataset, of any classes, has no such texts.
NOT_SENTIMENT = "the probes' texts are negative and positive sentiment, the classes of the built-in datasets only"
TIE = 1e-6  # probabilities closer than this count as equal: float32 sums in another order differ by less
PROBE_SETS, ORDER_PAIRS = "probes/probe_sets.json", "probes/order_pairs.csv"  # artifacts of each study's run



def probabilities(network: torch.nn.Module, texts: list[np.ndarray]) -> np.ndarray:
    return predict_probabilities(network, as_split(texts))


def order_metrics(network: torch.nn.Module, order: OrderSet, tokenizer) -> dict[str, float]:
    """Accuracy on the pairs' texts; the share of pairs whose predicted classes differ (flipped), and differ the right
    way; the share whose positive text gets the higher probability (ties half: 0.5 for an order-blind model). No
    metrics without pairs (in a small vocabulary, no template's words may all be known)."""
    if order.pairs.empty:
        return {}
    encoded = bench_data.encode(tokenizer, [*order.pairs["positive"], *order.pairs["negative"]],
                                np.zeros(2 * len(order.pairs)))
    probability = predict_probabilities(network, encoded)
    positive, negative = np.split(probability, 2)
    gap = positive - negative
    flipped = ((positive > 0.5) != (negative > 0.5)) & (np.abs(gap) > TIE)
    return {"probe/order/acc": float(((positive > 0.5).sum() + (negative <= 0.5).sum()) / len(probability)),
            "probe/order/flipped": float(flipped.mean()),
            "probe/order/flipped_right": float((flipped & (positive > 0.5)).mean()),
            "probe/order/ordered_right": float(np.where(np.abs(gap) <= TIE, 0.5, gap > 0).mean())}


def memory_metrics(network: torch.nn.Module, memory: MemorySet) -> dict[str, list[tuple[int, float]]]:
    """Of the reviews the network classifies right alone, the share still right with k filler tokens after (and
    before) them, and the AUROC of their probabilities (unmoved by a filler that pushes every text one way), per k;
    and its mean probability on filler alone (0.5 if the filler is neutral to it)."""
    right = np.flatnonzero((probabilities(network, memory.parts) > 0.5) == memory.labels)
    metrics = {"probe/memory/texts": [(0, float(len(right)))]}
    if len(right) == 0:
        return metrics
    labels = torch.from_numpy(memory.labels[right])
    for side in ("after", "before"):
        texts = [memory.text(i, side, k) for k in MEMORY_DISTANCES for i in right]
        by_distance = zip(MEMORY_DISTANCES, np.split(probabilities(network, texts), len(MEMORY_DISTANCES)))
        for k, probability in by_distance:
            scores = torch.from_numpy(probability)
            metrics.setdefault(f"probe/memory/{side}/acc", []).append((k, float(binary_accuracy(scores, labels))))
            metrics.setdefault(f"probe/memory/{side}/auroc", []).append((k, float(binary_auroc(scores, labels))))
    length = min(MEMORY_DISTANCES[-2], memory.max_len)
    filler = [memory.filler[s:s + length] for s in memory.starts]
    metrics["probe/memory/filler_positive"] = [(0, float(probabilities(network, filler).mean()))]
    return metrics


def gradient_norms(network: torch.nn.Module, gradient: GradientSet) -> np.ndarray:
    """Mean over the texts of the norm of d(loss)/d(input embedding) at each distance 0..max_distance from the text's
    last token (summed loss: a text's gradient does not depend on the batch)."""
    network.eval()  # no dropout; the recurrent layers' backward runs in eval mode on the CPU
    captured = []
    hook = network.embedding.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        ids, lengths, labels = bench_data.Batches(gradient.texts)[np.arange(len(gradient.texts))]
        with torch.enable_grad():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(network(ids, lengths), labels.float(),
                                                                        reduction="sum")
            (grad,) = torch.autograd.grad(loss, captured[0])
    finally:
        hook.remove()
    distances = torch.arange(gradient.max_distance + 1)
    positions = lengths[:, None] - 1 - distances[None, :]  # every text is longer than max_distance
    # The recurrent networks look their tokens up time-major, bilstm's two reading orders stacked: ([2,] T, B, E).
    norms = grad.norm(dim=-1)
    norms = (norms[0] if norms.dim() == 3 else norms).t().gather(1, positions)  # the forward reading's, (B, T)
    return norms.mean(dim=0).double().numpy()


@dataclass
class ProbedModel:
    run_id: str  # the run its probe metrics go to: the study's for its best model, a replicate's own
    name: str  # "best" or "replicate r"
    network: torch.nn.Module
    checkpoint: dict


def study_models(client: MlflowClient, study_run, folder: Path) -> list[ProbedModel]:
    """The study's logged model (its best trial's) and the replicates that kept their weights (checkpoint.pt)."""
    tags, run_id = study_run.data.tags, study_run.info.run_id
    logged = client.search_logged_models([study_run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    if not logged:
        return []
    # The pyfunc model keeps the checkpoint file among its artifacts (serving.log_mlflow_model).
    files = mlflow.artifacts.download_artifacts(artifact_uri=f"{logged[0].artifact_location}/artifacts",
                                                dst_path=str(folder / "best"))
    paths = [("best", run_id, next(Path(files).glob("*.pt")))]
    replicates = client.search_runs([study_run.info.experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}' and tags.replicate_of_trial = '{tags.get('best_trial')}' and "
        "attributes.status = 'FINISHED'"))
    for r in sorted(replicates, key=lambda r: int(r.data.tags["replicate"])):
        if any(a.path == CHECKPOINT for a in client.list_artifacts(r.info.run_id)):  # older sweeps kept none
            path = client.download_artifacts(r.info.run_id, CHECKPOINT, str(folder / r.info.run_id))
            paths.append((f"replicate {r.data.tags['replicate']}", r.info.run_id, Path(path)))
    models = []
    for name, target, path in paths:
        network, _, checkpoint = load_checkpoint(path)
        models.append(ProbedModel(target, name, network, checkpoint))
    return models


def log_step_metrics(client: MlflowClient, run_id: str, metrics: dict) -> None:
    """Metrics as {key: value} or {key: [(step, value), ...]}, in MLflow's batches of at most 1,000."""
    now = int(time.time() * 1000)
    entries = [mlflow.entities.Metric(key, float(value), now, step)
               for key, values in metrics.items()
               for step, value in (values if isinstance(values, list) else [(0, values)])]
    for start in range(0, len(entries), 1000):
        client.log_batch(run_id, metrics=entries[start:start + 1000])


def model_metrics(model: ProbedModel, sets: ProbeSets, tokenizer) -> dict:
    metrics = dict(order_metrics(model.network, sets.order, tokenizer))
    if sets.memory is not None:
        metrics.update(memory_metrics(model.network, sets.memory))
    if sets.gradient is not None and model.checkpoint["architecture"] in RECURRENT:
        metrics["probe/gradient/norm"] = list(enumerate(gradient_norms(model.network, sets.gradient)))
    return metrics


def initial_gradient(model: ProbedModel, sets: ProbeSets, seed: int) -> dict:
    """The gradient probe on the best model's network as built before training (same parameters and seed rule)."""
    if sets.gradient is None or model.checkpoint["architecture"] not in RECURRENT:
        return {}
    torch.manual_seed(seed)
    network = build_network(model.checkpoint["architecture"], model.checkpoint["vocab_size"],
                            **model.checkpoint["network_params"])
    return {"probe/gradient_init/norm": list(enumerate(gradient_norms(network, sets.gradient)))}


def probe_study(client: MlflowClient, study_run, sets: ProbeSets, data: EncodedDataset, seed: int) -> None:
    """Every probe on every model of the study, logged; then the sets on the study's run, and its `probes` tag."""
    tags, prefix = study_run.data.tags, f"[{study_run.data.tags['dataset']}/{study_run.data.tags['architecture']}]"
    with tempfile.TemporaryDirectory() as folder:
        models = study_models(client, study_run, Path(folder))
    if not models:
        log(f"{prefix} probes: no trained model to probe")
        return
    if models[0].checkpoint["tokenizer"] != data.tokenizer.to_str():
        raise UserError(f"{prefix}: the model's vocabulary differs from the one the config's data settings give; "
                        "probe with the config the sweep ran with")
    started = time.perf_counter()
    for model in models:
        log_step_metrics(client, model.run_id, model_metrics(model, sets, data.tokenizer))
    log_step_metrics(client, study_run.info.run_id, initial_gradient(models[0], sets, seed + int(tags["best_trial"])))
    client.log_text(study_run.info.run_id, sets.order.pairs.to_csv(index=False), ORDER_PAIRS)
    client.log_text(study_run.info.run_id, json.dumps(sets.summary(), indent=1), PROBE_SETS)
    client.set_tag(study_run.info.run_id, "probes", "done")
    log(f"{prefix} probes: {', '.join(m.name for m in models)} in {time.perf_counter() - started:.1f}s")


def config_of_sweep(name: str, tracking_uri: str) -> str:
    """The config file the sweep ran with, as its study runs record it."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.config != ''", max_results=1) if experiment else []
    if not runs:
        raise UserError(f"no sweep {name!r} with runs in the tracking store {redacted(tracking_uri)}")
    path = runs[0].data.tags.get("config", "")
    if not Path(path).is_file():
        raise UserError(f"sweep {name!r} ran with the config {path!r}, which is not here: give its path")
    return path


def run_probes(cfg: SweepConfig, tracking_uri: str, again: bool) -> None:
    """Probe every finished study of the sweep; again=False leaves the studies already probed."""
    mlflow.set_tracking_uri(tracking_uri)  # where the logged models download from
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.name)
    if experiment is None:
        raise UserError(f"no sweep {cfg.name!r} in the tracking store {redacted(tracking_uri)}: run it first")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.best_trial_run_id != ''",
                              max_results=1000)
    studies = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags and (again or "probes" not in r.data.tags)]
    started = time.perf_counter()
    for dataset in cfg.datasets:
        todo = [r for r in studies if r.data.tags.get("dataset") == dataset]
        if not todo:
            continue
        if dataset not in bench_data.BUILT_IN:
            log(f"[{dataset}] probes skipped: {NOT_SENTIMENT}")
            for run in todo:
                client.set_tag(run.info.run_id, "probes", f"skipped: {NOT_SENTIMENT}")
            continue
        data = bench_data.load(dataset, cfg.data_for(dataset), cfg.seed, cfg.data_dir, log=log)
        max_len = cfg.data_for(dataset).max_len
        sets = probe_sets(data, max_len, cfg.seed)
        memory = f"{len(sets.memory.parts)} reviews" if sets.memory else sets.notes["memory"]
        gradient = (f"{len(sets.gradient.texts)} texts to distance {sets.gradient.max_distance}" if sets.gradient
                    else sets.notes["gradient"])
        log(f"[{dataset}] probe sets: {len(sets.order.pairs)} word-order pairs; memory: {memory}; gradient: {gradient}")
        for run in todo:
            probe_study(client, run, sets, data, cfg.seed)
    log(f"probes done in {time.perf_counter() - started:.1f}s")

