"""Replicates: the tested best trial's recorded configuration retrained with other seeds, each tested once, so that
the report compares means with intervals rather than picked bests. Ablations: the same retrainings, on the same
seeds, with one parameter changed (config `ablations`), so that a recipe element is measured with and without it."""

from __future__ import annotations

import optuna

from bench.context import StudyContext
from bench.evaluation import log_test_results
from bench.runtime import log, release_freed_memory
from bench.tracking import child_run, error_message, log_checkpoint
from bench.trial import fit_network, recorded_config

REPLICATE_SEEDS = 1_000_000  # replicate r trains with seed + this + r: no trial's seed (seed + trial number)


def run_replicates(ctx: StudyContext, study: optuna.Study) -> None:
    """Retrain the tested best trial's configuration `study.replicates` times with other seeds, each evaluated once on
    test with its predictions kept; then each of the study's ablations on those seeds. Each is trained by one worker
    at a time; a finished one is never rerun, a killed one is."""
    for name, r in [*((None, r) for r in replicates_left(ctx, study)), *ablations_left(ctx, study)]:
        with ctx.keys.hold(retraining_lock(study.study_name, name, r), wait=False) as held:
            attrs = study.user_attrs
            if held is None or retraining_key(attrs, name, r) in attrs:
                continue  # another worker trains it, or has just finished it
            retrain(ctx, study, name, r)
        release_freed_memory()


def retraining_key(attrs: dict, param: str | None, r: int) -> str:
    """The study's user attribute (of `attrs`, the study's) that holds the MLflow run id of replicate r, or of the
    ablation of `param` on its seed, once it has finished."""
    return f"replicate/{attrs['test_trial']}/{r}" if param is None else f"ablation/{attrs['test_trial']}/{param}/{r}"


def retraining_lock(study_name: str, param: str | None, r: int) -> str:
    """The key a worker holds while it trains replicate r, or the ablation of `param` on its seed."""
    return f"{study_name}/replicate/{r}" if param is None else f"{study_name}/ablation/{param}/{r}"


def replicates_left(ctx: StudyContext, study: optuna.Study) -> list[int]:
    """The replicates not finished yet, once the study's best trial has been tested."""
    attrs = study.user_attrs  # read from the storage: another worker may have just set some
    if "test_trial" not in attrs:
        return []
    return [r for r in range(ctx.cfg.study.replicates) if retraining_key(attrs, None, r) not in attrs]


def ablations_left(ctx: StudyContext, study: optuna.Study) -> list[tuple[str, int]]:
    """(parameter, seed) of the study's ablations not finished yet, once the best trial has been tested."""
    attrs = study.user_attrs
    if "test_trial" not in attrs:
        return []
    return [(param, r) for param in ctx.cfg.ablations.get(f"{ctx.dataset}/{ctx.arch}", {})
            for r in range(ctx.cfg.study.replicates) if retraining_key(attrs, param, r) not in attrs]


def changed_config(ctx: StudyContext, config: dict, param: str) -> dict:
    """The configuration with `param` set to the first of its ablation values that differs from the config's."""
    values = ctx.cfg.ablations[f"{ctx.dataset}/{ctx.arch}"][param]
    value = next((v for v in values if v != config[param]), values[0])
    return {**config, param: value}


def retrain(ctx: StudyContext, study: optuna.Study, param: str | None, r: int) -> None:
    """Retrain the best trial's recorded configuration with replicate r's seed: as it is (`param` None), or with
    `param` changed."""
    best = study.best_trial
    config = recorded_config(study, best)
    of = f"{r + 1}/{ctx.cfg.study.replicates}"
    if param is None:  # progress: "replicate r epoch ...", done: "replicate r+1/n of trial ..."
        progress, label = f"replicate {r}", f"replicate {of}"
        tags = {"replicate": str(r), "replicate_of_trial": str(best.number)}
    else:
        config = changed_config(ctx, config, param)
        progress, label = f"ablation {param}={config[param]} seed {r}", f"ablation {param}={config[param]} seed {of}"
        tags = {"ablation": param, "ablation_seed": str(r), "ablation_of_trial": str(best.number)}
    try:
        with child_run(ctx, progress.replace(" ", "-"), tags, config) as run_id:
            module = fit_network(ctx, config, run_id, ctx.cfg.seed + REPLICATE_SEEDS + r, [], progress)
            module.restore_best()
            accuracy = log_test_results(ctx, module.network, run_id)["test/acc"]
            if param is None:
                log_checkpoint(ctx, module.network, config, run_id)  # what the probes load
    except Exception as error:  # recorded on its run, as a failed trial is; the next start tries it again
        log(f"{ctx.prefix} {label} FAIL ({error_message(error)})")
        return
    study.set_user_attr(retraining_key(study.user_attrs, param, r), run_id)
    log(f"{ctx.prefix} {label} of trial {best.number}: test/acc {accuracy:.4f}")
