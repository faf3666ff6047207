"""One trial: its complete configuration (recorded before it trains), its network fitted with the pruning callback,
its best weights kept when it is the study's best so far."""

from __future__ import annotations

import sys

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import MLFlowLogger

from bench import data as bench_data
from bench.config import TRAINING_DEFAULTS, SweepConfig, split_params
from bench.context import StudyContext
from bench.models import USER_ARCHITECTURES, build_network, network_defaults
from bench.module import ClassifierModule, training_loader
from bench.precision import training_precision
from bench.runtime import UserError, log, runtime_dir, tracking_uri
from bench.search import EpochEndPruning, suggest
from bench.tracking import log_checkpoint, trial_run
from bench.vectors import init_embedding_

STOPPED_BY = "stopped_by"  # the run tag saying why its training ended (stop_reason)
CONFIG_ATTR = "config"  # the trial user attribute holding its complete configuration: what its replicates train


def objective(trial: optuna.Trial, ctx: StudyContext, taken=lambda: None) -> float:
    """Suggest, open the trial's run, fit with the pruning callback, keep the model if it is the best so far.
    `taken` is called first: the trial has left the queue."""
    taken()
    params = trial_config(trial, ctx)
    with trial_run(trial, ctx, params) as run_id:
        module = fit_trial(trial, ctx, params, run_id)
    value = float(module.val_acc_best.compute())
    if matches_best(trial.study, value):
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
    network = build_network(ctx.arch, ctx.data.vocab_size, ctx.data.num_classes, **network_params)
    if ctx.data.vectors is not None and ctx.arch not in USER_ARCHITECTURES:
        init_embedding_(network.embedding, ctx.data.vectors, cfg.data_for(ctx.dataset).vectors.freeze)
    ctx.client.log_param(run_id, "n_params", sum(p.numel() for p in network.parameters()))
    max_epochs = cfg.max_epochs(ctx.dataset)
    module = ClassifierModule(network, lr=training["lr"], weight_decay=training["weight_decay"],
                              grad_clip=training["grad_clip"], num_classes=ctx.data.num_classes,
                              lr_schedule=training["lr_schedule"],
                              total_steps=max_epochs * -(-len(ctx.data.train) // training["batch_size"]))
    logger = MLFlowLogger(experiment_name=cfg.name, tracking_uri=tracking_uri(cfg), run_id=run_id)
    validations = cfg.validations_per_epoch(ctx.dataset)
    # Patience counts validations: `patience` epochs' worth.
    patience = EarlyStopping("val/acc", mode="max", patience=cfg.patience(ctx.dataset) * validations)
    callbacks = [patience, *callbacks]
    if not sys.stderr.isatty():
        callbacks.append(EpochLines(f"{ctx.prefix} {label}"))
    train_loader = training_loader(ctx.data.train, training["batch_size"], seed, validations)
    trainer = make_trainer(cfg, ctx.arch, callbacks, logger, max_epochs=max_epochs,
                           val_check_interval=max(1, len(train_loader) // validations))
    ctx.client.set_tag(run_id, "precision", trainer.precision)
    trainer.fit(module, train_loader, bench_data.loader(ctx.data.val, 512, shuffle=False))
    ctx.client.set_tag(run_id, STOPPED_BY, stop_reason(trainer, patience))
    return module


def stop_reason(trainer: L.Trainer, patience: EarlyStopping) -> str:
    """Why training ended: `patience` (val/acc stopped improving), `pruned`, or `epoch cap` (max_epochs trained)."""
    if patience.wait_count >= patience.patience:
        return "patience"
    return "pruned" if trainer.should_stop else "epoch cap"


def keep_checkpoint(trial: optuna.Trial, ctx: StudyContext, module: ClassifierModule, params: dict,
                    run_id: str) -> None:
    """Log the trial's best-epoch weights, the study's best so far, to its MLflow run: any worker can test them."""
    module.restore_best()
    log_checkpoint(ctx, module.network, params, run_id)


def matches_best(study: optuna.Study, value: float) -> bool:
    """Whether the trial may be the study's best: a tie too, since Optuna may name either of two equal trials best
    (with several workers, the one that finished second may hold the lower number)."""
    try:
        return value >= study.best_value
    except ValueError:  # no completed trial yet
        return True


def make_trainer(cfg: SweepConfig, arch: str, callbacks, logger=False, max_epochs: int | None = None,
                 val_check_interval: int | None = None) -> L.Trainer:
    return L.Trainer(
        accelerator="auto",
        devices=1,
        precision=training_precision(cfg, arch),
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
