"""A sweep: one Optuna study per (dataset, architecture), every trial an MLflow child run of its study's run.

Studies live in persistent storage, so running the same sweep again resumes: finished trials are kept
and count toward the budget. The best trial of each study is evaluated once on the test split and kept
as an MLflow model that predicts from raw text.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import optuna
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback
from sqlalchemy.engine import make_url
from torchmetrics.functional.classification import binary_accuracy, binary_auroc, binary_f1_score

from bench import data as bench_data
from bench.config import TRAINING_PARAMS, CategoricalParam, ConfigError, FloatParam, IntParam, SweepConfig
from bench.models import build_network
from bench.module import ClassifierModule, training_loader
from bench.runtime import only_process, release_freed_memory, runtime_dir, storage_url, tracking_uri
from bench.serving import load_checkpoint, log_mlflow_model, save_checkpoint

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Queues a killed trial's parameters again; twice at most, so that a trial that kills its process cannot loop.
with warnings.catch_warnings():  # RetryHeartbeatStaleTrialCallback is marked experimental since Optuna 2.8
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY_KILLED = RetryHeartbeatStaleTrialCallback(max_retry=2)
REPLICATE_SEEDS = 1_000_000  # replicate r trains with seed + this + r: no trial's seed (seed + trial number)
TRAINING_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "grad_clip": None}


def log(message: str) -> None:
    print(message, flush=True)


def study_name(cfg: SweepConfig, dataset: str, arch: str) -> str:
    return f"{cfg.name}/{dataset}/{arch}"


@functools.cache  # tagged on every run: read once per process
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def precision(cfg: SweepConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


@functools.cache
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(cfg: SweepConfig, dataset: str, arch: str) -> dict[str, str]:
    import lightning
    import optuna_integration

    return {
        "sweep": cfg.name,
        "dataset": dataset,
        "architecture": arch,
        "git_commit": git_commit(),
        "device": device_description(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "optuna": optuna.__version__,
        "optuna_integration": optuna_integration.__version__,
        "mlflow": mlflow.__version__,
    }


def suggest(trial: optuna.Trial, space: dict) -> dict:
    params = {}
    for name, spec in space.items():
        if isinstance(spec, FloatParam):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, IntParam):
            params[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
        elif isinstance(spec, CategoricalParam):
            params[name] = trial.suggest_categorical(name, spec.choices)
        else:
            params[name] = spec  # fixed value
    return params


def make_sampler(cfg: SweepConfig) -> optuna.samplers.BaseSampler:
    s = cfg.study.sampler
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.TPESampler(n_startup_trials=s.n_startup_trials, seed=cfg.seed)


class BeforeLastEpoch(optuna.pruners.BasePruner):
    """Prunes only before a trial's last epoch: a trial that has trained all its epochs has cost what a
    complete one costs, so it is kept as complete and its value counts."""

    def __init__(self, pruner: optuna.pruners.BasePruner, max_epochs: int):
        self.pruner, self.last_step = pruner, max_epochs - 1  # the pruning callback's step is the epoch index

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step is not None and trial.last_step < self.last_step and self.pruner.prune(study, trial)


def make_pruner(cfg: SweepConfig, dataset: str) -> optuna.pruners.BasePruner:
    p, max_epochs = cfg.study.pruner, cfg.max_epochs(dataset)
    if p.type == "median":
        median = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
        return BeforeLastEpoch(median, max_epochs)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    return optuna.pruners.NopPruner()


class EpochLines(Callback):
    """One plain line per validation, for logs and CI where no progress bar is drawn."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def on_validation_end(self, trainer, pl_module):  # after the module has logged its metrics
        m = trainer.callback_metrics
        epochs = trainer.current_epoch + (trainer.fit_loop.epoch_loop.batch_idx + 1) / trainer.num_training_batches
        log(
            f"{self.prefix} epoch {round(epochs, 2):g}/{trainer.max_epochs}: "
            f"train/loss {float(m['train/loss']):.4f} val/acc {float(m['val/acc']):.4f} "
            f"({float(m['time/elapsed_s']):.1f}s)"
        )


class EpochEndPruning(PyTorchLightningPruningCallback):
    """Reports val/acc to Optuna at the validation that closes an epoch only, so that Optuna's steps are epochs, as
    the pruners' settings are; the validations within an epoch are learning-curve points."""

    def on_validation_end(self, trainer, pl_module):
        if trainer.is_last_batch:
            super().on_validation_end(trainer, pl_module)


def make_trainer(cfg: SweepConfig, callbacks, logger=False, max_epochs: int | None = None,
                 val_check_interval: int | None = None) -> L.Trainer:
    return L.Trainer(
        accelerator="auto",
        devices=1,
        precision=precision(cfg),
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=False,  # the best epoch's weights are kept in memory by ClassifierModule
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        num_sanity_val_steps=0,
        val_check_interval=val_check_interval,
        default_root_dir=str(runtime_dir() / "lightning"),
    )


@dataclass
class StudyContext:
    cfg: SweepConfig
    dataset: str
    arch: str
    data: bench_data.EncodedDataset
    client: MlflowClient
    experiment_id: str
    parent_run_id: str
    models_dir: Path

    @property
    def prefix(self) -> str:
        """What every progress line of the study starts with."""
        return f"[{self.dataset}/{self.arch}]"


def objective(trial: optuna.Trial, ctx: StudyContext) -> float:
    """Suggest, open the trial's run, fit with the pruning callback, keep the model if it is the best so far."""
    params = suggest(trial, ctx.cfg.space_for(ctx.arch, ctx.dataset))
    with trial_run(trial, ctx, params) as run_id:
        module = fit_trial(trial, ctx, params, run_id)
    value = float(module.val_acc_best.compute())
    if _beats_best(trial.study, value):
        keep_checkpoint(trial, ctx, module, params)
    return value


def split_params(params: dict) -> tuple[dict, dict]:
    """A trial's parameters as (training loop's, with defaults filled in; network's)."""
    training = {**TRAINING_DEFAULTS, **{k: v for k, v in params.items() if k in TRAINING_PARAMS}}
    return training, {k: v for k, v in params.items() if k not in TRAINING_PARAMS}


@contextlib.contextmanager
def child_run(ctx: StudyContext, name: str, tags: dict, params: dict):
    """An MLflow child run of the study's run, closed with its final state (complete, pruned, failed or killed)
    and, on failure, the error and its traceback (error.txt)."""
    run = ctx.client.create_run(ctx.experiment_id, run_name=f"{ctx.dataset}-{ctx.arch}-{name}", tags={
        **run_tags(ctx.cfg, ctx.dataset, ctx.arch), MLFLOW_PARENT_RUN_ID: ctx.parent_run_id, **tags})
    run_id = run.info.run_id
    ctx.client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
    state = "failed"
    try:
        yield run_id
        state = "complete"
    except optuna.TrialPruned:
        state = "pruned"
        raise
    except Exception as error:
        ctx.client.set_tag(run_id, "error", error_message(error))
        ctx.client.log_text(run_id, traceback.format_exc(), "error.txt")
        raise
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, which Lightning turns into SystemExit
        state = "killed"
        raise KeyboardInterrupt from None
    finally:
        ctx.client.set_tag(run_id, "state", state)
        ctx.client.set_terminated(run_id, {"failed": "FAILED", "killed": "KILLED"}.get(state, "FINISHED"))
        release_freed_memory()


def error_message(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


@contextlib.contextmanager
def trial_run(trial: optuna.Trial, ctx: StudyContext, params: dict):
    """The trial's child run; the trial keeps its run id and error, and an interrupted trial's parameters are
    queued to run again."""
    with child_run(ctx, f"trial-{trial.number}", {"trial": str(trial.number)}, params) as run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
        try:
            yield run_id
        except Exception as error:
            trial.set_user_attr("error", error_message(error))
            raise
        except (KeyboardInterrupt, SystemExit):  # as child_run: Lightning turns Ctrl-C into SystemExit
            RETRY_KILLED(trial.study, next(t for t in trial.study.get_trials(deepcopy=False)
                                           if t.number == trial.number))
            raise


def fit_trial(trial: optuna.Trial, ctx: StudyContext, params: dict, run_id: str) -> ClassifierModule:
    """Train the trial's network, reporting each epoch's val/acc to Optuna; raises TrialPruned if pruned."""
    pruning = EpochEndPruning(trial, monitor="val/acc")
    module = fit_network(ctx, params, run_id, ctx.cfg.seed + trial.number, [pruning], f"trial {trial.number}")
    pruning.check_pruned()
    return module


def fit_network(ctx: StudyContext, params: dict, run_id: str, seed: int, callbacks: list, label: str):
    """Build the network from `params` and train it, its initialisation, data order and dropout drawn from `seed`;
    `label` names it in the progress lines."""
    cfg = ctx.cfg
    training, network_params = split_params(params)
    L.seed_everything(seed, verbose=False)
    network = build_network(ctx.arch, ctx.data.vocab_size, **network_params)
    ctx.client.log_param(run_id, "n_params", sum(p.numel() for p in network.parameters()))
    module = ClassifierModule(network, lr=training["lr"], weight_decay=training["weight_decay"],
                              grad_clip=training["grad_clip"])
    logger = MLFlowLogger(experiment_name=cfg.name, tracking_uri=tracking_uri(cfg), run_id=run_id)
    validations = cfg.validations_per_epoch(ctx.dataset)
    # Patience counts validations: `patience` epochs' worth.
    callbacks = [EarlyStopping("val/acc", mode="max", patience=cfg.study.patience * validations), *callbacks]
    if not sys.stderr.isatty():
        callbacks.append(EpochLines(f"{ctx.prefix} {label}"))
    train_loader = training_loader(ctx.data.train, training["batch_size"], seed, validations)
    trainer = make_trainer(cfg, callbacks, logger, max_epochs=cfg.max_epochs(ctx.dataset),
                           val_check_interval=max(1, len(train_loader) // validations))
    trainer.fit(module, train_loader, bench_data.loader(ctx.data.val, 512, shuffle=False))
    return module


def keep_checkpoint(trial: optuna.Trial, ctx: StudyContext, module: ClassifierModule, params: dict) -> None:
    """Save the trial's best-epoch weights, the study's best so far, for the test evaluation."""
    module.restore_best()
    path = ctx.models_dir / f"trial-{trial.number}.pt"
    save_checkpoint(path, ctx.arch, split_params(params)[1], module.network, ctx.data.tokenizer)
    trial.set_user_attr("checkpoint", str(path))


def _beats_best(study: optuna.Study, value: float) -> bool:
    try:
        return value > study.best_value
    except ValueError:  # no completed trial yet
        return True


def _fmt_seconds(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def trial_seconds(trials) -> float:
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_complete and t.datetime_start)


def budget_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished trials that count toward the budget: a trial killed with its process and retried counts once,
    as its retry."""
    retried = retried_trials(study)
    return [t for t in study.trials if t.state in FINISHED and t.number not in retried]


def retried_trials(study: optuna.Study) -> set[int]:
    """Numbers of the trials whose parameters were queued again after their process was killed."""
    return {n for t in study.trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def run_study(ctx: StudyContext, study: optuna.Study) -> None:
    cfg, name = ctx.cfg, study.study_name
    budget = cfg.study
    finished = budget_trials(study)
    trials_left = None if budget.n_trials is None else budget.n_trials - len(finished)
    time_left = None if budget.timeout is None else budget.timeout - trial_seconds(finished)
    started = time.perf_counter()

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(budget_trials(study))
        best = "no best yet"
        if _has_complete(study):
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        value = f" val/acc {trial.value:.4f}" if trial.value is not None else ""
        error = f" ({trial.user_attrs.get('error', 'no error recorded')})" if trial.state == TrialState.FAIL else ""
        retry = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        retry = f" (retry of trial {retry}, killed)" if retry is not None else ""
        spent = time.perf_counter() - started
        left = []
        if budget.n_trials is not None:
            left.append(f"{budget.n_trials - done} trials")
        if time_left is not None:
            left.append(_fmt_seconds(max(0.0, time_left - spent)))
        log(f"{ctx.prefix} trial {done}/{budget.n_trials or '?'} {trial.state.name}{value}{error}{retry}; "
            f"{best}; this run {_fmt_seconds(spent)}, budget left: {', '.join(left)}")

    if (trials_left is None or trials_left > 0) and (time_left is None or time_left > 0):
        log(f"{ctx.prefix} study {name}: {len(finished)} trials already finished; running "
            f"{'up to ' + str(trials_left) + ' trials' if trials_left is not None else 'trials'}"
            f"{' within ' + _fmt_seconds(time_left) if time_left is not None else ''}")
        study.optimize(lambda trial: objective(trial, ctx), n_trials=trials_left, timeout=time_left,
                       catch=(Exception,), callbacks=[progress])
    else:
        log(f"{ctx.prefix} study {name}: budget already spent ({len(finished)} trials finished)")


def _has_complete(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.trials)


def evaluate_best(ctx: StudyContext, study: optuna.Study) -> dict | None:
    """Test metrics of the study's best trial, evaluated once and logged with its model to the study's run."""
    if not _has_complete(study):
        log(f"{ctx.prefix} no completed trial: nothing to test")
        return None
    best = study.best_trial
    if study.user_attrs.get("test_trial") == best.number:
        return study.user_attrs["test_metrics"]
    checkpoint = Path(best.user_attrs["checkpoint"])
    network, _, _ = load_checkpoint(checkpoint)
    run_id = ctx.parent_run_id
    metrics = evaluate(ctx, network, run_id)
    test_loader = bench_data.loader(ctx.data.test, 512, shuffle=False)
    metrics["test/ms_per_1k_texts"] = inference_ms_per_1k(network, test_loader, len(ctx.data.test))
    log_metrics(ctx.client, run_id, {"test/ms_per_1k_texts": metrics["test/ms_per_1k_texts"],
                                     "val/acc_best": best.value})
    # Tags, not params: a resumed study with a larger budget may find a new best, and params are immutable.
    for name, value in best.params.items():
        ctx.client.set_tag(run_id, f"best/{name}", str(value))
    ctx.client.set_tag(run_id, "best_trial", str(best.number))
    ctx.client.set_tag(run_id, "best_trial_run_id", best.user_attrs.get("mlflow_run_id", ""))
    with mlflow.start_run(run_id=run_id):
        log_mlflow_model(checkpoint)
    study.set_user_attr("test_metrics", metrics)
    study.set_user_attr("test_trial", best.number)
    # Only the best trial's checkpoint is worth keeping.
    for path in ctx.models_dir.glob("trial-*.pt"):
        if path != checkpoint:
            path.unlink()
    log(f"{ctx.prefix} best trial {best.number}: val/acc {best.value:.4f}, "
        f"test/acc {metrics['test/acc']:.4f} on {len(ctx.data.test)} test texts")
    return metrics


def run_replicates(ctx: StudyContext, study: optuna.Study) -> None:
    """Retrain the best trial's configuration `study.replicates` times with other seeds, each evaluated once on test
    with its predictions kept. A finished replicate is never rerun; a killed one is."""
    if not ctx.cfg.study.replicates or not _has_complete(study):
        return
    best = study.best_trial
    finished = dict(study.user_attrs.get("replicates", {}))  # "best trial/replicate" -> MLflow run id
    for r in range(ctx.cfg.study.replicates):
        key = f"{best.number}/{r}"
        if key in finished:
            continue
        tags = {"replicate": str(r), "replicate_of_trial": str(best.number)}
        try:
            with child_run(ctx, f"replicate-{r}", tags, best.params) as run_id:
                seed = ctx.cfg.seed + REPLICATE_SEEDS + r
                module = fit_network(ctx, best.params, run_id, seed, [], f"replicate {r}")
                module.restore_best()
                accuracy = evaluate(ctx, module.network, run_id)["test/acc"]
        except Exception as error:  # recorded on its run, as a failed trial is; the next start tries it again
            log(f"{ctx.prefix} replicate {r + 1}/{ctx.cfg.study.replicates} FAIL ({error_message(error)})")
            continue
        finished[key] = run_id
        study.set_user_attr("replicates", finished)
        log(f"{ctx.prefix} replicate {r + 1}/{ctx.cfg.study.replicates} of trial {best.number}: "
            f"test/acc {accuracy:.4f}")


def evaluate(ctx: StudyContext, network: torch.nn.Module, run_id: str) -> dict[str, float]:
    """Metrics on the test split, and on the held-out split where the dataset has one, logged to the run with each
    row's label and probability (test_predictions.csv, heldout_predictions.csv)."""
    metrics = {}
    for name, split in (("test", ctx.data.test), ("heldout", ctx.data.heldout)):
        if split is None:
            continue
        probability = predict_probabilities(network, split)
        scores, labels = torch.from_numpy(probability), torch.from_numpy(split.labels)
        metrics.update({f"{name}/acc": binary_accuracy(scores, labels), f"{name}/f1": binary_f1_score(scores, labels),
                        f"{name}/auroc": binary_auroc(scores, labels)})
        predictions = pd.DataFrame({"row": np.arange(len(split)), "label": split.labels, "probability": probability})
        ctx.client.log_text(run_id, predictions.to_csv(index=False, float_format="%.5g"), f"{name}_predictions.csv")
    metrics = {k: float(v) for k, v in metrics.items()}
    log_metrics(ctx.client, run_id, metrics)
    return metrics


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                                      for k, v in metrics.items()])


@torch.no_grad()
def predict_probabilities(network: torch.nn.Module, split: bench_data.Split) -> np.ndarray:
    """The positive class's probability for each row of the split, in row order."""
    network.eval()
    device = next(network.parameters()).device
    probability = np.empty(len(split), dtype=np.float32)
    batches = bench_data.Batches(split)
    for rows in bench_data.BucketBatches(split.lengths, 512, shuffle=False):
        ids, lengths, _ = batches[rows]
        probability[rows] = torch.sigmoid(network(ids.to(device), lengths.to(device)).float()).cpu().numpy()
    return probability


@torch.no_grad()
def inference_ms_per_1k(network: torch.nn.Module, loader, n_texts: int) -> float:
    """Milliseconds to classify 1,000 encoded texts on the CPU, in batches of the loader's size."""
    network.eval()
    start = time.perf_counter()
    for ids, lengths, _ in loader:
        network(ids, lengths)
    return (time.perf_counter() - start) / n_texts * 1e6


def log_importances(client: MlflowClient, run_id: str, study: optuna.Study) -> None:
    """Optuna's hyperparameter importances (fANOVA) as metrics importance/<param> of the study's run."""
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):  # too few completed trials, or no parameter varied
        return
    for name, value in importances.items():
        client.log_metric(run_id, f"importance/{name}", float(value))


def parent_run_id_of(client: MlflowClient, experiment_id: str, study: optuna.Study, tags: dict) -> str:
    """The study's MLflow run, created on the first run of the study and found again on a resume."""
    run_id = study.user_attrs.get("mlflow_run_id")
    if run_id is None:
        run = client.create_run(experiment_id, run_name=study.study_name.replace("/", "-"),
                                tags={**tags, "study": study.study_name})
        run_id = run.info.run_id
        study.set_user_attr("mlflow_run_id", run_id)
    return run_id


def close_study_run(ctx: StudyContext, study: optuna.Study) -> None:
    """Trial counts, trial time and hyperparameter importances on the study's run, which is then finished."""
    counted = budget_trials(study)
    for state in FINISHED:
        count = sum(t.state == state for t in counted)
        ctx.client.set_tag(ctx.parent_run_id, f"trials_{state.name.lower()}", str(count))
    ctx.client.set_tag(ctx.parent_run_id, "trial_seconds", f"{trial_seconds(study.trials):.1f}")
    log_importances(ctx.client, ctx.parent_run_id, study)
    ctx.client.set_terminated(ctx.parent_run_id, "FINISHED")


def log_data_stats(client: MlflowClient, run_id: str, stats: dict) -> None:
    params = {f"data/rows_{k}": v for k, v in stats["rows"].items()}
    params.update({f"data/train_tokens_{k}": v for k, v in stats["train_tokens"].items()})
    params.update({"data/vocab_size": stats["vocab_size"], "data/dropped_test_rows": stats["dropped_test_rows"]})
    existing = client.get_run(run_id).data.params
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items() if k not in existing])


def experiment_id_of(client: MlflowClient, cfg: SweepConfig, uri: str) -> str:
    found = client.get_experiment_by_name(cfg.name)
    if found is not None:
        return found.experiment_id
    # With a local store, artifacts go to the runtime folder too (MLflow's default is ./mlruns).
    location = (runtime_dir() / "mlartifacts" / cfg.name).as_uri() if uri.startswith("sqlite") else None
    return client.create_experiment(cfg.name, artifact_location=location)


def run_sweep(cfg: SweepConfig, config_path: str | Path) -> dict:
    """Run (or resume) every study of the sweep; returns {(dataset, arch): test metrics or None}."""
    check_networks_build(cfg, config_path)
    url = make_url(storage_url(cfg))
    if url.get_backend_name() != "sqlite":
        return run_studies(cfg, config_path, own_store=False)
    with only_process(Path(url.database)):
        return run_studies(cfg, config_path, own_store=True)


def run_studies(cfg: SweepConfig, config_path: str | Path, own_store: bool) -> dict:
    """own_store: no other process uses the Optuna storage, so a trial left running belongs to a dead one."""
    sweep_start = time.perf_counter()
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = experiment_id_of(client, cfg, uri)
    # The heartbeat marks a dead worker's trials failed, and the callback retries their parameters.
    storage = optuna.storages.RDBStorage(storage_url(cfg), heartbeat_interval=30, grace_period=90,
                                         heartbeat_stale_trial_callback=RETRY_KILLED)
    log(f"sweep {cfg.name} ({config_path}): {len(cfg.datasets)} datasets x {len(cfg.architectures)} architectures "
        f"on {device_description()}; MLflow {uri}; Optuna {storage_url(cfg)}")

    # The validated config with overrides applied, so that the hash changes with any override too.
    config_hash = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
    results = {}
    for dataset in cfg.datasets:
        data = bench_data.load(dataset, cfg.data_for(dataset), cfg.seed, cfg.data_dir, log=log)
        log(f"[{dataset}] rows {data.stats['rows']}, vocabulary {data.vocab_size}, "
            f"train tokens per text {data.stats['train_tokens']}")
        for arch in cfg.architectures:
            study = optuna.create_study(study_name=study_name(cfg, dataset, arch), storage=storage,
                                        direction="maximize", sampler=make_sampler(cfg),
                                        pruner=make_pruner(cfg, dataset), load_if_exists=True)
            tags = {**run_tags(cfg, dataset, arch), "config": str(config_path), "config_sha256": config_hash}
            ctx = StudyContext(cfg, dataset, arch, data, client, experiment_id,
                               parent_run_id_of(client, experiment_id, study, tags),
                               runtime_dir() / "models" / cfg.name / dataset / arch)
            close_dead_trials(ctx, study, own_store)
            log_data_stats(client, ctx.parent_run_id, data.stats)
            if dataset in cfg.study.target_val_acc:  # what the report's time-to-target table reads
                client.set_tag(ctx.parent_run_id, "target_val_acc", str(cfg.study.target_val_acc[dataset]))
            run_study(ctx, study)
            results[(dataset, arch)] = evaluate_best(ctx, study)
            run_replicates(ctx, study)
            close_study_run(ctx, study)
    log(f"sweep {cfg.name} done in {_fmt_seconds(time.perf_counter() - sweep_start)}")
    return results


def close_dead_trials(ctx: StudyContext, study: optuna.Study, own_store: bool) -> None:
    """Fail the trials of a killed process and queue their parameters again (Optuna's heartbeat callback), and
    mark their MLflow runs KILLED. Owning the store, every running trial is such a one; sharing it, the heartbeat
    tells which are."""
    if own_store:
        retried = retried_trials(study)
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            # What optuna.storages.fail_stale_trials does, without waiting for the heartbeat's grace period.
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            if trial.number not in retried:  # an interrupted trial queued itself again
                RETRY_KILLED(study, trial)
            log(f"{ctx.prefix} trial {trial.number} was left running by a killed process: failed, and queued again")
    else:
        optuna.storages.fail_stale_trials(study)
    running = {t.user_attrs.get("mlflow_run_id") for t in study.get_trials(states=(TrialState.RUNNING,))}
    orphans = ctx.client.search_runs([ctx.experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{ctx.parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in orphans:
        if run.info.run_id not in running:
            ctx.client.set_tag(run.info.run_id, "state", "killed")
            ctx.client.set_terminated(run.info.run_id, "KILLED")


def check_networks_build(cfg: SweepConfig, config_path: str | Path) -> None:
    """Build each architecture, and its optimiser, with each value its search space can give (a numeric range's
    ends), one parameter at a time: a value that a network refuses is a config error before any data loads,
    rather than the failure of every trial."""
    problems = {}
    ids, lengths = torch.tensor([[2, 3, 4]]), torch.tensor([3])
    for arch in cfg.architectures:
        for dataset in cfg.datasets:
            for name, spec in cfg.space_for(arch, dataset).items():
                for value in _values_of(spec):
                    training, network_params = split_params({name: value})
                    try:
                        network = build_network(arch, 10, **network_params)
                        network(ids, lengths)
                        torch.optim.AdamW(network.parameters(), lr=training["lr"],
                                          weight_decay=training["weight_decay"])
                    except Exception as error:
                        key = cfg.key_of(arch, dataset, name)
                        problems[f"{key}: {arch} refuses {value!r} ({type(error).__name__}: {error})"] = None
    if problems:
        raise ConfigError(f"{config_path}: " + "; ".join(problems))


def _values_of(spec) -> list:
    if isinstance(spec, FloatParam | IntParam):
        return [spec.low, spec.high]
    if isinstance(spec, CategoricalParam):
        return spec.choices
    return [spec]
