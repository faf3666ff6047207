from pathlib import Path

import pytest

from bench.config import ConfigError, load_config
from bench.config_docs import reference_markdown
from bench.search_space import FloatParam

BASE = """
name: t
datasets: [imdb]
architectures: [lstm]
"""


def write(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return str(info.value)


def test_valid_config_and_override(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "search_space:\n  lr: {type: float, low: 0.001, high: 0.01}\n"),
                      ["study.n_trials=3", "data.imdb.vocab_size=500"])
    assert cfg.study.n_trials == 3
    assert cfg.data_for("imdb").vocab_size == 500
    assert isinstance(cfg.space_for("lstm", "imdb")["lr"], FloatParam)


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, BASE + "study:\n  n_trails: 3\n")
    message = error_of(path)
    assert str(path) in message and "study.n_trails" in message and "Extra inputs" in message


def test_wrong_type(tmp_path):
    message = error_of(write(tmp_path, BASE + "study:\n  max_epochs: many\n"))
    assert "study.max_epochs" in message


@pytest.mark.parametrize("spec", ["{type: float, low: 0.1, high: 0.01}", "{type: int, low: 4, high: 4}"])
def test_empty_or_inverted_range(tmp_path, spec):
    message = error_of(write(tmp_path, BASE + f"search_space:\n  lr: {spec}\n"))
    assert "search_space.lr" in message and "empty or inverted range" in message


def test_unknown_architecture_lists_available(tmp_path):
    message = error_of(write(tmp_path, BASE.replace("[lstm]", "[transformer]")))
    assert "unknown architecture 'transformer'" in message and "bilstm" in message


def test_unknown_parameter_for_architecture(tmp_path):
    message = error_of(write(tmp_path, BASE + "search_spaces:\n  lstm: {bag_len: 3}\n"))
    assert "search_spaces" in message and "bag_len" in message and "hidden_size" in message


def test_no_budget_is_an_error(tmp_path):
    assert "budget" in error_of(write(tmp_path, BASE), ["study.n_trials=null"])


def test_missing_file_and_bad_override(tmp_path):
    assert "no such sweep config" in error_of(tmp_path / "nope.yaml")
    assert "key.path=value" in error_of(write(tmp_path, BASE), ["study.n_trials"])


def test_dataset_space_applies_network_params_to_the_architectures_that_have_them(tmp_path):
    text = """
name: t
datasets: [sentiment140]
architectures: [lstm, bag_concat]
dataset_search_spaces:
  sentiment140: {bag_len: {type: categorical, choices: [16, 32]}, batch_size: 256}
"""
    cfg = load_config(write(tmp_path, text))
    assert "bag_len" in cfg.space_for("bag_concat", "sentiment140")
    assert "bag_len" not in cfg.space_for("lstm", "sentiment140")
    assert cfg.space_for("lstm", "sentiment140")["batch_size"] == 256
    message = error_of(write(tmp_path, text.replace("bag_len", "bag_size")))
    assert "dataset_search_spaces.sentiment140" in message and "bag_size" in message


@pytest.mark.parametrize("key", ["max_epochs", "patience"])
def test_study_setting_per_dataset(tmp_path, key):
    both = BASE.replace("[imdb]", "[imdb, sentiment140]")
    cfg = load_config(write(tmp_path, both + f"study:\n  {key}: {{imdb: 2, sentiment140: 1}}\n"))
    value_for = getattr(cfg, key)
    assert (value_for("imdb"), value_for("sentiment140")) == (2, 1)
    assert getattr(load_config(write(tmp_path, both), [f"study.{key}=3"]), key)("sentiment140") == 3
    message = error_of(write(tmp_path, both + f"study:\n  {key}: {{imdb: 2, tweets: 1}}\n"))
    assert "unknown dataset(s) ['tweets'], no value for dataset(s) ['sentiment140']" in message
    message = error_of(write(tmp_path, both), [f"study.{key}={{imdb: 2, sentiment140: 0}}"])
    assert f"study.{key}" in message and "greater than 0" in message


def test_config_reference_is_generated_from_the_models():
    # Regenerate with `nox -s docs` (python -m bench.config_docs > docs/config.md).
    assert (Path(__file__).parents[1] / "docs" / "config.md").read_text() == reference_markdown()


def test_unknown_lr_schedule_names_key_and_the_available_ones(tmp_path):
    message = error_of(write(tmp_path, BASE + "search_space:\n  lr_schedule: {type: categorical, "
                                              "choices: [constant, onecycle]}\n"))
    assert "search_space.lr_schedule" in message and "'onecycle'" in message and "warmup_cosine" in message


@pytest.mark.parametrize("ablation, expected", [
    ("{imdb/transformer: {lr: [0.001]}}", "not a <dataset>/<architecture>"),
    ("{imdb/lstm: {bag_len: [3]}}", "ablations.imdb/lstm"),
    ("{imdb/lstm: {lr_schedule: [onecycle]}}", "ablations.imdb/lstm.lr_schedule: unknown schedule(s) ['onecycle']"),
    ("{imdb/lstm: {dropout: []}}", "ablations.imdb/lstm.dropout"),
])
def test_an_ablation_of_an_unknown_study_parameter_or_value_is_refused(tmp_path, ablation, expected):
    assert expected in error_of(write(tmp_path, BASE + f"ablations: {ablation}\n"))
