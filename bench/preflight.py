"""The config's networks checked before any data loads: each architecture built with each value its search space
can give, and held to bench's contract (finite logits of the right shape, gradients to every parameter,
right-padding that changes nothing, a state_dict that rebuilds it)."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.config import ConfigError, SweepConfig, split_params
from bench.data import DATASETS
from bench.models import USER_ARCHITECTURES, build_network, logit_count
from bench.module import make_optimizers
from bench.search_space import CategoricalParam, FloatParam, IntParam

# Two texts of a 10-word vocabulary, right-padded with id 0 as bench's batches are.
SAMPLE_IDS, SAMPLE_LENGTHS = torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0]]), torch.tensor([4, 2])


def check_networks_build(cfg: SweepConfig, config_path: str | Path) -> None:
    """Each architecture at its defaults, then with each value of its search space (a numeric range's ends), one
    parameter at a time: a value a network refuses, or a network that breaks the contract, is a config error
    before any data loads, rather than the failure of every trial."""
    problems = {}
    for arch in cfg.architectures:
        where = f"user_architectures.{arch}" if arch in USER_ARCHITECTURES else "architectures"
        for dataset in cfg.datasets:
            classes = len(DATASETS[dataset].class_names)
            if problem := network_problem(arch, {}, "its defaults", classes):
                problems[f"{where}: {arch} {problem}"] = None
                break
            for name, spec in cfg.space_for(arch, dataset).items():
                for value in _values_of(spec):
                    if problem := network_problem(arch, {name: value}, repr(value), classes):
                        problems[f"{cfg.key_of(arch, dataset, name)}: {arch} {problem}"] = None
    if problems:
        raise ConfigError(f"{config_path}: " + "; ".join(problems))


def network_problem(arch: str, params: dict, label: str, num_classes: int = 2) -> str | None:
    """What goes wrong building the network for `num_classes` and its optimiser from `params` (`label` names them)
    and running it, or None."""
    training, network_params = split_params(params)
    try:
        network = build_network(arch, 10, num_classes, **network_params)
        make_optimizers(network, training["lr"], training["weight_decay"])
        problem = contract_problem(network, lambda: build_network(arch, 10, num_classes, **network_params),
                                   logit_count(num_classes))
    except Exception as error:
        return f"refuses {label} ({type(error).__name__}: {error})"
    return f"with {label} {problem}" if problem else None


def contract_problem(network: torch.nn.Module, rebuild, logits_per_text: int = 1) -> str | None:
    """How the network breaks bench's contract, or None; `rebuild` makes another of it, for the state_dict check."""
    if not isinstance(network, torch.nn.Module):
        return f"is built as a {type(network).__name__}, not a torch.nn.Module"
    network.eval()  # no dropout: the checks below compare outputs
    logits = network(SAMPLE_IDS, SAMPLE_LENGTHS)
    expected = (2,) if logits_per_text == 1 else (2, logits_per_text)
    if not isinstance(logits, torch.Tensor) or logits.shape != expected:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        what = "one logit per text" if logits_per_text == 1 else f"{logits_per_text} logits per text, one per class"
        return f"returns {shape} for 2 texts; expected shape {expected}, {what}"
    if not torch.isfinite(logits).all():
        return "returns logits that are not finite"
    logits.sum().backward()
    stuck = [name for name, p in network.named_parameters() if p.requires_grad and p.grad is None]
    if stuck or not any(p.requires_grad for p in network.parameters()):
        return f"passes no gradient to parameter(s) {stuck[:5] or 'none: it has no trainable parameter'}"
    with torch.no_grad():
        padded = network(torch.nn.functional.pad(SAMPLE_IDS, (0, 3)), SAMPLE_LENGTHS)
        if not torch.allclose(padded, logits, atol=1e-5):
            return ("changes its logits when the batch is padded further with id 0; bench pads batches, so a text's "
                    "prediction must depend on its first `lengths` tokens only")
        twin = rebuild()
        twin.load_state_dict(network.state_dict())
        if not torch.allclose(twin.eval()(SAMPLE_IDS, SAMPLE_LENGTHS), logits, atol=1e-6):
            return "gives other logits once rebuilt from its state_dict: it keeps state outside parameters and buffers"
    return None


def _values_of(spec) -> list:
    if isinstance(spec, FloatParam | IntParam):
        return [spec.low, spec.high]
    if isinstance(spec, CategoricalParam):
        return spec.choices
    return [spec]
