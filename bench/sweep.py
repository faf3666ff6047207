"""A sweep: one Optuna study per (dataset, architecture), every trial an MLflow child run of its study's run.

Studies live in persistent storage, so running the same sweep again resumes: finished trials are kept
and count toward the budget. The best trial of each study is evaluated once on the test split and kept
as an MLflow model that predicts from raw text, then retrained with other seeds (replicates).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from bench import data as bench_data
from bench.budget import close_dead_trials, run_trials
from bench.config import SweepConfig
from bench.context import StudyContext, SweepContext, study_name
from bench.coordination import Keys
from bench.evaluation import evaluate_best
from bench.models import USER_ARCHITECTURES
from bench.plugins import code_hash
from bench.preflight import check_networks_build
from bench.provenance import device_description, run_tags, worker_name
from bench.replicates import ablations_left, replicates_left, retraining_lock, run_replicates
from bench.runtime import UserError, fmt_seconds, log, only_process, redacted, storage_url, tracking_uri
from bench.search import make_pruner, make_sampler, open_storage
from bench.tracking import close_study_run, experiment_id_of, find_or_create_study_run, log_data_stats


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
    client = MlflowClient(uri)
    storage = open_storage(cfg)
    sweep = SweepContext(cfg, client, experiment_id_of(client, cfg), Keys(storage_url(cfg)))
    log(f"sweep {cfg.name} ({config_path}): {len(cfg.datasets)} datasets x {len(cfg.architectures)} architectures "
        f"on {device_description()}, worker {worker_name()}; MLflow {redacted(uri)}; Optuna "
        f"{redacted(storage_url(cfg))}")
    studies = []
    for dataset in cfg.datasets:
        data = bench_data.load(dataset, cfg.data_for(dataset), cfg.seed, cfg.data_dir, log=log)
        log(f"[{dataset}] rows {data.stats['rows']}, vocabulary {data.vocab_size}, "
            f"train tokens per text {data.stats['train_tokens']}")
        for arch in cfg.architectures:
            studies.append(open_study(sweep, config_path, dataset, arch, data, storage))
            work_on(*studies[-1], own_store)
    while waiting := [(ctx, study) for ctx, study in studies if others_working(ctx, study)]:
        log(f"waiting for other workers' trials and replicates: {', '.join(s.study_name for _, s in waiting)}")
        time.sleep(cfg.heartbeat)
        for ctx, study in waiting:
            work_on(ctx, study, own_store)
    for ctx, study in studies:  # two workers finishing a study's last replicates at once may each leave it open
        close_study_run(ctx, study)
    log(f"sweep {cfg.name} done in {fmt_seconds(time.perf_counter() - started)}")


def open_study(sweep: SweepContext, config_path, dataset: str, arch: str, data: bench_data.EncodedDataset,
               storage) -> tuple[StudyContext, optuna.Study]:
    """The study's context and the study, created or loaded, with its MLflow run."""
    cfg, client = sweep.cfg, sweep.client
    study = optuna.create_study(study_name=study_name(cfg, dataset, arch), storage=storage, direction="maximize",
                                sampler=make_sampler(cfg), pruner=make_pruner(cfg, dataset), load_if_exists=True)
    check_user_code(study, arch)
    # The validated config with overrides applied, so that the hash changes with any override too.
    config_hash = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
    tags = {**run_tags(cfg, dataset, arch), "config": str(config_path), "config_sha256": config_hash,
            "precision_setting": cfg.precision}
    with sweep.keys.hold(f"{study.study_name}/run"):  # one worker at a time writes the study's run
        run_id = find_or_create_study_run(sweep, study, tags)
        log_data_stats(client, run_id, data.stats)
        if dataset in cfg.study.target_val_acc:  # what the report's time-to-target table reads
            client.set_tag(run_id, "target_val_acc", str(cfg.study.target_val_acc[dataset]))
    return StudyContext(sweep, dataset, arch, data, run_id), study


def check_user_code(study: optuna.Study, arch: str) -> None:
    """A user's architecture: the first worker records its code's hash on the study; a worker whose code differs is
    refused, so that no study mixes trials of two versions of the network."""
    if arch not in USER_ARCHITECTURES:
        return
    class_path, _ = USER_ARCHITECTURES[arch]
    ours, recorded = code_hash(class_path), study.user_attrs.get("code_sha256")
    if recorded is None:
        study.set_user_attr("code_sha256", ours)
    elif recorded != ours:
        raise UserError(f"study {study.study_name}: its trials ran {class_path} with code hash {recorded}, this "
                        f"worker has {ours}: run the same code, or the sweep under another name")


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
    left = [(None, r) for r in replicates_left(ctx, study)] + ablations_left(ctx, study)
    return any(ctx.keys.is_held(retraining_lock(study.study_name, param, r)) for param, r in left)
