import numpy as np
import pandas as pd
import pytest

from bench import data
from bench.config import DataSettings

SETTINGS = DataSettings(vocab_size=100, max_len=40, val_fraction=0.2)


def load(mirror, name="imdb", settings=SETTINGS, seed=0):
    return data.load(name, settings, seed, str(mirror), log=lambda *_: None)


def test_missing_file_says_both_ways(runtime, tmp_path):
    with pytest.raises(data.DataError) as info:
        load(tmp_path / "empty")
    message = str(info.value)
    assert "imdb/train.parquet: file not found" in message
    assert "BENCH_DATA_DIR" in message and "Hugging Face Hub" in message and "stanfordnlp/imdb" in message


def test_wrong_schema_names_file_and_column(runtime, mirror):
    path = mirror / "imdb" / "train.parquet"
    pd.read_parquet(path).rename(columns={"label": "stars"}).to_parquet(path)
    with pytest.raises(data.DataError, match=r"imdb/train.parquet: missing column\(s\) \['label'\]"):
        load(mirror)


def test_unexpected_labels(runtime, mirror):
    path = mirror / "sentiment140" / "train.parquet"
    frame = pd.read_parquet(path)
    frame.loc[0, "sentiment"] = 2  # neutral is allowed in test only
    frame.to_parquet(path)
    expected = r"train.parquet: unexpected sentiment value\(s\) \[2\]; allowed: \[0, 4\]"
    with pytest.raises(data.DataError, match=expected):
        load(mirror, "sentiment140")


def test_sentiment140_labels_mapped_and_neutral_dropped(runtime, mirror):
    ds = load(mirror, "sentiment140")
    source = pd.read_parquet(mirror / "sentiment140" / "test.parquet")
    assert ds.stats["dropped_test_rows"] == (source.sentiment == 2).sum() > 0
    assert len(ds.test) == (source.sentiment != 2).sum()
    assert set(np.unique(ds.train.labels)) == {0, 1}
    assert ds.test.labels.sum() == (source.sentiment == 4).sum()


def test_splits_deterministic_stratified_and_disjoint(runtime, mirror):
    a = load(mirror)
    data._MEMO.clear()
    b = load(mirror, settings=SETTINGS.model_copy(update={"vocab_size": 101}))  # a different cache entry
    assert np.array_equal(a.val.labels, b.val.labels)
    assert np.array_equal(a.train.offsets, b.train.offsets)
    # Every text ends with a unique serial token, so equal id sequences would mean a shared text.
    splits = {}
    for name in ("train", "val", "test"):
        split = getattr(a, name)
        splits[name] = {tuple(split.ids[a_:b_]) for a_, b_ in zip(split.offsets[:-1], split.offsets[1:])}
    assert not splits["train"] & splits["val"] and not splits["train"] & splits["test"]
    assert len(a.train) + len(a.val) == 400
    assert abs(a.val.labels.mean() - a.train.labels.mean()) < 0.05  # stratified


def test_heldout_split_is_set_aside_from_train_and_validation(runtime, mirror):
    settings = SETTINGS.model_copy(update={"vocab_size": 10_000, "heldout_size": 100, "train_size": 200})
    ds = load(mirror, "sentiment140", settings=settings)
    assert (len(ds.heldout), len(ds.train) + len(ds.val)) == (100, 200)
    assert ds.stats["rows"]["heldout"] == 100
    assert abs(ds.heldout.labels.mean() - ds.train.labels.mean()) < 0.05  # stratified
    # Each text ends with a serial token seen once in the file: the vocabulary (from train only) holds every train
    # text's, and no held-out text's.
    last = {name: getattr(ds, name).ids[getattr(ds, name).offsets[1:] - 1] for name in ("train", "heldout")}
    assert (last["train"] != data.UNK_ID).all() and (last["heldout"] == data.UNK_ID).all()
    data._MEMO.clear()
    again = load(mirror, "sentiment140", settings=settings.model_copy(update={"vocab_size": 10_001}))
    assert np.array_equal(again.heldout.labels, ds.heldout.labels)  # seeded
    assert np.array_equal(again.heldout.offsets, ds.heldout.offsets)


def test_heldout_larger_than_the_training_file_is_refused(runtime, mirror):
    with pytest.raises(data.DataError, match=r"data.imdb.heldout_size: 400 must be below the 400 rows"):
        load(mirror, settings=SETTINGS.model_copy(update={"heldout_size": 400}))


def test_vocabulary_from_train_only(runtime, mirror):
    path = mirror / "imdb" / "test.parquet"
    frame = pd.read_parquet(path)
    frame.loc[:, "text"] = frame.text + " zzzonlyintest"
    frame.to_parquet(path)
    ds = load(mirror, settings=SETTINGS.model_copy(update={"vocab_size": 10_000}))
    assert ds.tokenizer.token_to_id("zzzonlyintest") is None
    assert ds.tokenizer.token_to_id("great") is not None


def test_normalisation():
    tokenizer = data.make_tokenizer(10)
    assert tokenizer.normalizer.normalize_str("Great<br /><br />FUN &quot;x&quot; &amp;") == 'great  fun "x" &'


def test_cache_hit_skips_tokenising(runtime, mirror, monkeypatch):
    first = load(mirror)
    data._MEMO.clear()
    monkeypatch.setattr(data, "build", lambda *a, **k: pytest.fail("tokenised again despite a cached encoding"))
    second = load(mirror)
    assert np.array_equal(first.train.ids, second.train.ids)
    assert second.tokenizer.to_str() == first.tokenizer.to_str()
    assert load(mirror) is second  # the process memo: one encoding shared by every trial


def test_bucketed_batches_cover_every_row_once():
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    sampler = data.BucketBatches(lengths, batch_size=32, shuffle=True, seed=1)
    epoch1, epoch2 = list(sampler), list(sampler)
    assert sorted(np.concatenate(epoch1).tolist()) == list(range(1000))
    assert [b.tolist() for b in epoch1] != [b.tolist() for b in epoch2]  # reshuffled every epoch
    # Padding is small: within a batch, lengths are close.
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in epoch1])
    assert spread < 10


def test_grouped_batches_are_the_same_batches_in_the_same_order():
    lengths = np.random.default_rng(0).integers(1, 30, size=203)
    split = data.Split(np.ones(lengths.sum(), dtype=np.int32), np.concatenate([[0], np.cumsum(lengths)]),
                       np.zeros(203, dtype=np.int64))
    plain = list(data.loader(split, 16, shuffle=True, seed=3))
    groups = list(data.loader(split, 16, shuffle=True, seed=3, groups=4))
    assert [len(g) for g in groups] == [3, 3, 4, 3]  # 13 batches
    assert all(a[1].equal(b[1]) for a, b in zip(plain, [b for g in groups for b in g], strict=True))
