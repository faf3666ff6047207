"""Datasets: load (local parquet mirror or the Hugging Face Hub), check, split, tokenise, cache, batch.

A dataset is encoded once per (content, settings) and cached on disk; the cache holds the token ids of
every split flat, with offsets, plus the tokeniser, so a second sweep loads it without tokenising again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from bench import data_files
from bench.data_files import FileDatasetSpec
from bench.runtime import UserError, runtime_dir
from bench.vectors import Vectors, with_vectors

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
CACHE_VERSION = 3  # bump when the encoding below changes
ENCODE_CHUNK = 50_000  # texts per tokenizer call


@dataclass(frozen=True)
class DatasetSpec:
    hub_name: str  # Hugging Face Hub dataset, used when no local mirror is set
    label_column: str
    label_map: dict[int, int]  # source label -> class (0 negative, 1 positive)
    dropped_labels: tuple[int, ...] = ()  # source labels removed from test (Sentiment140's neutral)
    class_names: tuple[str, ...] = ("negative", "positive")  # by class
    text_column: str = "text"


# Every dataset by name; a sweep config adds its user's datasets (`user_datasets`, data_files.py).
DATASETS: dict[str, DatasetSpec | FileDatasetSpec] = {
    "imdb": DatasetSpec("stanfordnlp/imdb", "label", {0: 0, 1: 1}),
    "sentiment140": DatasetSpec("stanfordnlp/sentiment140", "sentiment", {0: 0, 4: 1}, dropped_labels=(2,)),
}
BUILT_IN = tuple(DATASETS)


def register_dataset(name: str, settings) -> None:
    """Add a user's dataset (config.UserDataset) to DATASETS under `name`."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in dataset's name; choose another")
    DATASETS[name] = FileDatasetSpec(settings.train, settings.test, settings.test_fraction, settings.text_column,
                                     settings.label_column, tuple(settings.labels))


class DataError(UserError, RuntimeError):
    pass


@dataclass
class Split:
    """Encoded texts of one split: token ids of text i are ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray  # int32, all texts concatenated
    offsets: np.ndarray  # int64, len(texts) + 1
    labels: np.ndarray  # int64 classes

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EncodedDataset:
    name: str
    tokenizer: Tokenizer
    train: Split
    val: Split
    test: Split
    stats: dict  # rows per split, dropped rows, vocabulary size, token-length statistics
    heldout: Split | None = None  # in-distribution test rows set aside from the training file
    vectors: Vectors | None = None  # word vectors of the vocabulary's rows, from `data.<name>.vectors`

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def class_names(self) -> tuple[str, ...]:
        return DATASETS[self.name].class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def make_tokenizer(max_len: int) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace("<br />", " "),  # IMDB's HTML line breaks, all spelt this way
            # Sentiment140 keeps the source file's HTML entities.
            normalizers.Replace("&quot;", '"'),
            normalizers.Replace("&amp;", "&"),
            normalizers.Replace("&lt;", "<"),
            normalizers.Replace("&gt;", ">"),
            normalizers.Replace("&#39;", "'"),
            normalizers.Lowercase(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # Keep the end of long texts: reviews tend to close with their verdict (Keras' pad_sequences does too).
    tokenizer.enable_truncation(max_len, direction="left")
    return tokenizer


def resolve_data_dir(setting: str | None) -> Path | None:
    value = setting or os.environ.get("BENCH_DATA_DIR")
    return Path(value).expanduser() if value else None


def _no_data_message(name: str, problem: str) -> str:
    return (
        f"{problem}\nTo get the {name} data either set BENCH_DATA_DIR (or data_dir in the sweep config) to a "
        f"folder holding {name}/train.parquet and {name}/test.parquet, or give this machine access to the "
        f"Hugging Face Hub ({DATASETS[name].hub_name})."
    )


def load_source(name: str, data_dir: Path | None, seed: int) -> dict:
    """The raw train and test splits as `datasets.Dataset`s with the text and label columns."""
    import datasets  # slow import; only needed on a cache miss

    if not sys.stderr.isatty():
        datasets.disable_progress_bars()  # in logs their carriage returns pile up on one line

    spec = DATASETS[name]
    if isinstance(spec, FileDatasetSpec):
        return data_files.load_sources(spec, seed, DataError)
    columns = ["text", spec.label_column]
    cache_dir = str(runtime_dir() / "hf")
    splits = {}
    for split in ("train", "test"):
        if data_dir is not None:
            path = data_dir / name / f"{split}.parquet"
            if not path.is_file():
                raise DataError(_no_data_message(name, f"{path}: file not found"))
            source = str(path)
            _check_parquet(path, columns)
            splits[split] = datasets.load_dataset("parquet", data_files=source, split="train", columns=columns,
                                                  cache_dir=cache_dir)
        else:
            source = f"{spec.hub_name} ({split})"
            try:
                splits[split] = datasets.load_dataset(spec.hub_name, split=split, cache_dir=cache_dir)
            except Exception as error:
                raise DataError(_no_data_message(name, f"could not load {source}: {error}")) from None
        _check_schema(splits[split], source, spec, split)
    return splits


def _check_parquet(path: Path, columns: list[str]) -> None:
    """Readable, with the columns needed and at least one row; checked before `datasets` reads it."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(path)
    except Exception as error:
        raise DataError(f"{path}: not a readable parquet file: {error}") from None
    present = set(metadata.schema.names)
    missing = [c for c in columns if c not in present]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {sorted(present)}; need {columns}")
    if metadata.num_rows == 0:
        raise DataError(f"{path}: no rows; each split needs labelled texts")


def _check_schema(ds, source: str, spec: DatasetSpec, split: str) -> None:
    text_type = str(ds.features.get("text", ""))
    if "string" not in text_type:
        raise DataError(f"{source}: column 'text' must hold strings, found {text_type or 'no such column'}")
    for column in ("text", spec.label_column):
        nulls = np.flatnonzero(ds.data.column(column).is_null())
        if len(nulls):
            raise DataError(f"{source}: column {column!r} is empty (null) in {len(nulls)} row(s), the first "
                            f"{nulls[:5].tolist()}; every row needs a text and a label")
    labels = np.unique(np.asarray(ds.data.column(spec.label_column)))
    allowed = set(spec.label_map) | (set(spec.dropped_labels) if split == "test" else set())
    unexpected = sorted(set(labels.tolist()) - allowed)
    if unexpected:
        raise DataError(
            f"{source}: unexpected {spec.label_column} value(s) {unexpected}; allowed: {sorted(allowed)}"
        )


def stratified_subset(labels: np.ndarray, size_or_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a stratified random subset; an int is a row count, a float a fraction."""
    fraction = size_or_fraction if isinstance(size_or_fraction, float) else size_or_fraction / len(labels)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.choice(members, size=round(len(members) * fraction), replace=False))
    return np.sort(np.concatenate(chosen))


def encode(tokenizer: Tokenizer, texts: list[str], labels: np.ndarray) -> Split:
    lengths, ids = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int32)]
    # In chunks, each turned into arrays at once: faster than one call over millions of texts (docs/performance.md).
    for start in range(0, len(texts), ENCODE_CHUNK):
        encodings = tokenizer.encode_batch_fast(texts[start : start + ENCODE_CHUNK])
        # A text with no token would have no last state to read: it becomes one [UNK].
        rows = [e.ids or [UNK_ID] for e in encodings]
        lengths.append(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)))
        ids.append(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths[-1].sum())))
    lengths = np.concatenate(lengths)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Split(np.concatenate(ids), offsets, labels.astype(np.int64))


def _length_stats(split: Split) -> dict:
    lengths = split.lengths
    return {
        "mean": round(float(lengths.mean()), 1),
        "median": int(np.median(lengths)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
    }


def split_training_rows(name: str, labels: np.ndarray, settings, rng: np.random.Generator):
    """Row numbers of the training file's train, validation and held-out splits (None without one), each stratified
    and shuffled (both mirrors are sorted by label)."""
    keep, heldout_idx = np.arange(len(labels)), None
    if settings.heldout_size is not None:  # set aside first: no train_size or val draw can reach these rows
        if settings.heldout_size >= len(labels):
            raise DataError(f"data.{name}.heldout_size: {settings.heldout_size} must be below the {len(labels)} "
                            "rows of the training file, which also gives train and validation")
        heldout_idx = rng.permutation(stratified_subset(labels, settings.heldout_size, rng))
        keep = np.setdiff1d(keep, heldout_idx)
    if settings.train_size is not None and settings.train_size < len(keep):
        keep = keep[stratified_subset(labels[keep], settings.train_size, rng)]
    is_val = np.zeros(len(keep), dtype=bool)
    is_val[stratified_subset(labels[keep], settings.val_fraction, rng)] = True
    return rng.permutation(keep[~is_val]), rng.permutation(keep[is_val]), heldout_idx


def _check_validation_classes(name: str, spec, train_labels: np.ndarray, val_labels: np.ndarray, settings) -> None:
    """Every class the training split has reaches the validation split too: its accuracy and pruning read it."""
    missing = sorted(set(train_labels.tolist()) - set(val_labels.tolist()), key=str)
    if missing:
        counts = {label: int((train_labels == label).sum()) for label in missing}
        raise DataError(f"data.{name}: class(es) {', '.join(f'{v!r} ({n} rows)' for v, n in counts.items())} too "
                        f"small for a validation share of {settings.val_fraction}: it gets no row; give each class "
                        f"at least {int(np.ceil(0.5 / settings.val_fraction))} training rows or raise "
                        f"data.{name}.val_fraction")


def build(name: str, sources: dict, settings, seed: int) -> EncodedDataset:
    """Split, train the tokeniser on the training split only, and encode every split."""
    spec = DATASETS[name]
    rng = np.random.default_rng(seed)
    train_src, test_src = sources["train"], sources["test"]
    to_class = np.vectorize(spec.label_map.get, otypes=[np.int64])

    raw_train = np.asarray(train_src.data.column(spec.label_column))
    train_idx, val_idx, heldout_idx = split_training_rows(name, raw_train, settings, rng)
    _check_validation_classes(name, spec, raw_train[train_idx], raw_train[val_idx], settings)

    texts = train_src.data.column(spec.text_column)
    train_texts = texts.take(train_idx).to_pylist()
    val_texts = texts.take(val_idx).to_pylist()

    raw_test = np.asarray(test_src.data.column(spec.label_column))
    test_keep = np.flatnonzero(~np.isin(raw_test, spec.dropped_labels))
    test_texts = test_src.data.column(spec.text_column).take(test_keep).to_pylist()

    tokenizer = make_tokenizer(settings.max_len)
    trainer = trainers.WordLevelTrainer(vocab_size=settings.vocab_size, special_tokens=[PAD, UNK])
    tokenizer.train_from_iterator(train_texts, trainer=trainer, length=len(train_texts))
    assert tokenizer.token_to_id(PAD) == PAD_ID and tokenizer.token_to_id(UNK) == UNK_ID

    train = encode(tokenizer, train_texts, to_class(raw_train[train_idx]))
    val = encode(tokenizer, val_texts, to_class(raw_train[val_idx]))
    test = encode(tokenizer, test_texts, to_class(raw_test[test_keep]))
    heldout = None
    if heldout_idx is not None:
        heldout = encode(tokenizer, texts.take(heldout_idx).to_pylist(), to_class(raw_train[heldout_idx]))
    stats = {
        "rows": {"train": len(train), "val": len(val), "test": len(test),
                 **({"heldout": len(heldout)} if heldout is not None else {})},
        "dropped_test_rows": int(len(raw_test) - len(test_keep)),
        "source_rows": {"train": len(raw_train), "test": len(raw_test)},
        "vocab_size": tokenizer.get_vocab_size(),
        "train_tokens": _length_stats(train),
        **({"classes": ", ".join(spec.class_names), "shared_texts": data_files.shared_texts(train_src, test_src, spec)}
           if isinstance(spec, FileDatasetSpec) else {}),
    }
    return EncodedDataset(name, tokenizer, train, val, test, stats, heldout)


SPLITS = ("train", "val", "test", "heldout")
_MEMO: dict[str, EncodedDataset] = {}  # one encoding per dataset and process, shared by every trial


def load(name: str, settings, seed: int, data_dir: str | None = None, log=print) -> EncodedDataset:
    """The encoded dataset, from the on-disk cache when its content and settings match."""
    sources = load_source(name, resolve_data_dir(data_dir), seed)
    spec = DATASETS[name]
    key_material = {
        "name": name,
        "fingerprints": {s: ds._fingerprint for s, ds in sources.items()},
        "settings": settings.model_dump(exclude={"vectors"}),  # vectors are not encoded
        "seed": seed,
        "version": CACHE_VERSION,
        **({"spec": spec.cache_material()} if isinstance(spec, FileDatasetSpec) else {}),
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
    memo = f"{key}/{settings.vectors.model_dump_json() if settings.vectors else ''}"
    if memo in _MEMO:
        return _MEMO[memo]
    path = runtime_dir() / "cache" / f"{name}-{key}.npz"
    if path.is_file():
        dataset = _read_cache(name, path)
        log(f"[{name}] encoded data from cache {path}")
    else:
        log(f"[{name}] tokenising and encoding (cache miss) ...")
        dataset = build(name, sources, settings, seed)
        _write_cache(dataset, path)
        log(f"[{name}] cached at {path}")
    if dataset.stats.get("shared_texts"):
        log(f"[{name}] warning: {dataset.stats['shared_texts']} distinct text(s) are in both train and test; a model "
            "is tested on some of what it trained on")
    if settings.vectors is not None:
        dataset = with_vectors(dataset, settings.vectors.path, log)
    _MEMO[memo] = dataset
    return dataset


def _write_cache(dataset: EncodedDataset, path: Path) -> None:
    arrays = {"tokenizer": np.frombuffer(dataset.tokenizer.to_str().encode(), dtype=np.uint8),
              "stats": np.frombuffer(json.dumps(dataset.stats).encode(), dtype=np.uint8)}
    for split in SPLITS:
        s = getattr(dataset, split)
        if s is None:
            continue
        arrays.update({f"{split}_ids": s.ids, f"{split}_offsets": s.offsets, f"{split}_labels": s.labels})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache entry


def _read_cache(name: str, path: Path) -> EncodedDataset:
    with np.load(path) as f:
        splits = {s: Split(f[f"{s}_ids"], f[f"{s}_offsets"], f[f"{s}_labels"]) if f"{s}_ids" in f else None
                  for s in SPLITS}
        tokenizer = Tokenizer.from_str(f["tokenizer"].tobytes().decode())
        stats = json.loads(f["stats"].tobytes().decode())
    return EncodedDataset(name, tokenizer, stats=stats, **splits)


class BucketBatches(torch.utils.data.Sampler):
    """Batches of texts of similar length, so that little of each batch is padding.

    Training: shuffle, sort each pool of `pool_batches` batches by length, cut it into batches and shuffle
    the batch order; a new order every epoch, reproducible from the seed. Evaluation: sorted by length.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, pool_batches: int = 50):
        self.lengths, self.batch_size, self.shuffle = lengths, batch_size, shuffle
        self.pool = batch_size * pool_batches
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            yield from np.array_split(order, range(self.batch_size, len(order), self.batch_size))
            return
        order = self.rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += np.array_split(pool, range(self.batch_size, len(pool), self.batch_size))
        for i in self.rng.permutation(len(batches)):
            yield batches[i]

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class Groups(torch.utils.data.Sampler):
    """The batches of a batch sampler in `count` consecutive groups of near-equal size."""

    def __init__(self, batches: torch.utils.data.Sampler, count: int):
        if not 1 <= count <= len(batches):
            raise ValueError(f"{count} groups of {len(batches)} batches: each group needs a batch")
        self.batches, self.count = batches, count

    def __iter__(self):
        batches = list(self.batches)
        bounds = np.linspace(0, len(batches), self.count + 1).round().astype(int)
        for start, end in itertools.pairwise(bounds):
            yield batches[start:end]

    def __len__(self) -> int:
        return self.count


class Batches(torch.utils.data.Dataset):
    """Indexed by an array of row numbers, returns the batch (ids, lengths, labels), right-padded to its
    longest text, or to `pad_to` tokens; indexed by a list of such arrays, the list of their batches."""

    def __init__(self, split: Split, pad_to: int | None = None):
        self.split, self.pad_to = split, pad_to
        self.lengths = split.lengths

    def __getitem__(self, rows):
        if isinstance(rows, list):
            return [self[r] for r in rows]
        lengths = self.lengths[rows]
        steps = np.arange(self.pad_to or lengths.max())
        index = np.minimum(self.split.offsets[rows, None] + steps, len(self.split.ids) - 1)
        ids = np.where(steps < lengths[:, None], self.split.ids[index], PAD_ID).astype(np.int64)
        return torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(self.split.labels[rows])

    def __len__(self):
        return len(self.split)


def loader(split: Split, batch_size: int, shuffle: bool, seed: int = 0,
           groups: int | None = None) -> torch.utils.data.DataLoader:
    """Batches of `batch_size` texts; with `groups`, an epoch's batches as that many lists of consecutive batches
    (what training steps through)."""
    sampler = BucketBatches(split.lengths, batch_size, shuffle, seed)
    if groups is not None:
        sampler = Groups(sampler, groups)
    # batch_size=None: the sampler yields whole batches (or groups), which Batches pads in one go.
    return torch.utils.data.DataLoader(Batches(split), sampler=sampler, batch_size=None,
                                       pin_memory=torch.cuda.is_available())
