"""The trial life cycle: pruned and failed trials are recorded as such and the sweep goes on."""

import optuna
import torch
from optuna.trial import TrialState

from bench import sweep
from bench.config import load_config


def study_of(cfg, arch="averaging"):
    return optuna.load_study(study_name=sweep.study_name(cfg, "imdb", arch), storage=sweep.storage_url(cfg))


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
    real_build = sweep.build_network
    monkeypatch.setattr(sweep, "build_network",
                        lambda arch, *a, **k: NaNNetwork() if arch == "averaging" else real_build(arch, *a, **k))
    cfg = load_config(tiny_sweep, ["architectures=[averaging, bag_concat]", "study.pruner.type=none"])
    sweep.run_sweep(cfg, tiny_sweep)
    assert states(cfg, "averaging") == [TrialState.FAIL, TrialState.FAIL]
    assert "training loss is nan" in study_of(cfg).trials[0].user_attrs["error"]
    assert states(cfg, "bag_concat") == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert study_of(cfg, "bag_concat").user_attrs["test_metrics"]["test/acc"] > 0.5


def test_a_trial_is_never_pruned_after_its_last_epoch():
    study = optuna.create_study(pruner=sweep.BeforeLastEpoch(optuna.pruners.ThresholdPruner(lower=1.1), 2))
    trial = study.ask()
    trial.report(0.5, step=0)
    assert trial.should_prune()  # below the threshold before the last epoch
    trial.report(0.5, step=1)
    assert not trial.should_prune()  # the last epoch is done: the trial is complete
