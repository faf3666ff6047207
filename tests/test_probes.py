"""Probes: an order-blind network's pairs, the probe sets' determinism and form, and a tiny sweep's models probed
into MLflow and the report."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_mirror
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench import data as bench_data
from bench import models, probe_sets, probes
from bench.cli import main
from bench.config import load_config
from bench.data import UNK_ID
from bench.models import build_network
from bench.runtime import tracking_uri
from bench.serving import predict_probabilities

# Every word of the templates, so that the tiny vocabulary holds them; each text starts with a sentence of them.
TEMPLATE_WORDS = sorted({w for pair in probe_sets.TEMPLATES for text in pair
                         for w in re.findall(r"[a-z]+|,", text.replace("{p}", "").replace("{n}", ""))})
OVERRIDES = ["architectures=[averaging, lstm]", "data.imdb.max_len=400", "study.replicates=2"]
MAX_LEN = 400


@pytest.fixture
def probe_sweep(tmp_path, tiny_sweep):
    """The tiny sweep over a mirror whose texts hold the templates' words and neutral sentences."""
    mirror = write_mirror(tmp_path / "probe-mirror", n_train=2000, n_test=400, sentence=TEMPLATE_WORDS)
    path = tmp_path / "probe.yaml"
    path.write_text(re.sub(r"data_dir: .*", f"data_dir: {mirror}", tiny_sweep.read_text()))
    return path


@pytest.fixture
def probe_data(runtime, probe_sweep):
    cfg = load_config(probe_sweep, OVERRIDES)
    return cfg, bench_data.load("imdb", cfg.data_for("imdb"), cfg.seed, cfg.data_dir, log=lambda *_: None)


def pair_probabilities(network, order, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    texts = [*order.pairs["positive"], *order.pairs["negative"]]
    encoded = bench_data.encode(tokenizer, texts, np.zeros(len(texts)))
    return np.split(predict_probabilities(network, encoded), 2)


def test_an_order_blind_network_ranks_the_texts_of_every_pair_equally(probe_data):
    cfg, data = probe_data
    order = probe_sets.probe_sets(data, MAX_LEN, cfg.seed).order
    torch.manual_seed(0)
    blind = build_network("averaging", data.vocab_size, embed_dim=8, hidden_size=8)
    positive, negative = pair_probabilities(blind, order, data.tokenizer)
    np.testing.assert_allclose(positive, negative, rtol=0, atol=probes.TIE)
    metrics = probes.order_metrics(blind, order, data.tokenizer)
    assert metrics["probe/order/ordered_right"] == 0.5 and metrics["probe/order/flipped"] == 0.0
    assert metrics["probe/order/acc"] == 0.5
    # Word pairs (hashed bigrams) see the order: the same check tells them apart.
    pairs = build_network("averaging", data.vocab_size, embed_dim=8, hidden_size=8, bigram_buckets=64)
    positive, negative = pair_probabilities(pairs, order, data.tokenizer)
    assert np.abs(positive - negative).max() > 100 * probes.TIE


def test_probe_sets_are_deterministic_and_well_formed(probe_data):
    cfg, data = probe_data
    sets, again = (probe_sets.probe_sets(data, MAX_LEN, cfg.seed) for _ in range(2))
    pd.testing.assert_frame_equal(sets.order.pairs, again.order.pairs)
    assert sets.summary() == again.summary() and sets.notes == {}
    for a, b in ((sets.memory.filler, again.memory.filler), (sets.memory.starts, again.memory.starts),
                 (sets.gradient.texts.ids, again.gradient.texts.ids)):
        assert np.array_equal(a, b)

    # Word order: the dataset's sentiment words, every template, each pair the same words in another order.
    order = sets.order
    assert set(order.positive_words) == {"great", "wonderful", "superb", "brilliant"}
    assert set(order.negative_words) == {"awful", "boring", "terrible", "dull"}
    assert order.templates == list(range(len(probe_sets.TEMPLATES))) and len(order.pairs) == 8 * 16
    for pair in order.pairs.itertuples():
        positive, negative = (data.tokenizer.encode(t).ids for t in (pair.positive, pair.negative))
        assert UNK_ID not in positive + negative
        assert sorted(positive) == sorted(negative) and positive != negative
    other = probe_sets.probe_sets(data, MAX_LEN, cfg.seed + 1).order.pairs
    assert not other.equals(order.pairs)

    # Memory: the review whole, then (or after) the filler, within max_len; the filler neutral word by word.
    memory = sets.memory
    polarity, _ = probe_sets.token_polarity(data.train, data.vocab_size)
    assert np.abs(polarity[memory.filler]).max() < probe_sets.NEUTRAL_POLARITY
    for i in range(0, len(memory.parts), 37):
        part = memory.parts[i]
        assert len(part) <= probe_sets.PART_TOKENS
        for k in probe_sets.MEMORY_DISTANCES:
            after, before = memory.text(i, "after", k), memory.text(i, "before", k)
            assert len(after) == len(before) == len(part) + min(k, MAX_LEN - len(part)) <= MAX_LEN
            assert np.array_equal(after[:len(part)], part) and np.array_equal(before[len(before) - len(part):], part)
    # Gradient: every text reaches the largest distance measured.
    assert (sets.gradient.texts.lengths > sets.gradient.max_distance).all()


@pytest.mark.parametrize("arch", ["simple_rnn", "gru"])
def test_gradient_norms_through_the_cpu_kernels_equal_torch_nn(arch, monkeypatch):
    rng = np.random.default_rng(0)
    texts = [rng.integers(2, 50, rng.integers(30, 60)).astype(np.int32) for _ in range(16)]
    gradient = probe_sets.GradientSet(probe_sets.as_split(texts, rng.integers(0, 2, 16)), 25)
    torch.manual_seed(0)
    network = build_network(arch, 50, embed_dim=8, hidden_size=8)
    fast = probes.gradient_norms(network, gradient)
    monkeypatch.setattr(models, "fast_path", lambda rnn, x: False)
    np.testing.assert_allclose(fast, probes.gradient_norms(network, gradient), rtol=1e-5)
    assert fast.shape == (26,) and (fast > 0).all()


def test_probing_a_sweep_that_does_not_exist_is_a_clear_error(runtime, capsys):
    assert main(["probe", "no-such-sweep"]) == 2
    assert "no sweep 'no-such-sweep'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_sweep_probes_its_models_into_mlflow_and_the_report(runtime, probe_sweep, tmp_path):
    reports = tmp_path / "reports"
    assert main(["sweep", str(probe_sweep), *OVERRIDES, "probes=true", "--reports", str(reports)]) == 0
    client = MlflowClient(tracking_uri(load_config(probe_sweep)))
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    studies = {r.data.tags["architecture"]: r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags}
    lstm = studies["lstm"]
    assert lstm.data.tags["probes"] == "done"
    steps = {key: [m.step for m in client.get_metric_history(lstm.info.run_id, key)]
             for key in ("probe/memory/after/acc", "probe/memory/before/auroc", "probe/gradient/norm",
                         "probe/gradient_init/norm")}
    assert steps["probe/memory/after/acc"] == steps["probe/memory/before/auroc"] == list(probe_sets.MEMORY_DISTANCES)
    assert steps["probe/gradient/norm"] == steps["probe/gradient_init/norm"] == list(range(26))  # D = 25 here
    assert {a.path for a in client.list_artifacts(lstm.info.run_id, "probes")} == {probes.PROBE_SETS,
                                                                                  probes.ORDER_PAIRS}
    replicates = [r for r in runs if "replicate" in r.data.tags]
    assert len(replicates) == 4 and all("probe/order/acc" in r.data.metrics for r in replicates)
    averaging = [r for r in runs if r.data.tags["architecture"] == "averaging" and "probe/order/acc" in r.data.metrics]
    assert len(averaging) == 3 and all(r.data.metrics["probe/order/ordered_right"] == 0.5 for r in averaging)

    report = (reports / "tiny" / "README.md").read_text()
    assert "## Probes" in report and "(3 models per study" in report
    assert "| `averaging` | 3 | 50.0 [50.0, 50.0] | 0.0 [0.0, 0.0] |" in report
    assert "the same probability in all 3 models: exactly chance, as the claim says" in report
    for figure in ("probe_word_order.png", "probe_memory.png", "probe_gradient.png"):
        assert f"]({figure})" in report and (reports / "tiny" / figure).read_bytes()[:4] == b"\x89PNG"
    sample = report.split("The first 10 pairs:")[1].split("###")[0]
    assert sample.count("\n| ") == 11  # the header and 10 pairs

    # `bench probe NAME` runs them again on the finished sweep, from the store, and the report keeps its section.
    assert main(["probe", "tiny", *OVERRIDES, "--reports", str(reports)]) == 0
    history = client.get_metric_history(lstm.info.run_id, "probe/order/acc")
    assert len(history) == 2 and history[0].value == history[1].value
    assert (reports / "tiny" / "README.md").read_text().split("## Probes")[1] == report.split("## Probes")[1]
