"""Fixtures: a tiny parquet mirror of both datasets, made by the tests, and a runtime folder per test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import data as bench_data

POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "delight"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "mess"]
FILLER = ["the", "movie", "plot", "actor", "scene", "story", "a", "it", "was", "and", "film", "ending"]


def make_texts(labels, rng, style, start, sentence=()):
    """Separable texts: the sentiment words decide the class; every text is unique (a serial token). With `sentence`
    words, each text starts with a sentence of them, the same in either class."""
    texts = []
    for i, label in enumerate(labels):
        words = list(rng.choice(FILLER, size=rng.integers(4, 16)))
        words += list(rng.choice(POSITIVE if label else NEGATIVE, size=3))
        rng.shuffle(words)
        words.append(f"id{start + i}")
        if sentence:
            words = [*rng.choice(sentence, size=rng.integers(8, 16)), ".", *words]
        text = " ".join(words)
        if style == "imdb":
            texts.append(text.replace(" and ", " <br /><br /> "))
        else:
            texts.append(text.replace(" it ", " &quot;it&quot; "))
    return texts


def write_mirror(root, n_train=400, n_test=120, seed=0, sentence=()):
    rng = np.random.default_rng(seed)
    imdb = root / "imdb"
    imdb.mkdir(parents=True)
    for split, n, start in (("train", n_train, 0), ("test", n_test, 10_000)):
        labels = np.sort(rng.integers(0, 2, n))  # sorted by label, like the real mirror
        texts = make_texts(labels, rng, "imdb", start, sentence)
        pd.DataFrame({"text": texts, "label": labels.astype("int8")}).to_parquet(imdb / f"{split}.parquet")
    s140 = root / "sentiment140"
    s140.mkdir(parents=True)
    labels = np.sort(rng.integers(0, 2, n_train))
    pd.DataFrame({"text": make_texts(labels, rng, "s140", 20_000),
                  "sentiment": (labels * 4).astype("int8")}).to_parquet(s140 / "train.parquet")
    test = np.array([0, 2, 4] * (n_test // 3))
    pd.DataFrame({"text": make_texts(test // 4, rng, "s140", 30_000), "sentiment": test.astype("int8"),
                  "date": "Mon May 11 03:17:40 UTC 2009", "query": "kindle2", "user": "u"}).to_parquet(
        s140 / "test.parquet")
    return root


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A fresh runtime folder (caches, stores) for the test, and no dataset memo left from another test."""
    home = tmp_path / "runtime"
    monkeypatch.setenv("BENCH_HOME", str(home))
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(bench_data, "_MEMO", {})
    return home


@pytest.fixture
def mirror(tmp_path):
    return write_mirror(tmp_path / "mirror")


@pytest.fixture
def tiny_sweep(mirror, tmp_path):
    """A sweep config shrunk for tests: small vocabulary, short texts, one or two epochs."""
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"""
name: tiny
seed: 0
data_dir: {mirror}
datasets: [imdb]
architectures: [averaging]
data:
  imdb: {{vocab_size: 100, max_len: 40, val_fraction: 0.2}}
  sentiment140: {{vocab_size: 100, max_len: 40, val_fraction: 0.2, heldout_size: 60}}
study:
  n_trials: 2
  max_epochs: 2
  patience: 2
  validations_per_epoch: {{imdb: 2, sentiment140: 1}}
  target_val_acc: {{imdb: 0.7}}
  sampler: {{type: tpe, n_startup_trials: 1}}
  pruner: {{type: median, n_startup_trials: 1}}
search_space:
  lr: {{type: float, low: 0.02, high: 0.05, log: true}}
  batch_size: 32
  embed_dim: 8
search_spaces:
  bag_concat: {{bag_len: 16, hidden_size: 8}}
  simple_rnn: {{hidden_size: 8}}
  gru: {{hidden_size: 8}}
  lstm: {{hidden_size: 8}}
  bilstm: {{hidden_size: 8}}
"""
    )
    return path
