"""Your own dataset: files of any of three formats, any number of classes, refused in one line when a file is wrong,
and swept, replicated, reported and served like the built-in datasets."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bench import data as bench_data
from bench.cli import main
from bench.config import load_config
from bench.runtime import tracking_uri

CLASSES = {"billing": ["invoice", "refund", "charge"], "tech": ["crash", "error", "login"],
           "sales": ["quote", "discount", "demo"]}
FILLER = ["please", "help", "my", "account", "today", "thanks", "the", "team", "about", "order"]


def tickets(n: int, seed: int, start: int) -> pd.DataFrame:
    """Separable support tickets: each queue's words decide it; every text is unique (a serial token)."""
    rng = np.random.default_rng(seed)
    queues = np.array(list(CLASSES))[np.arange(n) % len(CLASSES)]
    texts = [" ".join([*rng.choice(FILLER, 6), *rng.choice(CLASSES[q], 2), f"t{start + i}"])
             for i, q in enumerate(queues)]
    return pd.DataFrame({"body": texts, "queue": queues, "priority": rng.integers(1, 4, n)})


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "tickets"
    folder.mkdir()
    tickets(300, 0, 0).to_csv(folder / "train.csv", index=False)
    tickets(90, 1, 10_000).to_json(folder / "test.jsonl", orient="records", lines=True)
    return folder


@pytest.fixture
def registry():
    """The datasets registry as it was: a config registers its user's datasets in the process."""
    before = dict(bench_data.DATASETS)
    yield
    bench_data.DATASETS.clear()
    bench_data.DATASETS.update(before)


def with_tickets(files, **settings) -> list[str]:
    spec = {"train": str(files / "train.csv"), "test": str(files / "test.jsonl"), "text_column": "body",
            "label_column": "queue", "labels": list(CLASSES), **settings}
    spec = {k: v for k, v in spec.items() if v is not None}
    return [f"user_datasets={{tickets: {json.dumps(spec)}}}", "datasets=[tickets]",
            "data.tickets={vocab_size: 100, max_len: 20, val_fraction: 0.2}", "study.validations_per_epoch=1"]


def refusal(args, capsys) -> str:
    """The one line `bench sweep` exits 2 with."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def rewrite(path, change) -> None:
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_json(path, lines=True)
    frame = change(frame)
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_json(path, orient="records", lines=True)


def test_a_user_dataset_loads_with_its_classes_in_order(runtime, tiny_sweep, files, registry):
    cfg = load_config(tiny_sweep, with_tickets(files))
    data = bench_data.load("tickets", cfg.data_for("tickets"), cfg.seed, log=lambda *_: None)
    assert data.class_names == ("billing", "tech", "sales") and data.num_classes == 3
    assert len(data.train) + len(data.val) == 300 and len(data.test) == 90
    assert set(np.unique(data.val.labels)) == {0, 1, 2}  # stratified
    assert np.bincount(data.test.labels).tolist() == [30, 30, 30]
    assert data.stats["shared_texts"] == 0


def test_test_fraction_carves_a_stratified_test_split_from_train(runtime, tiny_sweep, files, registry):
    cfg = load_config(tiny_sweep, with_tickets(files, test=None, test_fraction=0.2))
    data = bench_data.load("tickets", cfg.data_for("tickets"), cfg.seed, log=lambda *_: None)
    assert np.bincount(data.test.labels).tolist() == [20, 20, 20] and len(data.train) + len(data.val) == 240


def test_texts_in_both_train_and_test_are_counted_and_warned_of(runtime, tiny_sweep, files, registry, capsys):
    train = pd.read_csv(files / "train.csv")
    rewrite(files / "test.jsonl", lambda f: f.assign(body=[*train["body"][:4], *f["body"][4:]]))
    cfg = load_config(tiny_sweep, with_tickets(files))
    data = bench_data.load("tickets", cfg.data_for("tickets"), cfg.seed, log=print)
    assert data.stats["shared_texts"] == 4
    assert "warning: 4 distinct text(s) are in both train and test" in capsys.readouterr().out


@pytest.mark.parametrize("settings, change, expected", [
    ({"train": "nowhere/train.csv"}, None, "user_datasets.tickets.train: nowhere/train.csv: file not found"),
    ({"train": "train.txt"}, None, "unknown format '.txt'; allowed: .parquet, .csv, .json, .jsonl"),
    ({"labels": ["billing"]}, None, "user_datasets.tickets.labels: List should have at least 2 items"),
    ({"labels": ["billing", "tech", "billing"]}, None, "label(s) 'billing' listed more than once"),
    ({"test": None}, None, "set one of test (a file) and test_fraction (a share of train)"),
    ({"text_column": "subject"}, None, "train.csv: no column 'subject'; its columns: ['body', 'queue', 'priority']"),
    ({"text_column": "priority"}, None, "train.csv: column 'priority' holds int, not text, in 300 row(s), rows 0, 1"),
    ({}, ("train.csv", lambda f: f.assign(body=f["body"].mask(f.index.isin([3, 17])))),
     "train.csv: column 'body' is empty in 2 row(s), rows 3, 17 (counted from 0, header excluded)"),
    ({}, ("train.csv", lambda f: f.assign(queue=f["queue"].where(f.index != 5, "legal"))),
     "train.csv: column 'queue' holds value(s) not in labels: 'legal'; labels: ['billing', 'tech', 'sales']"),
    ({}, ("train.csv", lambda f: f.assign(queue=f["queue"].replace("sales", "tech"))),
     "train.csv: no train row of class(es) 'sales'; every class of labels needs train rows"),
    ({}, ("test.jsonl", lambda f: f.assign(queue=f["queue"].replace("sales", "tech"))),
     "test.jsonl: no test row of class(es) 'sales'"),
    ({"label_column": "priority", "labels": [1, 2, 3]},
     ("test.jsonl", lambda f: f.assign(priority=f["priority"].astype(str))),
     "test.jsonl: column 'priority' is string, but integer in"),
    ({"label_column": "priority", "labels": ["1", "2", "3"]}, None,
     "holds value(s) not in labels: 1, 2, 3 (the file holds them as int, labels lists str: write them as the file "
     "does)"),
])
def test_a_bad_dataset_is_refused_in_one_line_naming_the_file(runtime, tiny_sweep, files, registry, capsys, settings,
                                                              change, expected):
    if change:
        rewrite(files / change[0], change[1])
    line = refusal(["sweep", tiny_sweep, *with_tickets(files, **settings)], capsys)
    assert expected in line


def test_a_class_too_small_for_the_validation_split_is_refused(runtime, tiny_sweep, files, registry, capsys):
    rewrite(files / "train.csv", lambda f: f[(f["queue"] != "sales") | (f.index < 12)])  # 4 sales tickets of 204
    line = refusal(["sweep", tiny_sweep, *with_tickets(files), "data.tickets.val_fraction=0.1"], capsys)
    assert "data.tickets: class(es) 'sales' (4 rows) too small for a validation share of 0.1" in line


def test_a_user_dataset_may_not_take_a_built_in_name(runtime, tiny_sweep, files, registry, capsys):
    args = [a.replace("{tickets:", "{imdb:") for a in with_tickets(files)[:1]]
    assert "'imdb' is a built-in dataset's name" in refusal(["sweep", tiny_sweep, *args], capsys)


KLOGITS = '''
import torch
from torch import nn


class MeanK(nn.Module):
    """Mean of the real tokens' embeddings, one logit for two classes, num_classes for more."""

    def __init__(self, vocab_size, num_classes, embed_dim=8):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.out = nn.Linear(embed_dim, 1 if num_classes == 2 else num_classes)

    def forward(self, ids, lengths):
        mask = (torch.arange(ids.shape[1]) < lengths.unsqueeze(1)).unsqueeze(2)
        return self.out((self.embedding(ids) * mask).sum(1) / lengths.unsqueeze(1)).squeeze(-1)
'''

SERVE = """
import json, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
print(json.dumps(model.predict(["invoice refund charge please", "crash error login help", "quote discount demo"])
                 .to_dict("list")))
"""


@pytest.mark.slow
def test_a_user_dataset_of_three_classes_is_swept_with_a_user_network_replicated_reported_and_served(
        runtime, tiny_sweep, files, registry, tmp_path):
    package = tmp_path / "outside" / "knets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(KLOGITS)
    args = [*with_tickets(files), f"user_architectures={{mine: {{class: knets.nets:MeanK, code: {package}}}}}",
            "architectures=[averaging, mine]", "study.replicates=2", "study.target_val_acc={}", "probes=true"]
    try:
        assert main(["sweep", str(tiny_sweep), *args, "--reports", str(tmp_path / "reports")]) == 0
    finally:
        sys.path[:] = [p for p in sys.path if p != str(package.parent)]
        for name in [m for m in sys.modules if m.split(".")[0] == "knets"]:
            del sys.modules[name]
    report = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert "| `mine` |" in report and "| `averaging` |" in report
    assert "tickets: 3 classes (billing, tech, sales)" in report and "F1 and AUROC macro" in report
    assert "Not run on tickets: the probes' texts are negative and positive sentiment" in report

    uri = tracking_uri(load_config(tiny_sweep, args))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.architecture = 'mine'")
    study = next(r for r in runs if "best_trial_run_id" in r.data.tags)
    replicates = [r for r in runs if "replicate" in r.data.tags]
    assert len(replicates) == 2 and all(r.data.metrics["test/acc"] > 1 / 3 for r in replicates)
    predictions = pd.read_csv(client.download_artifacts(replicates[0].info.run_id, "test_predictions.csv",
                                                        str(tmp_path)))
    probabilities = predictions[[f"probability/{c}" for c in CLASSES]]
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    assert (probabilities.to_numpy().argmax(axis=1) == predictions["predicted"]).all()
    assert replicates[0].data.metrics["test/acc"] == pytest.approx((predictions["predicted"] ==
                                                                    predictions["label"]).mean())

    # A fresh process, the package's folder gone: the model carries its own copy, and answers with class names.
    package.rename(tmp_path / "moved")
    served = subprocess.run([sys.executable, "-c", SERVE, uri, f"runs:/{study.info.run_id}/model"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert served.returncode == 0, served.stderr
    answer = json.loads(served.stdout.strip().splitlines()[-1])
    assert answer["label"] == ["billing", "tech", "sales"] and all(1 / 3 < p <= 1 for p in answer["probability"])
