"""What a sweep's steps share: the sweep's context (config, MLflow client and experiment, the workers' keys), and a
study's (the sweep's, with the study's dataset, architecture, data and MLflow run). Both are built whole, once."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from bench import data as bench_data
from bench.config import SweepConfig
from bench.coordination import Keys


@dataclass(frozen=True)
class SweepContext:
    cfg: SweepConfig
    client: MlflowClient
    experiment_id: str
    keys: Keys  # the decisions taken once for all workers


@dataclass(frozen=True)
class StudyContext:
    sweep: SweepContext
    dataset: str
    arch: str
    data: bench_data.EncodedDataset
    parent_run_id: str  # the study's MLflow run

    @property
    def cfg(self) -> SweepConfig:
        return self.sweep.cfg

    @property
    def client(self) -> MlflowClient:
        return self.sweep.client

    @property
    def experiment_id(self) -> str:
        return self.sweep.experiment_id

    @property
    def keys(self) -> Keys:
        return self.sweep.keys

    @property
    def prefix(self) -> str:
        """What every progress line of the study starts with."""
        return f"[{self.dataset}/{self.arch}]"


def study_name(cfg: SweepConfig, dataset: str, arch: str) -> str:
    return f"{cfg.name}/{dataset}/{arch}"
