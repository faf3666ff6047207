"""The study's best trial tested once on the test split (and the held-out one): its metrics, predictions,
inference speed and servable model on the study's run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch

from bench import data as bench_data
from bench.budget import trials_pending
from bench.context import StudyContext
from bench.module import classification_metrics
from bench.runtime import log, tracking_uri
from bench.search import has_complete
from bench.serving import load_checkpoint, log_mlflow_model, predict_probabilities, predicted_classes
from bench.tracking import CHECKPOINT, log_metrics
from bench.trial import recorded_config


def evaluate_best(ctx: StudyContext, study: optuna.Study) -> None:
    """Test the study's best trial once, and log its metrics and model to the study's run: done by one worker, once
    every trial has finished."""
    with ctx.keys.hold(f"{study.study_name}/test"):
        if trials_pending(ctx, study):
            return  # the worker that finishes the last trial tests
        if not has_complete(study):
            log(f"{ctx.prefix} no completed trial: nothing to test")
            return
        best = study.best_trial
        if study.user_attrs.get("test_trial") == best.number:
            return
        config = recorded_config(study, best)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = Path(ctx.client.download_artifacts(best.user_attrs["mlflow_run_id"], CHECKPOINT, folder))
            network, _, _ = load_checkpoint(checkpoint)
            metrics = log_test_results(ctx, network, ctx.parent_run_id)
            log_mlflow_model(checkpoint, ctx.arch, ctx.parent_run_id, tracking_uri(ctx.cfg))
        log_best(ctx, best, config, network)
        study.set_user_attr("test_metrics", metrics)
        study.set_user_attr("test_trial", best.number)
    log(f"{ctx.prefix} best trial {best.number}: val/acc {best.value:.4f}, "
        f"test/acc {metrics['test/acc']:.4f} on {len(ctx.data.test)} test texts")


def log_best(ctx: StudyContext, best: optuna.trial.FrozenTrial, config: dict, network: torch.nn.Module) -> None:
    """The best trial's number, run, configuration, validation accuracy and inference speed, on the study's run."""
    run_id = ctx.parent_run_id
    test_loader = bench_data.loader(ctx.data.test, 512, shuffle=False)
    log_metrics(ctx.client, run_id, {"test/ms_per_1k_texts": inference_ms_per_1k(network, test_loader,
                                                                                 len(ctx.data.test)),
                                     "val/acc_best": best.value})
    # Tags, not params: a resumed study with a larger budget may find a new best, and params are immutable.
    for name, value in config.items():
        ctx.client.set_tag(run_id, f"best/{name}", str(value))
    ctx.client.set_tag(run_id, "best_trial", str(best.number))
    ctx.client.set_tag(run_id, "best_trial_run_id", best.user_attrs.get("mlflow_run_id", ""))


def log_test_results(ctx: StudyContext, network: torch.nn.Module, run_id: str) -> dict[str, float]:
    """Metrics on the test split, and on the held-out split where the dataset has one, logged to the run with each
    row's label and probabilities (test_predictions.csv, heldout_predictions.csv); returns the metrics."""
    metrics = {}
    for name, split in (("test", ctx.data.test), ("heldout", ctx.data.heldout)):
        if split is None:
            continue
        probability = predict_probabilities(network, split)
        collection = classification_metrics(ctx.data.num_classes, f"{name}/")
        metrics.update(collection(torch.from_numpy(probability), torch.from_numpy(split.labels)))
        predictions = predictions_table(split.labels, probability, ctx.data.class_names)
        ctx.client.log_text(run_id, predictions.to_csv(index=False, float_format="%.5g"), f"{name}_predictions.csv")
    metrics = {k: float(v) for k, v in metrics.items()}
    log_metrics(ctx.client, run_id, metrics)
    return metrics


def predictions_table(labels: np.ndarray, probability: np.ndarray, class_names: tuple[str, ...]) -> pd.DataFrame:
    """Each row's label and the positive class's probability (two classes); for K, the predicted class and every
    class's probability (`probability/<class name>`)."""
    table = pd.DataFrame({"row": np.arange(len(labels)), "label": labels})
    if probability.ndim == 1:
        return table.assign(probability=probability)
    table["predicted"] = predicted_classes(probability)
    return pd.concat([table, pd.DataFrame(probability, columns=[f"probability/{c}" for c in class_names])], axis=1)


@torch.no_grad()
def inference_ms_per_1k(network: torch.nn.Module, loader, n_texts: int) -> float:
    """Milliseconds to classify 1,000 encoded texts on the CPU, in batches of the loader's size."""
    network.eval()
    start = time.perf_counter()
    for ids, lengths, _ in loader:
        network(ids, lengths)
    return (time.perf_counter() - start) / n_texts * 1e6
