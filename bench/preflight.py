"""The config's search spaces checked against the networks before any data loads."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.config import CategoricalParam, ConfigError, FloatParam, IntParam, SweepConfig, split_params
from bench.models import build_network
from bench.module import make_optimizer


def check_networks_build(cfg: SweepConfig, config_path: str | Path) -> None:
    """Build each architecture, and its optimiser, with each value its search space can give (a numeric range's
    ends), one parameter at a time: a value that a network refuses is a config error before any data loads,
    rather than the failure of every trial."""
    problems = {}
    ids, lengths = torch.tensor([[2, 3, 4]]), torch.tensor([3])
    for arch in cfg.architectures:
        for dataset in cfg.datasets:
            for name, spec in cfg.space_for(arch, dataset).items():
                for value in _values_of(spec):
                    training, network_params = split_params({name: value})
                    try:
                        network = build_network(arch, 10, **network_params)
                        network(ids, lengths)
                        make_optimizer(network, training["lr"], training["weight_decay"])
                    except Exception as error:
                        key = cfg.key_of(arch, dataset, name)
                        problems[f"{key}: {arch} refuses {value!r} ({type(error).__name__}: {error})"] = None
    if problems:
        raise ConfigError(f"{config_path}: " + "; ".join(problems))


def _values_of(spec) -> list:
    if isinstance(spec, FloatParam | IntParam):
        return [spec.low, spec.high]
    if isinstance(spec, CategoricalParam):
        return spec.choices
    return [spec]
