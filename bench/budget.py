"""A study's trial budget, exact with any number of workers: the queue that holds it, the loop that spends it,
one progress line per trial, and the trials a killed worker left running."""

from __future__ import annotations

import time

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bench.context import StudyContext
from bench.runtime import fmt_seconds, log, release_freed_memory
from bench.search import RETRY_KILLED, budget_trials, has_complete, retried_trials, trial_seconds
from bench.tracking import mark_killed_runs
from bench.trial import objective


def run_trials(ctx: StudyContext, study: optuna.Study) -> None:
    """Run the study's trials until its budget is spent. Each trial is taken from the study's queue, which holds
    exactly the budget: several workers, however many, never run more than it."""
    budget, name = ctx.cfg.study, study.study_name
    finished = budget_trials(study)
    if not budget_left(ctx, study):
        log(f"{ctx.prefix} study {name}: budget already spent ({len(finished)} trials finished)")
        return
    log(f"{ctx.prefix} study {name}: {len(finished)} trials already finished; running up to "
        f"{budget.n_trials - len(finished) if budget.n_trials else 'any number of'} trials"
        f"{' within ' + fmt_seconds(budget.timeout - trial_seconds(finished)) if budget.timeout else ''}")
    progress = Progress(ctx, time.perf_counter())
    while True:
        with ctx.keys.hold(f"{name}/queue") as release:  # released once the trial is taken, as it starts
            if not budget_left(ctx, study) or not fill_queue(ctx, study):
                return
            study.optimize(lambda trial: objective(trial, ctx, release), n_trials=1, catch=(Exception,),
                           callbacks=[progress])
        release_freed_memory()


def trials_pending(ctx: StudyContext, study: optuna.Study) -> bool:
    """Whether a trial is running, or queued with budget left to run it."""
    states = {t.state for t in study.get_trials(deepcopy=False)}
    return TrialState.RUNNING in states or (TrialState.WAITING in states and budget_left(ctx, study))


def budget_left(ctx: StudyContext, study: optuna.Study) -> bool:
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
        if has_complete(study):
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        value = f" val/acc {trial.value:.4f}" if trial.value is not None else ""
        error = f" ({trial.user_attrs.get('error', 'no error recorded')})" if trial.state == TrialState.FAIL else ""
        retry = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        retry = f" (retry of trial {retry}, killed)" if retry is not None else ""
        left = []
        if budget.n_trials is not None:
            left.append(f"{budget.n_trials - len(finished)} trials")
        if budget.timeout is not None:
            left.append(fmt_seconds(max(0.0, budget.timeout - trial_seconds(finished))))
        log(f"{self.ctx.prefix} trial {len(finished)}/{budget.n_trials or '?'} {trial.state.name}{value}{error}"
            f"{retry}; {best}; this run {fmt_seconds(time.perf_counter() - self.started)}, budget left: "
            f"{', '.join(left)}")


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
