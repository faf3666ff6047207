"""The sweep config's checks that read several of its settings at once: word vectors against embed_dim, learning-rate
schedules, ablations; called by SweepConfig's validator."""

from __future__ import annotations

from pydantic import BaseModel

from bench.config import LR_SCHEDULES, SweepConfig, _architectures, _check_param_names, _datasets


def check_vector_size(cfg: SweepConfig, arch: str, dataset: str) -> None:
    """A built-in network's embed_dim, fixed to the size of the dataset's word vectors."""
    from bench.models import USER_ARCHITECTURES, network_defaults
    from bench.vectors import vector_size

    vectors = cfg.data_for(dataset).vectors
    if vectors is None or arch in USER_ARCHITECTURES:  # a user's network keeps its own embeddings
        return
    size, space = vector_size(vectors.path), cfg.space_for(arch, dataset)
    value = space.get("embed_dim", network_defaults(arch)["embed_dim"])
    if value != size:
        where = cfg.key_of(arch, dataset, "embed_dim") if "embed_dim" in space else "its default"
        shown = "searched" if isinstance(value, BaseModel) else value
        raise ValueError(f"data.{dataset}.vectors: {vectors.path} holds {size}-d vectors, but {arch}'s embed_dim is "
                         f"{shown} ({where}); fix it to {size}, e.g. search_space.embed_dim: {size}")


def check_lr_schedule(cfg: SweepConfig, arch: str, dataset: str) -> None:
    spec = cfg.space_for(arch, dataset).get("lr_schedule", "constant")
    _check_schedules(getattr(spec, "choices", [spec]), cfg.key_of(arch, dataset, "lr_schedule"))


def _check_schedules(values: list, key: str) -> None:
    unknown = [v for v in values if v not in LR_SCHEDULES]
    if unknown:
        raise ValueError(f"{key}: unknown schedule(s) {unknown}; available: {', '.join(LR_SCHEDULES)}")


def check_ablation(cfg: SweepConfig, study: str, changes: dict) -> None:
    # Known names, not only this sweep's: subsetting a sweep's architectures must not break its config.
    dataset, _, arch = study.partition("/")
    if dataset not in _datasets() or arch not in _architectures():
        raise ValueError(f"ablations.{study}: not a <dataset>/<architecture>; datasets: {', '.join(_datasets())}; "
                         f"architectures: {', '.join(_architectures())}")
    _check_param_names(arch, changes, context=f"ablations.{study}")
    _check_schedules(changes.get("lr_schedule", []), f"ablations.{study}.lr_schedule")
