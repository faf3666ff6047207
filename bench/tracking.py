"""A study's MLflow records: the experiment, the study's run and its trials' and replicates' child runs, their
metrics, checkpoints, data statistics and importances, and the runs a killed worker left open."""

from __future__ import annotations

import contextlib
import tempfile
import time
import traceback
from pathlib import Path

import mlflow
import optuna
import torch
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from bench.config import SweepConfig, split_params
from bench.context import StudyContext, SweepContext
from bench.provenance import run_tags, worker_name
from bench.runtime import runtime_dir, tracking_uri
from bench.search import FINISHED, RETRY_KILLED, budget_trials, trial_seconds
from bench.serving import save_checkpoint

CHECKPOINT = "checkpoint.pt"  # the artifact of a trial's run that holds its best weights, when it was the best so far


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


def find_or_create_study_run(sweep: SweepContext, study: optuna.Study, tags: dict) -> str:
    """The study's MLflow run, created by the first worker of the study and found again by the others and on a
    resume."""
    run_id = study.user_attrs.get("mlflow_run_id")  # the caller holds the study's run key
    if run_id is None:
        run = sweep.client.create_run(sweep.experiment_id, run_name=study.study_name.replace("/", "-"),
                                    tags={**tags, "study": study.study_name})
        run_id = run.info.run_id
        study.set_user_attr("mlflow_run_id", run_id)
    return run_id


def log_data_stats(client: MlflowClient, run_id: str, stats: dict) -> None:
    params = {f"data/rows_{k}": v for k, v in stats["rows"].items()}
    params.update({f"data/train_tokens_{k}": v for k, v in stats["train_tokens"].items()})
    params.update({"data/vocab_size": stats["vocab_size"], "data/dropped_test_rows": stats["dropped_test_rows"]})
    # What a user's dataset or vectors add: the report's notes under its data table.
    params.update({f"data/{k}": stats[k] for k in ("classes", "shared_texts") if k in stats})
    params.update({f"data/vectors_{k}": v for k, v in stats.get("vectors", {}).items()})
    existing = client.get_run(run_id).data.params
    client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items() if k not in existing])


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


def log_checkpoint(ctx: StudyContext, network: torch.nn.Module, params: dict, run_id: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / CHECKPOINT
        save_checkpoint(path, ctx.arch, split_params(params)[1], network, ctx.data.tokenizer,
                        ctx.data.class_names)
        ctx.client.log_artifact(run_id, str(path))


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
                                      for k, v in metrics.items()])


def log_importances(client: MlflowClient, run_id: str, study: optuna.Study) -> None:
    """Optuna's hyperparameter importances (fANOVA) as metrics importance/<param> of the study's run."""
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):  # too few completed trials, or no parameter varied
        return
    for name, value in importances.items():
        client.log_metric(run_id, f"importance/{name}", float(value))


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


def mark_killed_runs(ctx: StudyContext, study: optuna.Study) -> None:
    """Mark KILLED the study's MLflow runs left RUNNING by a dead worker: a trial's whose trial is no longer running,
    a replicate's or an ablation's whose key no worker holds."""
    running = {str(t.number) for t in study.get_trials(states=(TrialState.RUNNING,))}
    runs = ctx.client.search_runs([ctx.experiment_id], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{ctx.parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in runs:
        tags = run.data.tags
        if "trial" in tags:
            alive = tags["trial"] in running
        else:
            from bench.replicates import retraining_lock  # here: replicates imports this module

            ablation = "ablation" in tags
            param, seed = (tags["ablation"], tags["ablation_seed"]) if ablation else (None, tags.get("replicate"))
            alive = ctx.keys.is_held(retraining_lock(study.study_name, param, seed))
        if not alive:
            ctx.client.set_tag(run.info.run_id, "state", "killed")
            ctx.client.set_terminated(run.info.run_id, "KILLED")
