"""Sweep configuration: a YAML file in sweeps/, validated by pydantic.

Unknown keys, wrong types and empty or inverted ranges are errors that name the file and the key. Every setting's
meaning and default live here, in its field's description; docs/config.md is generated from them
(`python -m bench.config_docs > docs/config.md`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    Field,
    PositiveInt,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bench.runtime import UserError
from bench.search_space import SearchSpace, Strict

# Hyperparameters of the training loop and their defaults; every other searched name must be an argument of the
# network, whose defaults are its constructor's.
TRAINING_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "grad_clip": None, "lr_schedule": "constant"}
# lr_schedule's values: constant; or linear warmup over the first 5% of the epoch cap's steps, then cosine to zero at
# the cap (module.py).
LR_SCHEDULES = ("constant", "warmup_cosine")
TRAINING_PARAMS = set(TRAINING_DEFAULTS)


def split_params(params: dict) -> tuple[dict, dict]:
    """A trial's parameters as (training loop's, with defaults filled in; network's)."""
    training = {**TRAINING_DEFAULTS, **{k: v for k, v in params.items() if k in TRAINING_PARAMS}}
    return training, {k: v for k, v in params.items() if k not in TRAINING_PARAMS}


class ConfigError(UserError, ValueError):
    pass


class VectorSettings(Strict):
    path: str = Field(description="a GloVe or word2vec text file (`glove.twitter.27B.200d.txt`); `$VARS` expanded")
    freeze: bool = Field(False, description="keep the embeddings fixed while training")

    @field_validator("path")
    @classmethod
    def _readable(cls, path):
        from bench.vectors import vector_size

        vector_size(path)  # a missing or unreadable file, refused before any data loads
        return path


class DataSettings(Strict):
    vocab_size: int = Field(20_000, ge=10, description="most frequent training-split tokens kept, `[PAD]` and "
                                                       "`[UNK]` included")
    max_len: int = Field(400, ge=1, description="tokens kept per text: the last ones, where reviews give their "
                                                "verdict")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="stratified share of train held out for validation")
    train_size: int | None = Field(None, ge=10, description="stratified subsample of train before the split; "
                                                            "null: all")
    heldout_size: int | None = Field(None, ge=10, description="stratified sample of train set aside first, never "
                                                              "trained or tuned on: a second, in-distribution test "
                                                              "split; null: none")
    vectors: VectorSettings | None = Field(None, description="initialise the built-in networks' embeddings from word "
                                                             "vectors: each vocabulary word the file has, the rest "
                                                             "Keras' uniform; `embed_dim` must be their size; null: "
                                                             "none")


class UserDataset(Strict):
    train: str = Field(description="the training file, `.parquet`, `.csv`, `.json` or `.jsonl`, from the working "
                                   "directory; `$VARS` expanded (`$BENCH_DATA_DIR/imdb/train.parquet`)")
    test: str | None = Field(None, description="the test file, in the same format; null: `test_fraction`")
    test_fraction: float | None = Field(None, gt=0, lt=1, description="without a test file: this stratified, seeded "
                                                                      "share of the training file is the test split")
    text_column: str = Field("text", description="the column holding each text")
    label_column: str = Field("label", description="the column holding each label")
    labels: list[StrictStr | StrictInt | StrictBool] = Field(
        min_length=2, description="the classes in order, spelt as in the files (`1` and `\"1\"` differ); any other "
                                  "value in the files is an error; with two, the second is the positive class")

    @field_validator("train", "test")
    @classmethod
    def _readable(cls, path):
        from bench.data_files import check_path

        return path if path is None else check_path(path)

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels):
        repeated = sorted({repr(v) for v in labels if labels.count(v) > 1})
        if repeated:
            raise ValueError(f"label(s) {', '.join(repeated)} listed more than once")
        return labels

    @model_validator(mode="after")
    def _one_test_split(self):
        if (self.test is None) == (self.test_fraction is None):
            raise ValueError("set one of test (a file) and test_fraction (a share of train)")
        return self


class UserArchitecture(Strict):
    class_path: str = Field(alias="class", description="`module.path:ClassName`: a torch.nn.Module built as "
                                                       "`ClassName(vocab_size, num_classes, **searchable)` whose "
                                                       "`forward(ids, lengths)` returns logits: one per text for two "
                                                       "classes, `num_classes` for more (docs/your-own.md)")
    code: str | None = Field(None, description="the package folder holding it (`examples/mynets` for "
                                               "`mynets.cnn:TextCNN`), put on the import path and carried by the "
                                               "logged MLflow model; null: an installed package")

    @model_validator(mode="after")
    def _importable(self):
        from bench.models import user_network_class

        user_network_class(self.class_path, self.code)  # the import's own fault, named under this architecture's key
        return self


class SamplerSettings(Strict):
    type: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler, `tpe` or `random`, seeded with `seed`")
    n_startup_trials: int = Field(4, ge=0, description="random trials before TPE starts modelling")


class PrunerSettings(Strict):
    type: Literal["median", "hyperband", "none"] = Field(
        "median", description="Optuna pruner, `median`, `hyperband` or `none`; a trial is pruned only before its last "
                              "epoch")
    n_startup_trials: int = Field(2, ge=0, description="median: trials finished before any pruning")
    n_warmup_steps: int = Field(0, ge=0, description="median: epochs a trial runs before it can be pruned")


class StudySettings(Strict):
    n_trials: int | None = Field(8, ge=1, description="finished trials (complete, pruned or failed) per study")
    timeout: float | None = Field(None, gt=0, description="seconds of trials per study, checked between trials; "
                                                          "null: none")
    max_epochs: PositiveInt | dict[str, PositiveInt] = Field(
        5, description="epochs per trial: one number, or one per dataset (`{imdb: 2, sentiment140: 1}`)")
    patience: PositiveInt | dict[str, PositiveInt] = Field(
        2, description="early stopping: epochs without a better `val/acc`; one number, or one per dataset")
    validations_per_epoch: PositiveInt | dict[str, PositiveInt] = Field(
        1, description="validations per epoch, evenly spaced, the last at its end (learning-curve points): one "
                       "number, or one per dataset; pruning reads the epoch ends only")
    target_val_acc: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(
        {}, description="`<dataset>: accuracy`: the validation accuracy whose time to reach the report tabulates over "
                        "the replicates")
    replicates: int = Field(0, ge=0, description="after the search, retrainings of the best configuration with other "
                                                 "seeds (initialisation, data order, dropout; the splits stay), each "
                                                 "evaluated once on test")
    sampler: SamplerSettings = SamplerSettings()
    pruner: PrunerSettings = PrunerSettings()

    @field_validator("target_val_acc")
    @classmethod
    def _targets_of_known_datasets(cls, targets):
        for dataset in targets:
            _known(dataset, _datasets(), "dataset")
        return targets

    @model_validator(mode="after")
    def _budget(self):
        if self.n_trials is None and self.timeout is None:
            raise ValueError("set n_trials, timeout or both: a study needs a budget")
        return self


class SweepConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="sweep name: the MLflow experiment and the Optuna "
                                                                 "study prefix")
    seed: int = Field(0, description="splits, sampler and each trial's initialisation (`seed + trial number`)")
    data_dir: str | None = Field(None, description="local mirror folder; null: `$BENCH_DATA_DIR`, else the Hugging "
                                                   "Face Hub")
    # Before `datasets`: pydantic validates fields in order, and these names must be known by then.
    user_datasets: dict[str, UserDataset] = Field(
        {}, description="`<name>: {train: ..., labels: [...], ...}`: your own datasets, named like the built-in ones "
                        "in `datasets`, `data` and the per-dataset keys", json_schema_extra={"key": "<name>"})
    datasets: list[str] = Field(min_length=1, description="`imdb`, `sentiment140`, or a name of `user_datasets`")
    # Before `architectures`: pydantic validates fields in order, and these names must be known by then.
    user_architectures: dict[str, UserArchitecture] = Field(
        {}, description="`<name>: {class: ..., code: ...}`: your own networks, named like the built-in ones in "
                        "`architectures` and `search_spaces`", json_schema_extra={"key": "<name>"})
    architectures: list[str] = Field(min_length=1, description="any of `averaging`, `bag_concat`, `simple_rnn`, "
                                                               "`gru`, `lstm`, `bilstm`")
    data: dict[str, DataSettings] = Field({}, description="per dataset; a dataset left out takes the defaults",
                                          json_schema_extra={"key": "<dataset>"})
    study: StudySettings = StudySettings()
    search_space: SearchSpace = Field({}, description="parameters shared by every architecture")
    search_spaces: dict[str, SearchSpace] = Field({}, description="`<architecture>: {...}`: per-architecture "
                                                                  "parameters, overriding the shared ones")
    dataset_search_spaces: dict[str, SearchSpace] = Field(
        {}, description="`<dataset>: {...}`: per-dataset parameters, overriding both (e.g. larger batches for "
                        "tweets); a network parameter applies to the architectures that take it")
    ablations: dict[str, dict[str, Annotated[list[int | float | str | bool], Field(min_length=1)]]] = Field(
        {}, description="`<dataset>/<architecture>: {param: [values]}`: after the replicates, the best configuration "
                        "retrained on each replicate's seed with `param` set to the first value that differs from "
                        "the best's, each tested once: a recipe element measured with and without it on the same "
                        "seeds (report: Ablations)", json_schema_extra={"key": "<dataset>/<architecture>"})
    storage: str | None = Field(None, description="Optuna storage URL: PostgreSQL for several workers "
                                                  "(`postgresql://user:password@host/db`), or SQLite; null: "
                                                  "`.bench/optuna.db`; `$BENCH_STORAGE` overrides it")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI: an `http://` server for several "
                                                       "machines, or SQLite; null: `.bench/mlflow.db`; "
                                                       "`$BENCH_TRACKING_URI` overrides it")
    probes: bool = Field(False, description="run the probes (bench/probes.py) on every study's models when the "
                                            "sweep ends; `bench probe` runs them on a finished sweep")
    heartbeat: int = Field(30, ge=1, description="seconds between a running trial's heartbeats; a trial silent for "
                                                 "three of them belongs to a dead worker: it is failed and retried")
    # None of these needs gradient scaling, which the training step (module.py) does not do.
    precision: Literal["auto", "32-true", "bf16-mixed", "bf16-true", "64-true"] = Field(
        "auto", description="Lightning precision: `auto` (`bf16-mixed` on a GPU that supports it, and for lstm and "
                        "bilstm on a CPU with AMX or AVX512-BF16; else `32-true`: bench/precision.py), "
                        "`32-true`, `bf16-mixed`, `bf16-true` or `64-true`")

    @field_validator("user_datasets")
    @classmethod
    def _register_user_datasets(cls, user):
        from bench.data import register_dataset

        for name, spec in user.items():
            register_dataset(name, spec)
        return user

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, names, info: ValidationInfo):
        if "user_datasets" not in info.data:  # refused: its error names the cause, unknown names would repeat it
            return names
        return [_known(name, _datasets(), "dataset") for name in names]

    @field_validator("user_architectures")
    @classmethod
    def _register_user_architectures(cls, user):
        from bench.models import register_architecture

        for name, spec in user.items():
            register_architecture(name, spec.class_path, spec.code)
        return user

    @field_validator("architectures")
    @classmethod
    def _known_architectures(cls, names, info: ValidationInfo):
        if "user_architectures" not in info.data:  # refused: its error names the cause, unknown names would repeat it
            return names
        return [_known(name, _architectures(), "architecture") for name in names]

    @field_validator("data", "dataset_search_spaces")
    @classmethod
    def _keyed_by_known_datasets(cls, mapping, info: ValidationInfo):
        if "user_datasets" not in info.data:
            return mapping
        for name in mapping:
            _known(name, _datasets(), "dataset")
        return mapping

    @field_validator("search_spaces")
    @classmethod
    def _known_spaces(cls, spaces, info: ValidationInfo):
        if "user_architectures" not in info.data:
            return spaces
        for arch, space in spaces.items():
            _known(arch, _architectures(), "architecture")
            _check_param_names(arch, space)
        return spaces

    @field_validator("dataset_search_spaces")
    @classmethod
    def _dataset_spaces_fit_some_architecture(cls, spaces):
        # Any architecture, not only this sweep's: subsetting a sweep's architectures must not break its config.
        allowed = set().union(*map(allowed_params, _architectures()))
        for dataset, space in spaces.items():
            unknown = sorted(set(space) - allowed)
            if unknown:
                raise ValueError(f"dataset_search_spaces.{dataset}: parameter(s) {unknown} belong to no "
                                 f"architecture; allowed: {sorted(allowed)}")
        return spaces

    @model_validator(mode="after")
    def _spaces_fit(self):
        from bench import config_checks  # it reads this module's names

        for arch in self.architectures:
            for dataset in self.datasets:
                _check_param_names(arch, self.space_for(arch, dataset), context="search_space")
                config_checks.check_vector_size(self, arch, dataset)
                config_checks.check_lr_schedule(self, arch, dataset)
        for study, changes in self.ablations.items():
            config_checks.check_ablation(self, study, changes)
        for key in ("max_epochs", "patience", "validations_per_epoch"):
            values = getattr(self.study, key)
            if isinstance(values, dict):
                unknown = sorted(set(values) - set(_datasets()))
                missing = [d for d in self.datasets if d not in values]
                if unknown or missing:
                    raise ValueError(f"study.{key}: unknown dataset(s) {unknown}, no value for dataset(s) {missing}; "
                                     f"datasets: {', '.join(_datasets())}")
        return self

    def max_epochs(self, dataset: str) -> int:
        return _for_dataset(self.study.max_epochs, dataset)

    def patience(self, dataset: str) -> int:
        return _for_dataset(self.study.patience, dataset)

    def validations_per_epoch(self, dataset: str) -> int:
        return _for_dataset(self.study.validations_per_epoch, dataset)

    def data_for(self, dataset: str) -> DataSettings:
        return self.data.get(dataset, DataSettings())

    def key_of(self, arch: str, dataset: str, param: str) -> str:
        """Where in the config the value of `param` in space_for(arch, dataset) comes from."""
        if param in self.dataset_search_spaces.get(dataset, {}) and param in allowed_params(arch):
            return f"dataset_search_spaces.{dataset}.{param}"
        if param in self.search_spaces.get(arch, {}):
            return f"search_spaces.{arch}.{param}"
        return f"search_space.{param}"

    def space_for(self, arch: str, dataset: str) -> SearchSpace:
        # A network parameter of a dataset's space (bag_len for tweets) applies to the architectures that have it.
        allowed = allowed_params(arch)
        per_dataset = {k: v for k, v in self.dataset_search_spaces.get(dataset, {}).items() if k in allowed}
        return {**self.search_space, **self.search_spaces.get(arch, {}), **per_dataset}


def _for_dataset(setting: int | dict[str, int], dataset: str) -> int:
    return setting[dataset] if isinstance(setting, dict) else setting


# The registries import torch: loaded only once a config names something, so that `bench --help` answers at once.
def _datasets() -> dict:
    from bench.data import DATASETS

    return DATASETS


def _architectures() -> dict:
    from bench.models import ARCHITECTURES

    return ARCHITECTURES


def _known(name, registry, what):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; available: {', '.join(registry)}")
    return name


def _check_param_names(arch, space, context=None):
    unknown = sorted(set(space) - allowed_params(arch))
    if unknown:
        where = f" (from {context})" if context else ""
        raise ValueError(
            f"unknown parameter(s) {unknown} for architecture {arch!r}{where}; allowed: {sorted(allowed_params(arch))}"
        )


def network_params(arch: str) -> frozenset[str]:
    """The searchable constructor arguments of an architecture (the vocabulary size and classes come from the
    data)."""
    from bench.models import BUILT_ARGUMENTS

    return frozenset(inspect.signature(_architectures()[arch]).parameters) - BUILT_ARGUMENTS


def allowed_params(arch: str) -> set[str]:
    """Every parameter a search space may name for an architecture: the training loop's and the network's."""
    return TRAINING_PARAMS | network_params(arch)


def parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value, e.g. study.n_trials=3")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    path = Path(path)
    raw = _read_yaml(path)
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
        problems = list(dict.fromkeys(_problem_text(e) for e in error.errors()))
        if len(problems) == 1:
            raise ConfigError(f"{path}: {problems[0]}") from None
        raise ConfigError("\n  ".join([f"{path}: {len(problems)} problems", *problems])) from None


def _problem_text(error: dict) -> str:
    loc = ".".join(str(p) for p in error["loc"] if not _is_union_branch(p))
    return f"{loc or '(top level)'}: {error['msg'].removeprefix('Value error, ')}"


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        available = ", ".join(sorted(p.name for p in Path("sweeps").glob("*.yaml"))) or "none found"
        raise ConfigError(f"{path}: no such sweep config; in sweeps/: {available}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return raw


def _is_union_branch(part) -> bool:
    """pydantic's name for a branch of a union ('FloatParam', 'fixed', 'dict[str,constrained-int]'), dropped so
    that the key path reads as in the file."""
    text = str(part)
    return (text[:1].isupper() or "[" in text
            or text in {"int", "float", "str", "bool", "constrained-int", "distribution", "fixed"})
