"""Word vectors from a user's file: read for a vocabulary, refused in one line when wrong, and put into the built-in
networks' embeddings, with their coverage in the report."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.vectors import Vectors, VectorsError, init_embedding_, read_vectors, vector_size

VOCAB = {"[PAD]": 0, "[UNK]": 1, "great": 2, "awful": 3, "movie": 4}


def write(path, lines) -> str:
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


@pytest.mark.parametrize("header", [False, True], ids=["glove", "word2vec"])
def test_the_vocabulary_s_rows_are_read_and_the_rest_left_zero(tmp_path, header):
    lines = ["great 0.5 -1 2", "zebra 9 9 9", "awful 1e-2 0 -0.25", "great 7 7 7"]
    path = write(tmp_path / "v.txt", (["4 3"] if header else []) + lines)
    assert vector_size(path) == 3
    vectors = read_vectors(path, VOCAB, 3)
    assert vectors.found.tolist() == [False, False, True, True, False]
    assert vectors.matrix[2].tolist() == [0.5, -1, 2] and vectors.matrix[4].tolist() == [0, 0, 0]  # first line wins
    assert vectors.coverage() == {"path": path, "dim": 3, "covered": 2, "vocab": 5, "share": 0.4}


@pytest.mark.parametrize("lines, expected", [
    ([], "empty; expected a word and its vector per line"),
    (["great 1 2 3", "awful 1 2"], "line 2: 2 values, expected 3 (the file's vector size)"),
    (["great 1 2 3", "zebra 1 2 3 4"], "line 2: 4 values, expected 3"),
    (["great 1 2 3", "awful 1 x 3"], "line 2: a value that is not a number"),
    (["great one two"], "line 1 is not a word followed by numbers"),
])
def test_a_bad_file_is_refused_naming_the_line(tmp_path, lines, expected):
    path = write(tmp_path / "v.txt", lines)
    with pytest.raises(VectorsError, match=re.escape(expected)):
        read_vectors(path, VOCAB, 3)


def test_a_missing_file_or_another_size_is_refused(tmp_path):
    with pytest.raises(VectorsError, match="nowhere.txt: file not found"):
        vector_size(str(tmp_path / "nowhere.txt"))
    with pytest.raises(VectorsError, match="3-d vectors; embed_dim is 8: they must match"):
        read_vectors(write(tmp_path / "v.txt", ["great 1 2 3"]), VOCAB, 8)


@pytest.mark.parametrize("freeze", [False, True])
def test_the_embedding_takes_the_found_rows_only(freeze):
    matrix = np.arange(15, dtype=np.float32).reshape(5, 3)
    vectors = Vectors("v.txt", matrix, np.array([True, False, True, False, True]))
    embedding = torch.nn.EmbeddingBag(7, 3, padding_idx=0)  # two rows beyond the vocabulary: hashed word pairs
    with torch.no_grad():
        embedding.weight[0] = 0
    before = embedding.weight.detach().clone()
    init_embedding_(embedding, vectors, freeze)
    weight = embedding.weight.detach()
    assert torch.equal(weight[[2, 4]], torch.from_numpy(matrix[[2, 4]]))
    assert torch.equal(weight[[0, 1, 3, 5, 6]], before[[0, 1, 3, 5, 6]])  # the padding row stays zero
    assert embedding.weight.requires_grad is not freeze


def test_a_vector_size_other_than_embed_dim_is_refused_naming_the_key(runtime, tiny_sweep, tmp_path, capsys):
    path = write(tmp_path / "v.txt", ["great 1 2 3"])
    code = main(["sweep", str(tiny_sweep), f"data.imdb.vectors={{path: {path}}}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    expected = f"data.imdb.vectors: {path} holds 3-d vectors, but averaging's embed_dim is 8 (search_space.embed_dim)"
    assert expected in err
    code = main(["sweep", str(tiny_sweep), f"data.imdb.vectors={{path: {tmp_path / 'nowhere.txt'}}}"])
    assert code == 2 and "data.imdb.vectors.path: " in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_with_vectors_reports_their_coverage(runtime, tiny_sweep, tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = ["great", "wonderful", "awful", "boring", "movie", "plot", "notaword"]
    path = write(tmp_path / "v.txt", [f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=8)) for w in words])
    reports = tmp_path / "reports"
    assert main(["sweep", str(tiny_sweep), f"data.imdb.vectors={{path: {path}}}", "--reports", str(reports)]) == 0
    assert "word vectors: 6 of 100 vocabulary words found" in capsys.readouterr().out
    report = (reports / "tiny" / "README.md").read_text()
    assert f"IMDB: embeddings initialised from `{path}` (8-d): 6 of the 100 vocabulary words found (6.0%)" in report
