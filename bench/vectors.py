"""Word vectors from a GloVe or word2vec text file: the rows of a dataset's vocabulary, and the embeddings of the
built-in networks initialised from them (`data.<dataset>.vectors`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.runtime import UserError


class VectorsError(UserError, ValueError):
    pass


def _open(path: str):
    file = Path(os.path.expandvars(path)).expanduser()
    if not file.is_file():
        raise VectorsError(f"{path}: file not found")
    return file.open(encoding="utf-8", errors="replace")


def _is_header(fields: list[str]) -> bool:
    """word2vec's text format opens with `count dim`; GloVe's has no header."""
    return len(fields) == 2 and all(f.isdigit() for f in fields)


def vector_size(path: str) -> int:
    """The size of the file's vectors, from its first line (or its word2vec header): cheap enough for config checks."""
    with _open(path) as lines:
        fields = next(lines, "").split()
    if not fields:
        raise VectorsError(f"{path}: empty; expected a word and its vector per line")
    if _is_header(fields):
        return int(fields[1])
    try:
        [float(v) for v in fields[1:]]
    except ValueError:
        raise VectorsError(f"{path}: line 1 is not a word followed by numbers") from None
    if len(fields) < 2:
        raise VectorsError(f"{path}: line 1 holds a word and no vector")
    return len(fields) - 1


@dataclass(frozen=True)
class Vectors:
    path: str
    matrix: np.ndarray  # float32 (vocabulary, dim): the file's vector of each vocabulary word, zero where it has none
    found: np.ndarray  # bool (vocabulary,): which words the file has

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @property
    def covered(self) -> int:
        return int(self.found.sum())

    def coverage(self) -> dict:
        vocab = len(self.found)
        return {"path": self.path, "dim": self.dim, "covered": self.covered, "vocab": vocab,
                "share": round(self.covered / vocab, 4)}


def read_vectors(path: str, vocab: dict[str, int], dim: int) -> Vectors:
    """The vectors of `vocab`'s words (token -> row), read line by line: real files are gigabytes. A word's first
    line wins. A line with the wrong count of values, or a value that is no number, is an error naming it."""
    size = vector_size(path)
    if size != dim:
        raise VectorsError(f"{path}: {size}-d vectors; embed_dim is {dim}: they must match")
    matrix = np.zeros((len(vocab), dim), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    with _open(path) as lines:
        for number, line in enumerate(lines, start=1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if number == 1 and _is_header(line.split()):
                continue
            values = rest.split()
            if len(values) != dim:
                raise VectorsError(f"{path}: line {number}: {len(values)} values, expected {dim} (the file's "
                                   "vector size)")
            row = vocab.get(word)
            if row is None or found[row]:
                continue  # only the vocabulary's words are parsed as numbers
            try:
                matrix[row] = np.asarray(values, dtype=np.float32)
            except ValueError:
                raise VectorsError(f"{path}: line {number}: a value that is not a number") from None
            found[row] = True
    return Vectors(path, matrix, found)


@torch.no_grad()
def init_embedding_(embedding: torch.nn.Embedding | torch.nn.EmbeddingBag, vectors: Vectors, freeze: bool) -> None:
    """Copy the found words' vectors into the embedding's first rows; other rows (unknown words, hashed word pairs)
    keep their initialisation, the padding row stays zero."""
    from bench.data import PAD_ID

    if embedding.embedding_dim != vectors.dim:
        raise ValueError(f"embedding of size {embedding.embedding_dim}, vectors of size {vectors.dim}")
    rows = torch.from_numpy(np.flatnonzero(vectors.found))
    rows = rows[rows != PAD_ID]
    embedding.weight[rows] = torch.from_numpy(vectors.matrix[rows.numpy()]).to(embedding.weight)
    if freeze:
        embedding.weight.requires_grad_(False)


def with_vectors(dataset, path: str, log):
    """The EncodedDataset with the word vectors of its vocabulary, and their coverage in its stats."""
    log(f"[{dataset.name}] reading word vectors from {path} ...")
    try:
        vectors = read_vectors(path, dataset.tokenizer.get_vocab(), vector_size(path))
    except VectorsError as error:
        raise VectorsError(f"data.{dataset.name}.vectors: {error}") from None
    coverage = vectors.coverage()
    log(f"[{dataset.name}] word vectors: {coverage['covered']:,} of {coverage['vocab']:,} vocabulary words found")
    return dataclasses.replace(dataset, vectors=vectors, stats={**dataset.stats, "vectors": coverage})
