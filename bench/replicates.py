"""Replicates: the tested best trial's recorded configuration retrained with other seeds, each tested once, so that
the report compares means with intervals rather than picked bests."""

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
    test with its predictions kept. Each replicate is trained by one worker at a time; a finished one is never
    rerun, a killed one is."""
    for r in replicates_left(ctx, study):
        with ctx.keys.hold(f"{study.study_name}/replicate/{r}", wait=False) as held:
            attrs = study.user_attrs
            if held is None or replicate_key(attrs, r) in attrs:
                continue  # another worker trains it, or has just finished it
            run_replicate(ctx, study, r)
        release_freed_memory()


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
            accuracy = log_test_results(ctx, module.network, run_id)["test/acc"]
            log_checkpoint(ctx, module.network, config, run_id)  # what the probes load
    except Exception as error:  # recorded on its run, as a failed trial is; the next start tries it again
        log(f"{ctx.prefix} replicate {r + 1}/{ctx.cfg.study.replicates} FAIL ({error_message(error)})")
        return
    study.set_user_attr(replicate_key(study.user_attrs, r), run_id)
    log(f"{ctx.prefix} replicate {r + 1}/{ctx.cfg.study.replicates} of trial {best.number}: test/acc {accuracy:.4f}")
