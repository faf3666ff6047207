"""A user's dataset from files (parquet, CSV or JSON lines): its spec, loaded with `datasets`, and every check that
refuses a bad file in one line naming it (docs/your-own.md).

Registered under its config name in data.DATASETS, it is split, tokenised, cached and batched like the built-in ones.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}  # suffix -> datasets' builder
SHOWN = 5  # rows or values an error lists


@dataclass(frozen=True)
class FileDatasetSpec:
    train: str  # path, `$VARS` expanded
    test: str | None  # None: test_fraction of the train file
    test_fraction: float | None
    text_column: str
    label_column: str
    labels: tuple  # the classes in order, as the files spell them
    dropped_labels: tuple = ()  # none: every value of the label column is a class

    @property
    def label_map(self) -> dict:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(label) for label in self.labels)

    def cache_material(self) -> dict:
        """What the encoded cache's key holds of the spec beyond the files' content: how they are read."""
        return {"test_fraction": self.test_fraction, "text_column": self.text_column,
                "label_column": self.label_column, "labels": list(self.labels)}


def expanded(path: str) -> Path:
    return Path(os.path.expandvars(path)).expanduser()


def check_path(path: str) -> str:
    """The path, if it names an existing file of a readable format; else ValueError naming it."""
    suffix = expanded(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unknown format {suffix or '(no suffix)'!r}; allowed: {', '.join(FORMATS)}")
    if not expanded(path).is_file():
        unset = " (an environment variable in it is unset)" if "$" in os.path.expandvars(path) else ""
        raise ValueError(f"{path}: file not found{unset}")
    return path


def load_sources(spec: FileDatasetSpec, seed: int, error) -> dict:
    """The train and test splits as `datasets.Dataset`s with the text and label columns, checked; `error` is the
    exception class to raise."""
    train = _read(spec.train, spec, error)
    if spec.test is not None:
        test = _read(spec.test, spec, error)
        _check_same_label_type(train, test, spec, error)
        _check_values(test, spec.test, spec, error)
    else:  # a stratified, seeded share of the train file
        from bench.data import stratified_subset

        labels = np.asarray(train.data.column(spec.label_column).to_pylist(), dtype=object)
        chosen = stratified_subset(_class_ids(labels, spec), spec.test_fraction, np.random.default_rng(seed))
        is_test = np.zeros(len(train), dtype=bool)
        is_test[chosen] = True
        # flatten_indices: the rows themselves, for build() reads a dataset's Arrow table, which select() leaves whole.
        train, test = (train.select(rows).flatten_indices() for rows in (np.flatnonzero(~is_test), chosen))
    _check_classes(train, test, spec, error)
    return {"train": train, "test": test}


def _read(path: str, spec: FileDatasetSpec, error):
    import datasets

    from bench.runtime import runtime_dir

    file = expanded(path)
    if not file.is_file():
        raise error(f"{path}: file not found")
    try:
        ds = datasets.load_dataset(FORMATS[file.suffix.lower()], data_files=str(file), split="train",
                                   cache_dir=str(runtime_dir() / "hf"))
    except Exception as cause:  # the parser's own words: a bad line, a bad encoding
        raise error(f"{path}: not readable as {FORMATS[file.suffix.lower()]}: {str(cause).splitlines()[0]}") from None
    missing = [c for c in (spec.text_column, spec.label_column) if c not in ds.column_names]
    if missing:
        raise error(f"{path}: no column {' or '.join(map(repr, missing))}; its columns: {ds.column_names}")
    if len(ds) == 0:
        raise error(f"{path}: no rows")
    ds = ds.select_columns([spec.text_column, spec.label_column])
    if path == spec.train:  # the test file's values are checked once its label type is known to match
        _check_values(ds, path, spec, error)
    return ds


def _check_values(ds, path: str, spec: FileDatasetSpec, error) -> None:
    """Every row has a text and a label, and every label is one of spec.labels."""
    for column in (spec.text_column, spec.label_column):
        nulls = np.flatnonzero(ds.data.column(column).is_null())
        if len(nulls):
            raise error(f"{path}: column {column!r} is empty in {len(nulls)} row(s), {_rows(nulls)}; every row needs "
                        "a text and a label")
    texts = ds.data.column(spec.text_column).to_pylist()
    not_text = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if not_text:
        raise error(f"{path}: column {spec.text_column!r} holds {type(texts[not_text[0]]).__name__}, not text, in "
                    f"{len(not_text)} row(s), {_rows(not_text)}")
    counts = Counter(ds.data.column(spec.label_column).to_pylist())
    unknown = sorted((value for value in counts if value not in spec.label_map), key=str)
    if unknown:
        hint = ""
        if all(str(v) in spec.class_names for v in unknown):
            hint = (f" (the file holds them as {type(unknown[0]).__name__}, labels lists "
                    f"{type(spec.labels[0]).__name__}: write them as the file does)")
        raise error(f"{path}: column {spec.label_column!r} holds value(s) not in labels: "
                    f"{', '.join(repr(v) for v in unknown[:SHOWN])}{hint}; labels: {list(spec.labels)}")


def _check_same_label_type(train, test, spec: FileDatasetSpec, error) -> None:
    kinds = {split: _kind(ds.data.column(spec.label_column).type) for split, ds in (("train", train), ("test", test))}
    if kinds["train"] != kinds["test"]:
        raise error(f"{spec.test}: column {spec.label_column!r} is {kinds['test']}, but {kinds['train']} in "
                    f"{spec.train} (e.g. \"1\" against 1): write the labels the same way in both")


def _check_classes(train, test, spec: FileDatasetSpec, error) -> None:
    """Every class has training rows and test rows."""
    for split, ds, source in (("train", train, spec.train), ("test", test, spec.test or spec.train)):
        present = set(ds.data.column(spec.label_column).to_pylist())
        absent = [label for label in spec.labels if label not in present]
        if absent:
            raise error(f"{source}: no {split} row of class(es) {', '.join(map(repr, absent))}; every class of "
                        f"labels needs {split} rows")


def shared_texts(train, test, spec: FileDatasetSpec) -> int:
    """How many distinct texts are in both train and test: tested on what it trained on, a model looks better."""
    texts = [set(ds.data.column(spec.text_column).to_pylist()) for ds in (train, test)]
    return len(texts[0] & texts[1])


def _kind(arrow_type) -> str:
    """An Arrow type's kind, as a label's type is compared: int8 and int64 are alike, string and int are not."""
    import pyarrow as pa

    for kind, test in (("string", pa.types.is_string), ("string", pa.types.is_large_string),
                       ("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("bool", pa.types.is_boolean)):
        if test(arrow_type):
            return kind
    return str(arrow_type)


def _class_ids(labels: np.ndarray, spec: FileDatasetSpec) -> np.ndarray:
    return np.fromiter((spec.label_map[v] for v in labels), dtype=np.int64, count=len(labels))


def _rows(rows) -> str:
    shown = ", ".join(str(int(r)) for r in list(rows)[:SHOWN])
    return f"rows {shown}{', ...' if len(rows) > SHOWN else ''} (counted from 0, header excluded)"
