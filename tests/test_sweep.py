"""The trial life cycle: pruned and failed trials are recorded as such and the sweep goes on; a replicate retrains
exactly its trial's configuration."""

import contextlib
import functools
import types
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from lightning.pytorch.callbacks import EarlyStopping
from optuna.trial import TrialState

from bench import precision, replicates, search, sweep
from bench import trial as bench_trial
from bench.config import load_config, split_params
from bench.context import StudyContext, SweepContext, study_name
from bench.models import build_network
from bench.runtime import UserError, storage_url

SHIPPED = sorted((Path(__file__).parents[1] / "sweeps").rglob("*.yaml"))


def study_of(cfg, arch="averaging"):
    return optuna.load_study(study_name=study_name(cfg, "imdb", arch), storage=storage_url(cfg))


def states(cfg, arch="averaging"):
    return [t.state for t in study_of(cfg, arch).trials]


def test_pruned_trial_is_recorded_as_pruned(runtime, tiny_sweep, monkeypatch):
    # Deterministic: validation accuracy is never above 1.1, so every trial is pruned after its first epoch.
    monkeypatch.setattr(sweep, "make_pruner", lambda cfg, dataset: optuna.pruners.ThresholdPruner(lower=1.1))
    cfg = load_config(tiny_sweep)
    sweep.run_sweep(cfg, tiny_sweep)
    assert states(cfg) == [TrialState.PRUNED, TrialState.PRUNED]
    assert "test_metrics" not in study_of(cfg).user_attrs  # no completed trial, so nothing to test


class NaNNetwork(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, lengths):
        return self.weight * float("nan") + torch.zeros(len(ids))


def test_nan_loss_fails_the_trial_and_the_sweep_goes_on(runtime, tiny_sweep, monkeypatch):
    real_build = bench_trial.build_network
    monkeypatch.setattr(bench_trial, "build_network",
                        lambda arch, *a, **k: NaNNetwork() if arch == "averaging" else real_build(arch, *a, **k))
    cfg = load_config(tiny_sweep, ["architectures=[averaging, bag_concat]", "study.pruner.type=none"])
    sweep.run_sweep(cfg, tiny_sweep)
    assert states(cfg, "averaging") == [TrialState.FAIL, TrialState.FAIL]
    assert "training loss is nan" in study_of(cfg).trials[0].user_attrs["error"]
    assert states(cfg, "bag_concat") == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert study_of(cfg, "bag_concat").user_attrs["test_metrics"]["test/acc"] > 0.5


def test_a_trial_is_never_pruned_after_its_last_epoch():
    study = optuna.create_study(pruner=search.BeforeLastEpoch(optuna.pruners.ThresholdPruner(lower=1.1), 2))
    trial = study.ask()
    trial.report(0.5, step=0)
    assert trial.should_prune()  # below the threshold before the last epoch
    trial.report(0.5, step=1)
    assert not trial.should_prune()  # the last epoch is done: the trial is complete


class TrainedConfigs:
    """Stands in for training: records each configuration fit_network is given and its network's size."""

    def __init__(self):
        self.trained, self.seeds = [], []

    def fit_network(self, ctx, params, run_id, seed, callbacks, label):
        network = build_network(ctx.arch, ctx.data.vocab_size, **split_params(params)[1])
        self.trained.append((split_params(params), sum(p.numel() for p in network.parameters())))
        self.seeds.append(seed)
        return types.SimpleNamespace(val_acc_best=types.SimpleNamespace(compute=lambda: 0.5), network=network,
                                     restore_best=lambda: None)


@pytest.fixture
def fake(monkeypatch):
    """Trials, replicates and ablations trained by TrainedConfigs, with no MLflow run, checkpoint or test."""
    fake = TrainedConfigs()
    run = contextlib.contextmanager(lambda *args: (yield "run"))
    for module in (bench_trial, replicates):
        monkeypatch.setattr(module, "fit_network", fake.fit_network)
    monkeypatch.setattr(bench_trial, "trial_run", run)
    monkeypatch.setattr(bench_trial, "keep_checkpoint", lambda *args: None)
    monkeypatch.setattr(replicates, "child_run", run)
    monkeypatch.setattr(replicates, "log_checkpoint", lambda *args: None)
    monkeypatch.setattr(replicates, "log_test_results", lambda *args: {"test/acc": 0.5})
    return fake


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_a_replicate_trains_exactly_its_trials_configuration(config, mirror, monkeypatch, fake):
    """For every study of every shipped sweep: the training settings (batch size, clipping, learning rate, ...), the
    network's arguments and its parameter count that a replicate trains equal those its trial trained."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(mirror))  # imdb-stars.yaml reads its files from the mirror
    cfg = load_config(config)
    for dataset in cfg.datasets:
        for arch in cfg.architectures:
            data = types.SimpleNamespace(vocab_size=50)
            ctx = StudyContext(SweepContext(cfg, None, "", None), dataset, arch, data, "")
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
            study.optimize(functools.partial(bench_trial.objective, ctx=ctx), n_trials=1)
            study.set_user_attr("test_trial", study.best_trial.number)
            replicates.retrain(ctx, study, None, 0)
            trained, replicate = fake.trained[-2:]
            assert replicate == trained, f"{config.name}: {dataset}/{arch}"


def test_an_ablation_trains_its_replicates_seed_and_configuration_with_one_parameter_changed(mirror, monkeypatch,
                                                                                           fake):
    monkeypatch.setenv("BENCH_DATA_DIR", str(mirror))
    cfg = load_config(Path("sweeps/reference.yaml"))
    # the earlier runs' ablations too, so that every kind of parameter is covered
    earlier = {"imdb/gru": {"dropout": [0.0], "lr_schedule": ["constant", "warmup_cosine"]},
               "imdb/averaging": {"weight_decay": [0.0, 0.1], **cfg.ablations["imdb/averaging"]}}
    cfg = type(cfg).model_validate({**cfg.model_dump(), "ablations": {**cfg.ablations, **earlier}})
    for study_key, changes in cfg.ablations.items():
        dataset, arch = study_key.split("/")
        ctx = StudyContext(SweepContext(cfg, None, "", None), dataset, arch, types.SimpleNamespace(vocab_size=50), "")
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
        study.optimize(functools.partial(bench_trial.objective, ctx=ctx), n_trials=1)
        study.set_user_attr("test_trial", study.best_trial.number)
        for param in changes:
            replicates.retrain(ctx, study, None, 1)
            replicates.retrain(ctx, study, param, 1)
            (replicate, _), (ablation, _) = fake.trained[-2:]
            replicate, ablation = {**replicate[0], **replicate[1]}, {**ablation[0], **ablation[1]}
            assert fake.seeds[-1] == fake.seeds[-2], f"{study_key} {param}"
            assert {k for k in replicate if replicate[k] != ablation[k]} == {param}, f"{study_key} {param}"
            assert ablation[param] in changes[param]


def test_the_stop_reason_tells_patience_from_pruning_and_the_epoch_cap():
    patience = EarlyStopping("val/acc", mode="max", patience=2)
    assert bench_trial.stop_reason(types.SimpleNamespace(should_stop=False), patience) == "epoch cap"
    assert bench_trial.stop_reason(types.SimpleNamespace(should_stop=True), patience) == "pruned"
    patience.wait_count = 2
    assert bench_trial.stop_reason(types.SimpleNamespace(should_stop=True), patience) == "patience"


@pytest.mark.parametrize("features, setting, expected", [
    ("avx2 avx512f amx_bf16", "auto", {"lstm": "bf16-mixed", "bilstm": "bf16-mixed", "gru": "32-true"}),
    ("avx2 avx512f avx512_bf16", "auto", {"lstm": "bf16-mixed", "bilstm": "bf16-mixed", "gru": "32-true"}),
    ("avx2", "auto", {"lstm": "32-true", "averaging": "32-true"}),
    ("avx2 avx512f amx_bf16", "32-true", {"lstm": "32-true"}),  # the config forces either way
    ("avx2", "bf16-mixed", {"lstm": "bf16-mixed", "gru": "bf16-mixed"}),
])
def test_auto_precision_is_bf16_only_where_the_cpu_has_the_engine_and_the_network_its_products(
        monkeypatch, features, setting, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_features", lambda: features)
    cfg = load_config(SHIPPED[0], [f"precision={setting}"])
    assert {arch: precision.training_precision(cfg, arch) for arch in expected} == expected


def test_a_trial_without_a_recorded_configuration_is_not_replicated():
    study = optuna.create_study(study_name="old/imdb/gru")
    study.add_trial(optuna.trial.create_trial(params={"lr": 0.01}, distributions={
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-1)}, value=0.5))
    with pytest.raises(UserError, match="old/imdb/gru: trial 0 recorded no configuration"):
        bench_trial.recorded_config(study, study.best_trial)


def test_a_worker_that_loses_the_race_to_create_the_storages_tables_opens_them_after_the_winner(
        runtime, tiny_sweep, monkeypatch):
    """Workers starting at once on a new database each try to create Optuna's tables; the losers see a duplicate."""
    real, attempts = optuna.storages.RDBStorage, []

    def racing(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:  # the winner is still creating them
            raise sqlalchemy.exc.IntegrityError("CREATE TYPE studydirection", {}, Exception("duplicate key value"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(search.time, "sleep", lambda seconds: None)
    assert isinstance(search.open_storage(load_config(tiny_sweep)), real) and len(attempts) == 2
