"""Sweep configuration: a YAML file in sweeps/, validated by pydantic.

Unknown keys, wrong types and empty or inverted ranges are errors that name the file and the key.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from bench.data import DATASETS
from bench.models import ARCHITECTURES

# Hyperparameters of the training loop; every other searched name must be an argument of the network.
TRAINING_PARAMS = {"lr", "weight_decay", "batch_size", "grad_clip"}


class ConfigError(ValueError):
    pass


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatParam(Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False  # sample on a log scale

    @model_validator(mode="after")
    def _range(self):
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low={self.low} must be below high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        return self


class IntParam(Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self):
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low={self.low} must be below high={self.high}")
        return self


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[int | float | str | bool] = Field(min_length=1)


Distribution = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
# A plain value fixes the parameter; a mapping with `type` searches it.
ParamSpec = Distribution | int | float | str | bool


class DataSettings(Strict):
    vocab_size: int = Field(20_000, ge=10)  # most frequent training-split tokens kept, specials included
    max_len: int = Field(400, ge=1)  # tokens kept per text: the last ones, where reviews give their verdict
    val_fraction: float = Field(0.1, gt=0, lt=1)  # stratified share of train held out for validation
    train_size: int | None = Field(None, ge=10)  # stratified subsample of train before the split; None = all


class SamplerSettings(Strict):
    type: Literal["tpe", "random"] = "tpe"
    n_startup_trials: int = Field(4, ge=0)  # random trials before TPE starts modelling


class PrunerSettings(Strict):
    type: Literal["median", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0)  # median: trials finished before any pruning
    n_warmup_steps: int = Field(0, ge=0)  # median: epochs a trial runs before it can be pruned


class StudySettings(Strict):
    n_trials: int | None = Field(8, ge=1)  # finished trials (complete, pruned or failed) per study
    timeout: float | None = Field(None, gt=0)  # seconds of trials per study; checked between trials
    # Epochs per trial: one number, or one per dataset (e.g. {imdb: 2, sentiment140: 1}).
    max_epochs: PositiveInt | dict[str, PositiveInt] = 5
    patience: int = Field(2, ge=1)  # early stopping: epochs without a better val/acc
    sampler: SamplerSettings = SamplerSettings()
    pruner: PrunerSettings = PrunerSettings()

    @model_validator(mode="after")
    def _budget(self):
        if self.n_trials is None and self.timeout is None:
            raise ValueError("set n_trials, timeout or both: a study needs a budget")
        return self


class SweepConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # MLflow experiment and Optuna study prefix
    seed: int = 0  # splits, sampler and every trial's initialisation derive from it
    data_dir: str | None = None  # local mirror folder; None = $BENCH_DATA_DIR, else the Hugging Face Hub
    datasets: list[str] = Field(min_length=1)
    architectures: list[str] = Field(min_length=1)
    data: dict[str, DataSettings] = {}  # per dataset; missing datasets take the defaults
    study: StudySettings = StudySettings()
    search_space: dict[str, ParamSpec] = {}  # shared by every architecture
    search_spaces: dict[str, dict[str, ParamSpec]] = {}  # per architecture, overriding the shared one
    dataset_search_spaces: dict[str, dict[str, ParamSpec]] = {}  # per dataset, overriding both (batch size...)
    storage: str | None = None  # Optuna storage URL; None = SQLite in the runtime folder
    tracking_uri: str | None = None  # MLflow tracking URI; None = SQLite in the runtime folder
    # Lightning precision; auto = bf16-mixed on a GPU that has it, else 32-true. None of these needs gradient
    # scaling, which the training step (module.py) does not do.
    precision: Literal["auto", "32-true", "bf16-mixed", "bf16-true", "64-true"] = "auto"

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, names):
        return [_known(name, DATASETS, "dataset") for name in names]

    @field_validator("architectures")
    @classmethod
    def _known_architectures(cls, names):
        return [_known(name, ARCHITECTURES, "architecture") for name in names]

    @field_validator("data", "dataset_search_spaces")
    @classmethod
    def _keyed_by_known_datasets(cls, mapping):
        for name in mapping:
            _known(name, DATASETS, "dataset")
        return mapping

    @field_validator("search_spaces")
    @classmethod
    def _known_spaces(cls, spaces):
        for arch, space in spaces.items():
            _known(arch, ARCHITECTURES, "architecture")
            _check_param_names(arch, space)
        return spaces

    @model_validator(mode="after")
    def _spaces_fit(self):
        for arch in self.architectures:
            for dataset in self.datasets:
                _check_param_names(arch, self.space_for(arch, dataset), context="search_space")
        if isinstance(self.study.max_epochs, dict):
            unknown = sorted(set(self.study.max_epochs) - set(DATASETS))
            missing = [d for d in self.datasets if d not in self.study.max_epochs]
            if unknown or missing:
                raise ValueError(f"study.max_epochs: unknown dataset(s) {unknown}, no value for dataset(s) {missing}; "
                                 f"datasets: {', '.join(DATASETS)}")
        allowed = set().union(*(TRAINING_PARAMS | network_params(arch) for arch in self.architectures))
        for dataset, space in self.dataset_search_spaces.items():
            unknown = sorted(set(space) - allowed)
            if unknown:
                raise ValueError(f"dataset_search_spaces.{dataset}: parameter(s) {unknown} belong to none of the "
                                 f"sweep's architectures; allowed: {sorted(allowed)}")
        return self

    def max_epochs(self, dataset: str) -> int:
        epochs = self.study.max_epochs
        return epochs[dataset] if isinstance(epochs, dict) else epochs

    def data_for(self, dataset: str) -> DataSettings:
        return self.data.get(dataset, DataSettings())

    def space_for(self, arch: str, dataset: str) -> dict[str, ParamSpec]:
        # A network parameter of a dataset's space (bag_len for tweets) applies to the architectures that have it.
        allowed = TRAINING_PARAMS | network_params(arch)
        per_dataset = {k: v for k, v in self.dataset_search_spaces.get(dataset, {}).items() if k in allowed}
        return {**self.search_space, **self.search_spaces.get(arch, {}), **per_dataset}


def _known(name, registry, what):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; available: {', '.join(registry)}")
    return name


def _check_param_names(arch, space, context=None):
    allowed = TRAINING_PARAMS | network_params(arch)
    unknown = sorted(set(space) - allowed)
    if unknown:
        where = f" (from {context})" if context else ""
        raise ValueError(
            f"unknown parameter(s) {unknown} for architecture {arch!r}{where}; allowed: {sorted(allowed)}"
        )


def network_params(arch: str) -> set[str]:
    """The searchable constructor arguments of an architecture (vocab_size comes from the data)."""
    signature = inspect.signature(ARCHITECTURES[arch])
    return set(signature.parameters) - {"vocab_size"}


def parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value, e.g. study.n_trials=3")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    path = Path(path)
    if not path.is_file():
        available = ", ".join(sorted(p.name for p in Path("sweeps").glob("*.yaml"))) or "none found"
        raise ConfigError(f"{path}: no such sweep config; in sweeps/: {available}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    for override in overrides:
        keys, value = parse_override(override)
        node = raw
        for i, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(keys[: i + 1])} is not a mapping")
        node[keys[-1]] = value
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as error:
        lines = [f"{path}: invalid sweep config"]
        for e in error.errors():
            loc = ".".join(str(p) for p in e["loc"] if not _is_union_branch(p))
            lines.append(f"  {loc or '(top level)'}: {e['msg']}")
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None


def _is_union_branch(part) -> bool:
    """pydantic's name for a branch of a union ('FloatParam', 'int', 'dict[str,constrained-int]'), dropped so that
    the key path reads as in the file."""
    text = str(part)
    return text[:1].isupper() or text in {"int", "float", "str", "bool", "constrained-int"} or "[" in text
