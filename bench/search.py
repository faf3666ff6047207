"""Optuna's side of a study: the suggested values, the sampler, the pruners, the storage, and which trials count
toward the budget."""

from __future__ import annotations

import time
import warnings

import optuna
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from bench.config import SweepConfig
from bench.outages import ReconnectingStorage
from bench.runtime import UserError, redacted, storage_url
from bench.search_space import CategoricalParam, FloatParam, IntParam

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Queues a killed trial's parameters again; twice at most, so that a trial that kills its process cannot loop.
with warnings.catch_warnings():  # RetryHeartbeatStaleTrialCallback is marked experimental since Optuna 2.8
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    RETRY_KILLED = RetryHeartbeatStaleTrialCallback(max_retry=2)


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


class EpochEndPruning(PyTorchLightningPruningCallback):
    """Reports val/acc to Optuna at the validation that closes an epoch only, so that Optuna's steps are epochs, as
    the pruners' settings are; the validations within an epoch are learning-curve points."""

    def on_validation_end(self, trainer, pl_module):
        if trainer.is_last_batch:
            super().on_validation_end(trainer, pl_module)


TABLE_CREATION_ATTEMPTS = 5


def open_storage(cfg: SweepConfig) -> optuna.storages.RDBStorage:
    """The Optuna storage. Its heartbeat marks a dead worker's trials failed, and the callback retries them; on
    PostgreSQL its calls outlast a restart."""
    url = storage_url(cfg)
    shared = not url.startswith("sqlite")  # PostgreSQL, which may restart under running workers
    storage = ReconnectingStorage if shared else optuna.storages.RDBStorage
    for attempt in range(TABLE_CREATION_ATTEMPTS):
        try:
            return storage(url, engine_kwargs={"pool_pre_ping": True} if shared else None,  # restarts drop connections
                           heartbeat_interval=cfg.heartbeat, grace_period=3 * cfg.heartbeat,
                           heartbeat_stale_trial_callback=RETRY_KILLED)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers opening a new database at once race to create its tables; the losers find them made.
            if attempt == TABLE_CREATION_ATTEMPTS - 1:
                raise
            time.sleep(1)
        except sqlalchemy.exc.OperationalError as error:
            raise UserError(f"cannot open the Optuna storage {redacted(storage_url(cfg))}: {error.orig}") from None


def budget_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The finished trials that count toward the budget: a trial killed with its process and retried counts once,
    as its retry."""
    retried = retried_trials(study)
    return [t for t in study.trials if t.state in FINISHED and t.number not in retried]


def retried_trials(study: optuna.Study) -> set[int]:
    """Numbers of the trials whose parameters were queued again after their process was killed."""
    return {n for t in study.trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def trial_seconds(trials) -> float:
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
               if t.datetime_complete and t.datetime_start)


def has_complete(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.trials)
