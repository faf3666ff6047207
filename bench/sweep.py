"""A sweep: one Optuna study per (dataset, architecture), every trial an MLflow child run of its study's run.

Studies live in persistent storage, so running the same sweep again resumes: finished trials are kept
and count toward the budget. The best trial of each study is evaluated once on the test split and kept
as an MLflow model that predicts from raw text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
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
import sqlalchemy
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback
from sqlalchemy.engine import make_url
from torchmetrics.functional.classification import binary_accuracy, binary_auroc, binary_f1_score

from bench import data as bench_data
from bench.config import (
    TRAINING_DEFAULTS,
    TRAINING_PARAMS,
    CategoricalParam,
    ConfigError,
    FloatParam,
    IntParam,
    SweepConfig,
)
from bench.coordination import Keys
from bench.models import build_network, network_defaults
from bench.module import ClassifierModule, training_loader
from bench.runtime import (
    UserError,
    only_process,
    redacted,
    release_freed_memory,
    runtime_dir,
    storage_url,
    tracking_uri,
)
from bench.serving import load_checkpoint, log_mlflow_model, save_checkpoint

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Queues a killed trial's parameters again; twice at most, so that a trial that kills its process cannot loop.
with warnings.catch_warnings():  # RetryHeartbeatStaleTrialCallback is marked experimental since Optuna 2.8
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY_KILLED = RetryHeartbeatStaleTrialCallback(max_retry=2)
CHECKPOINT = "checkpoint.pt"  # the artifact of a trial's run that holds its best weights, when it was the best so far
REPLICATE_SEEDS = 1_000_000  # replicate r trains with seed + this + r: no trial's seed (seed + trial number)
CONFIG_ATTR = "config"  # the trial user attribute holding its complete configuration: what its replicates train


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
        "host": socket.gethostname(),
        "worker": worker_name(),
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
    keys: Keys  # the decisions taken once for all workers

    @property
    def prefix(self) -> str:
        """What every progress line of the study starts with."""
        return f"[{self.dataset}/{self.arch}]"


def objective(trial: optuna.Trial, ctx: StudyContext, taken=lambda: None) -> float:
    """Suggest, open the trial's run, fit with the pruning callback, keep the model if it is the best so far.
    `taken` is called first: the trial has left the queue."""
    taken()
    params = trial_config(trial, ctx)
    with trial_run(trial, ctx, params) as run_id:
        module = fit_trial(trial, ctx, params, run_id)
    value = float(module.val_acc_best.compute())
    if _matches_best(trial.study, value):
        keep_checkpoint(trial, ctx, module, params, run_id)
    return value


def trial_config(trial: optuna.Trial, ctx: StudyContext) -> dict:
    """The trial's complete configuration, recorded on the trial before it trains: its suggested and fixed values,
    every default filled in. Optuna's own `params` hold the suggested values only."""
    config = resolved_config(ctx.arch, suggest(trial, ctx.cfg.space_for(ctx.arch, ctx.dataset)))
    trial.set_user_attr(CONFIG_ATTR, config)
    return config


def resolved_config(arch: str, params: dict) -> dict:
    """`params` with the training loop's and the network's defaults filled in."""
    return {**TRAINING_DEFAULTS, **network_defaults(arch), **params}


def recorded_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
    """The configuration the trial trained, as it recorded it."""
    if CONFIG_ATTR not in trial.user_attrs:
        raise UserError(f"study {study.study_name}: trial {trial.number} recorded no configuration (its store "
                        "predates bench recording one), so nothing can retrain it exactly; run the sweep afresh "
                        "under another name or BENCH_HOME")
    return trial.user_attrs[CONFIG_ATTR]


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
    # CPU, memory and GPU use, as system/<worker>/... metrics: one name per worker, so that workers' never mix.
    monitor = SystemMetricsMonitor(run_id, sampling_interval=5, node_id=worker_name().replace(":", "-"),
                                   tracking_uri=tracking_uri(ctx.cfg))
    monitor.start()
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
        monitor.finish()
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


def keep_checkpoint(trial: optuna.Trial, ctx: StudyContext, module: ClassifierModule, params: dict,
                    run_id: str) -> None:
    """Log the trial's best-epoch weights, the study's best so far, to its MLflow run: any worker can test them."""
    module.restore_best()
    log_checkpoint(ctx, module.network, params, run_id)


def log_checkpoint(ctx: StudyContext, network: torch.nn.Module, params: dict, run_id: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CHECKPOINT
        save_checkpoint(path, ctx.arch, split_params(params)[1], network, ctx.data.tokenizer)
        ctx.client.log_artifact(run_id, str(path))


def _matches_best(study: optuna.Study, value: float) -> bool:
    """Whether the trial may be the study's best: a tie too, since Optuna may name either of two equal trials best
    (with several workers, the one that finished second may hold the lower number)."""
    try:
        return value >= study.best_value
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


def run_trials(ctx: StudyContext, study: optuna.Study) -> None:
    """Run the study's trials until its budget is spent. Each trial is taken from the study's queue, which holds
    exactly the budget: several workers, however many, never run more than it."""
    budget, name = ctx.cfg.study, study.study_name
    finished = budget_trials(study)
    if not _budget_left(ctx, study):
        log(f"{ctx.prefix} study {name}: budget already spent ({len(finished)} trials finished)")
        return
    log(f"{ctx.prefix} study {name}: {len(finished)} trials already finished; running up to "
        f"{budget.n_trials - len(finished) if budget.n_trials else 'any number of'} trials"
        f"{' within ' + _fmt_seconds(budget.timeout - trial_seconds(finished)) if budget.timeout else ''}")
    progress = Progress(ctx, time.perf_counter())
    while True:
        with ctx.keys.hold(f"{name}/queue") as release:  # released once the trial is taken, as it starts
            if not _budget_left(ctx, study) or not fill_queue(ctx, study):
                return
            study.optimize(lambda trial: objective(trial, ctx, release), n_trials=1, catch=(Exception,),
                           callbacks=[progress])


def trials_pending(ctx: StudyContext, study: optuna.Study) -> bool:
    """Whether a trial is running, or queued with budget left to run it."""
    states = {t.state for t in study.get_trials(deepcopy=False)}
    return TrialState.RUNNING in states or (TrialState.WAITING in states and _budget_left(ctx, study))


def _budget_left(ctx: StudyContext, study: optuna.Study) -> bool:
    budget, finished = ctx.cfg.study, budget_trials(study)
    return ((budget.n_trials is None or len(finished) < budget.n_trials)
            and (budget.timeout is None or trial_seconds(finished) < budget.timeout))


def fill_queue(ctx: StudyContext, study: optuna.Study) -> bool:
    """Queue empty trials (the sampler picks their parameters when one is taken) until the study holds its budget:
    finished, running or queued, a killed trial counted once, as its retry. Without a trial budget, one at a time.
    Returns whether a queued trial waits."""
    retried = retried_trials(study)
    trials = [t for t in study.get_trials(deepcopy=False) if t.number not in retried]
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    wanted = ctx.cfg.study.n_trials - len(trials) if ctx.cfg.study.n_trials is not None else 1 - waiting
    for _ in range(max(0, wanted)):
        study.enqueue_trial({})
    return waiting + max(0, wanted) > 0


class Progress:
    """One line per finished trial: its state and value, the study's best, the budget left."""

    def __init__(self, ctx: StudyContext, started: float):
        self.ctx, self.started = ctx, started

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        budget, finished = self.ctx.cfg.study, budget_trials(study)
        best = "no best yet"
        if _has_complete(study):
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        value = f" val/acc {trial.value:.4f}" if trial.value is not None else ""
        error = f" ({trial.user_attrs.get('error', 'no error recorded')})" if trial.state == TrialState.FAIL else ""
        retry = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        retry = f" (retry of trial {retry}, killed)" if retry is not None else ""
        left = []
        if budget.n_trials is not None:
            left.append(f"{budget.n_trials - len(finished)} trials")
        if budget.timeout is not None:
            left.append(_fmt_seconds(max(0.0, budget.timeout - trial_seconds(finished))))
        log(f"{self.ctx.prefix} trial {len(finished)}/{budget.n_trials or '?'} {trial.state.name}{value}{error}"
            f"{retry}; {best}; this run {_fmt_seconds(time.perf_counter() - self.started)}, budget left: "
            f"{', '.join(left)}")


def _has_complete(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.trials)


def evaluate_best(ctx: StudyContext, study: optuna.Study) -> None:
    """Test the study's best trial once, and log its metrics and model to the study's run: done by one worker, once
    every trial has finished."""
    with ctx.keys.hold(f"{study.study_name}/test"):
        if trials_pending(ctx, study):
            return  # the worker that finishes the last trial tests
        if not _has_complete(study):
            log(f"{ctx.prefix} no completed trial: nothing to test")
            return
        best = study.best_trial
        if study.user_attrs.get("test_trial") == best.number:
            return
        config = recorded_config(study, best)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = Path(ctx.client.download_artifacts(best.user_attrs["mlflow_run_id"], CHECKPOINT, folder))
            network, _, _ = load_checkpoint(checkpoint)
            metrics = evaluate(ctx, network, ctx.parent_run_id)
            with mlflow.start_run(run_id=ctx.parent_run_id):
                log_mlflow_model(checkpoint)
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


def run_replicates(ctx: StudyContext, study: optuna.Study) -> None:
    """Retrain the tested best trial's configuration `study.replicates` times with other seeds, each evaluated once on
    test with its predictions kept. Each replicate is trained by one worker at a time; a finished one is never
    rerun, a killed one is."""
    for r in replicates_left(ctx, study):
        with ctx.keys.hold(f"{study.study_name}/replicate/{r}", wait=False) as held:
            attrs = study.user_attrs
            if held is None or replicate_key(attrs, r) in attrs:
                continue  # another worker trains it, or has just finished it
            run_replicate(ctx, study, r)


def replicate_key(attrs: dict, r: int) -> str:
    """The study's user attribute (of `attrs`, the study's) that holds replicate r's MLflow run id, once it has
    finished."""
    return f"replicate/{attrs['test_trial']}/{r}"


def replicates_left(ctx: StudyContext, study: optuna.Study) -> list[int]:
    """The replicates not finished yet, once the study's best trial has been tested."""
    attrs = study.user_attrs  # read from the storage: another worker may have just set some
    if "test_trial" not in attrs:
        return []
    return [r for r in range(ctx.cfg.study.replicates) if replicate_key(attrs, r) not in attrs]


def run_replicate(ctx: StudyContext, study: optuna.Study, r: int) -> None:
    """Retrain the best trial's recorded configuration, only the seed changed."""
    best = study.best_trial
    config = recorded_config(study, best)
    tags = {"replicate": str(r), "replicate_of_trial": str(best.number)}
    try:
        with child_run(ctx, f"replicate-{r}", tags, config) as run_id:
            module = fit_network(ctx, config, run_id, ctx.cfg.seed + REPLICATE_SEEDS + r, [], f"replicate {r}")
            module.restore_best()
            accuracy = evaluate(ctx, module.network, run_id)["test/acc"]
            log_checkpoint(ctx, module.network, config, run_id)  # what the probes load
    except Exception as error:  # recorded on its run, as a failed trial is; the next start tries it again
        log(f"{ctx.prefix} replicate {r + 1}/{ctx.cfg.study.replicates} FAIL ({error_message(error)})")
        return
    study.set_user_attr(replicate_key(study.user_attrs, r), run_id)
    log(f"{ctx.prefix} replicate {r + 1}/{ctx.cfg.study.replicates} of trial {best.number}: test/acc {accuracy:.4f}")


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


def parent_run_id_of(ctx: StudyContext, study: optuna.Study, tags: dict) -> str:
    """The study's MLflow run, created by the first worker of the study and found again by the others and on a
    resume."""
    run_id = study.user_attrs.get("mlflow_run_id")  # the caller holds the study's run key
    if run_id is None:
        run = ctx.client.create_run(ctx.experiment_id, run_name=study.study_name.replace("/", "-"),
                                    tags={**tags, "study": study.study_name})
        run_id = run.info.run_id
        study.set_user_attr("mlflow_run_id", run_id)
    return run_id


def close_study_run(ctx: StudyContext, study: optuna.Study) -> None:
    """Trial counts, trial time and hyperparameter importances on the study's run, which is then finished. One
    worker at a time: MLflow's server may refuse the same tag set twice at once."""
    with ctx.keys.hold(f"{study.study_name}/run"):
        _close_study_run(ctx, study)


def _close_study_run(ctx: StudyContext, study: optuna.Study) -> None:
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


def experiment_id_of(client: MlflowClient, cfg: SweepConfig) -> str:
    found = client.get_experiment_by_name(cfg.name)
    if found is not None:
        return found.experiment_id
    # With a local store, artifacts go to the runtime folder too (MLflow's default is ./mlruns).
    uri = tracking_uri(cfg)
    location = (runtime_dir() / "mlartifacts" / cfg.name).as_uri() if uri.startswith("sqlite") else None
    try:
        return client.create_experiment(cfg.name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # another worker created it first
        return client.get_experiment_by_name(cfg.name).experiment_id


def run_sweep(cfg: SweepConfig, config_path: str | Path) -> None:
    """Run (or resume) every study of the sweep, as one of any number of workers (one only on SQLite)."""
    check_networks_build(cfg, config_path)
    url = make_url(storage_url(cfg))
    if url.get_backend_name() != "sqlite":
        return run_studies(cfg, config_path, own_store=False)
    with only_process(Path(url.database)):
        return run_studies(cfg, config_path, own_store=True)


def run_studies(cfg: SweepConfig, config_path: str | Path, own_store: bool) -> None:
    """Do what is left of each study, then wait for the other workers' running trials and replicates, taking over
    those of a worker that dies. own_store: no other process uses the Optuna storage."""
    started = time.perf_counter()
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    storage = open_storage(cfg)
    # What every study shares: the client, the experiment, the keys; open_study fills in the rest.
    shared = StudyContext(cfg, "", "", None, client, experiment_id_of(client, cfg), "", Keys(storage_url(cfg)))
    log(f"sweep {cfg.name} ({config_path}): {len(cfg.datasets)} datasets x {len(cfg.architectures)} architectures "
        f"on {device_description()}, worker {worker_name()}; MLflow {redacted(uri)}; Optuna "
        f"{redacted(storage_url(cfg))}")
    studies = []
    for dataset in cfg.datasets:
        data = bench_data.load(dataset, cfg.data_for(dataset), cfg.seed, cfg.data_dir, log=log)
        log(f"[{dataset}] rows {data.stats['rows']}, vocabulary {data.vocab_size}, "
            f"train tokens per text {data.stats['train_tokens']}")
        for arch in cfg.architectures:
            studies.append(open_study(shared, config_path, dataset, arch, data, storage))
            work_on(*studies[-1], own_store)
    while waiting := [(ctx, study) for ctx, study in studies if others_working(ctx, study)]:
        log(f"waiting for other workers' trials and replicates: {', '.join(s.study_name for _, s in waiting)}")
        time.sleep(cfg.heartbeat)
        for ctx, study in waiting:
            work_on(ctx, study, own_store)
    for ctx, study in studies:  # two workers finishing a study's last replicates at once may each leave it open
        close_study_run(ctx, study)
    log(f"sweep {cfg.name} done in {_fmt_seconds(time.perf_counter() - started)}")


def open_storage(cfg: SweepConfig) -> optuna.storages.RDBStorage:
    """The Optuna storage. Its heartbeat marks a dead worker's trials failed, and the callback retries them."""
    try:
        return optuna.storages.RDBStorage(storage_url(cfg), heartbeat_interval=cfg.heartbeat,
                                          grace_period=3 * cfg.heartbeat, heartbeat_stale_trial_callback=RETRY_KILLED)
    except sqlalchemy.exc.OperationalError as error:
        raise UserError(f"cannot open the Optuna storage {redacted(storage_url(cfg))}: {error.orig}") from None


def open_study(shared: StudyContext, config_path, dataset: str, arch: str, data,
               storage) -> tuple[StudyContext, optuna.Study]:
    """The study's context (the sweep's client, experiment and keys in `shared`) and the study, created or loaded,
    with its MLflow run."""
    cfg, client = shared.cfg, shared.client
    study = optuna.create_study(study_name=study_name(cfg, dataset, arch), storage=storage, direction="maximize",
                                sampler=make_sampler(cfg), pruner=make_pruner(cfg, dataset), load_if_exists=True)
    ctx = dataclasses.replace(shared, dataset=dataset, arch=arch, data=data)
    # The validated config with overrides applied, so that the hash changes with any override too.
    config_hash = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
    tags = {**run_tags(cfg, dataset, arch), "config": str(config_path), "config_sha256": config_hash}
    with ctx.keys.hold(f"{study.study_name}/run"):  # one worker at a time writes the study's run
        ctx.parent_run_id = parent_run_id_of(ctx, study, tags)
        log_data_stats(client, ctx.parent_run_id, data.stats)
        if dataset in cfg.study.target_val_acc:  # what the report's time-to-target table reads
            client.set_tag(ctx.parent_run_id, "target_val_acc", str(cfg.study.target_val_acc[dataset]))
    return ctx, study


def work_on(ctx: StudyContext, study: optuna.Study, own_store: bool) -> None:
    """Whatever of the study is left to do and not being done by another worker."""
    close_dead_trials(ctx, study, own_store)
    run_trials(ctx, study)
    evaluate_best(ctx, study)
    run_replicates(ctx, study)
    if not others_working(ctx, study):
        close_study_run(ctx, study)


def others_working(ctx: StudyContext, study: optuna.Study) -> bool:
    """Whether another worker is running one of the study's trials or replicates (one that died counts until the
    heartbeat or PostgreSQL tells)."""
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        return True
    return any(_held(ctx, f"{study.study_name}/replicate/{r}") for r in replicates_left(ctx, study))


def _held(ctx: StudyContext, key: str) -> bool:
    with ctx.keys.hold(key, wait=False) as free:
        return free is None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def close_dead_trials(ctx: StudyContext, study: optuna.Study, own_store: bool) -> None:
    """Fail the trials of a killed worker and queue their parameters again (Optuna's heartbeat callback), and mark
    their MLflow runs, and those of its replicates, KILLED. Owning the store, every running trial is such a one;
    sharing it, the heartbeat tells which are."""
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
    with ctx.keys.hold(f"{study.study_name}/run"):  # one worker marks a dead one's runs
        mark_killed_runs(ctx, study)


def mark_killed_runs(ctx: StudyContext, study: optuna.Study) -> None:
    """Mark KILLED the study's MLflow runs left RUNNING by a dead worker: a trial's whose trial is no longer running,
    a replicate's whose key no worker holds."""
    running = {str(t.number) for t in study.get_trials(states=(TrialState.RUNNING,))}
    runs = ctx.client.search_runs([ctx.experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{ctx.parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in runs:
        tags = run.data.tags
        alive = (tags["trial"] in running if "trial" in tags
                 else _held(ctx, f"{study.study_name}/replicate/{tags.get('replicate')}"))
        if not alive:
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
