"""A sweep's studies, their trials and replicates, read from the MLflow store into plain data."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.runtime import UserError


class ReportError(UserError, RuntimeError):
    pass


@dataclass
class Trial:
    run_id: str
    number: int
    state: str  # complete, pruned, failed, killed, or running (no final state: still running, or killed unseen)
    val_acc: float | None
    train_seconds: float | None  # wall-clock seconds of the trial's fit
    run_seconds: float  # MLflow run duration
    params: dict
    metrics: dict
    error: str = ""
    worker: str = ""  # host:pid of the process that ran it
    stopped_by: str = ""  # why its training ended: patience, pruned or epoch cap (trial.stop_reason); "" if untagged
    precision: str = ""  # Lightning's precision it trained in (bench/precision.py); "" if untagged


@dataclass
class Study:
    dataset: str
    arch: str
    run_id: str
    tags: dict
    params: dict
    metrics: dict
    trials: list[Trial] = field(default_factory=list)
    # Each finished retraining of the best trial's configuration with another seed, tested once.
    replicates: list[Trial] = field(default_factory=list)
    # Each finished ablation: a replicate's seed with one parameter changed (number: the seed's replicate).
    ablations: dict[str, list[Trial]] = field(default_factory=dict)

    @property
    def best(self) -> Trial | None:
        run_id = self.tags.get("best_trial_run_id")
        return next((t for t in self.trials if t.run_id == run_id), None)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


def _seconds(run) -> float:
    end = run.info.end_time or run.info.start_time
    return (end - run.info.start_time) / 1000


def collect(client: MlflowClient, sweep: str) -> tuple[list[Study], str]:
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise ReportError(f"no sweep {sweep!r} in the tracking store {client.tracking_uri}; sweeps there: {names}")
    runs = client.search_runs([experiment.experiment_id], max_results=50_000)
    parents = {r.info.run_id: r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags}
    studies = {
        run_id: Study(r.data.tags.get("dataset", "?"), r.data.tags.get("architecture", "?"), run_id,
                      r.data.tags, r.data.params, r.data.metrics)
        for run_id, r in parents.items()
    }
    for r in runs:
        parent = r.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent not in studies:
            continue
        m, tags, study = r.data.metrics, r.data.tags, studies[parent]
        kind = "replicate" if "replicate" in tags else "ablation" if "ablation" in tags else "trial"
        if kind != "trial" and (tags.get(f"{kind}_of_trial") != study.tags.get("best_trial") or "test/acc" not in m):
            continue  # a retraining of an earlier best trial, or one that did not finish
        into = (study.trials if kind == "trial" else study.replicates if kind == "replicate"
                else study.ablations.setdefault(tags["ablation"], []))
        into.append(Trial(
            run_id=r.info.run_id,
            number=int(tags.get("ablation_seed" if kind == "ablation" else kind, -1)),
            state=tags.get("state", "running"),
            val_acc=m.get("val/acc_best"),
            train_seconds=m.get("time/elapsed_s"),
            run_seconds=_seconds(r),
            params=r.data.params,
            metrics=m,
            error=tags.get("error", ""),
            worker=tags.get("worker", ""),
            stopped_by=tags.get("stopped_by", ""),
            precision=tags.get("precision", ""),
        ))
    for study in studies.values():
        study.trials.sort(key=lambda t: t.number)
        study.replicates.sort(key=lambda t: t.number)
        for runs in study.ablations.values():
            runs.sort(key=lambda t: t.number)
    ordered = sorted(studies.values(), key=lambda s: (s.dataset, s.arch))
    return ordered, experiment.experiment_id


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """A run's metric at each step: the latest value where a step was logged again (a probe run again logs them)."""
    latest = {}
    for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
        latest[m.step] = m.value
    return latest


def median_or_none(values) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None
