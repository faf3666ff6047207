"""The report, built from a small MLflow store with known runs and metrics, against a golden file."""

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.report import write_report
from bench.report.figures import pareto
from bench.report.findings import split_finding
from bench.report.markdown import GENERATED_PREFIX
from bench.report.significance import Scores, SplitComparison, compare

GOLDEN = Path(__file__).parent / "golden" / "report.md"
TAGS = {"sweep": "golden", "git_commit": "0123456789abcdef", "config": "sweeps/golden.yaml",
        "config_sha256": "abcdef012345", "cpu": "Test CPU", "cores": "2", "gpu": "none", "device": "cpu",
        "python": "3.11.7", "torch": "2.13.0", "lightning": "2.6.6", "optuna": "5.0.0",
        "optuna_integration": "5.0.0", "mlflow": "3.17.2", "host": "box", "worker": "box:123",
        "precision_setting": "auto"}
PRECISION = {"averaging": "32-true", "lstm": "bf16-mixed"}  # as `auto` picks them on a CPU with AMX
DATA = {"data/rows_train": 900, "data/rows_val": 100, "data/rows_test": 500, "data/dropped_test_rows": 0,
        "data/vocab_size": 1000, "data/train_tokens_mean": 50.5, "data/train_tokens_median": 40,
        "data/train_tokens_p95": 120, "data/train_tokens_max": 200}


def predictions(rule, rows=500) -> str:
    """A test_predictions.csv whose row i is predicted right exactly when rule(i) holds."""
    labels = np.arange(rows) % 2
    right = np.array([rule(i) for i in range(rows)])
    probability = np.where(right == labels.astype(bool), 0.9, 0.1)
    return pd.DataFrame({"row": np.arange(rows), "label": labels, "probability": probability}).to_csv(index=False)


def make_store(uri, artifacts):
    """imdb/averaging and imdb/lstm finished, with three replicates each; lstm has a failed trial; sentiment140/gru
    has no trial."""
    client = MlflowClient(uri)
    exp = client.create_experiment("golden", artifact_location=artifacts.as_uri())
    ids = []

    def run(tags, metrics=(), params=(), start=0, seconds=10.0):
        r = client.create_run(exp, start_time=1_700_000_000_000 + start * 1000, tags=tags)
        client.log_batch(r.info.run_id, metrics=[Metric(k, v, 0, step) for k, v, step in metrics],
                         params=[Param(k, str(v)) for k, v in params])
        client.set_terminated(r.info.run_id, "FINISHED", end_time=1_700_000_000_000 + int((start + seconds) * 1000))
        ids.append(r.info.run_id)
        return r.info.run_id

    def trial(parent, arch, number, state, accs, seconds, dataset="imdb", error=None):
        tags = {**TAGS, "dataset": dataset, "architecture": arch, "trial": str(number), "state": state,
                "precision": PRECISION[arch], MLFLOW_PARENT_RUN_ID: parent, **({"error": error} if error else {})}
        metrics = [(k, v, step) for step, acc in enumerate(accs) for k, v in (
            ("val/acc", acc), ("val/acc_best", max(accs[: step + 1])),
            ("time/elapsed_s", seconds * (step + 1) / len(accs)),
            ("train/epoch_time_s", seconds / len(accs) * 0.9), ("train/tokens_per_s", 1000.0 * (number + 1)),
            ("cost/train_flops_per_token", 2e5 * (number + 1)), ("cost/train_flops", 1e9 * (step + 1) * (number + 1)))]
        return run(tags, metrics, [("lr", 0.001 * (number + 1)), ("n_params", 1234 * (number + 1))],
                   start=number * 20, seconds=seconds)

    def study(dataset, arch, metrics, best_params):
        tags = {**TAGS, "dataset": dataset, "architecture": arch, **{k: str(v) for k, v in best_params},
                "best_trial": "1", "target_val_acc": "0.84"}
        return run(tags, [(k, v, 0) for k, v in metrics], list(DATA.items()))

    def replicates(parent, arch, right, curves):
        """Replicate r predicts row i right when right(i, r) holds, and follows validation curve curves[r]."""
        for r, accs in enumerate(curves):
            tags = {**TAGS, "dataset": "imdb", "architecture": arch, "replicate": str(r), "replicate_of_trial": "1",
                    "precision": PRECISION[arch], MLFLOW_PARENT_RUN_ID: parent}
            csv = predictions(lambda i, r=r: right(i, r))
            table = pd.read_csv(io.StringIO(csv))
            metrics = [("test/acc", float(((table.probability > 0.5) == table.label).mean()), 0)]
            metrics += [(k, v, step) for step, acc in enumerate(accs)
                        for k, v in (("val/acc", acc), ("time/elapsed_s", 5.0 * (step + 1) * (r + 1)))]
            client.log_text(run(tags, metrics, start=100 + r), csv, "test_predictions.csv")

    avg = study("imdb", "averaging", [("val/acc_best", 0.85), ("test/acc", 0.84), ("test/f1", 0.83),
                                      ("test/auroc", 0.9), ("test/ms_per_1k_texts", 12.5), ("importance/lr", 0.7),
                                      ("importance/embed_dim", 0.3)], [("best/lr", 0.002), ("best/embed_dim", 32)])
    trial(avg, "averaging", 0, "complete", [0.8, 0.82], 4.0)
    best = trial(avg, "averaging", 1, "complete", [0.83, 0.85], 6.0)
    trial(avg, "averaging", 2, "pruned", [0.6], 2.0)
    client.set_tag(avg, "best_trial_run_id", best)
    # Averaging: 86% of rows right with every seed; LSTM: 80%, on other rows. The test rows separate them, and every
    # averaging seed scores above every LSTM seed.
    replicates(avg, "averaging", lambda i, r: (i * 7 + r) % 100 < 86, [[0.8, 0.85], [0.83, 0.86], [0.84, 0.84]])
    lstm = study("imdb", "lstm", [("val/acc_best", 0.86), ("test/acc", 0.845), ("test/f1", 0.84), ("test/auroc", 0.92),
                                  ("test/ms_per_1k_texts", 80.0)], [("best/lr", 0.001), ("best/hidden_size", 64)])
    best = trial(lstm, "lstm", 0, "complete", [0.81, 0.86], 40.0)
    trial(lstm, "lstm", 1, "failed", [], 1.0, error="FloatingPointError: training loss is nan at epoch 0")
    client.set_tag(lstm, "best_trial_run_id", best)
    replicates(lstm, "lstm", lambda i, r: (i * 11 + 3 * r) % 100 < 80, [[0.81, 0.83], [0.8, 0.82], [0.85, 0.86]])
    study("sentiment140", "gru", [], [])
    return ids


def normalised(text, ids):
    lines = [line for line in text.splitlines() if not line.startswith(GENERATED_PREFIX)]
    text = "\n".join(lines)
    for i, run_id in enumerate(ids):
        text = text.replace(run_id[:8], f"<run{i}>")
    return text


def test_report_matches_golden_and_figures_are_real(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = make_store(uri, tmp_path / "artifacts")
    out = tmp_path / "reports"
    readme = write_report("golden", uri, out, now=dt.datetime(2026, 1, 1), log=lambda *_: None)
    text = readme.read_text()
    if not GOLDEN.exists():  # first run: write the golden file to review and commit
        GOLDEN.write_text(normalised(text, ids) + "\n")
    assert normalised(text, ids) + "\n" == GOLDEN.read_text()

    # The failed trial and the empty study are named, not skipped.
    assert "`imdb/lstm` trial 1 failed" in text and "training loss is nan" in text
    assert "`sentiment140/gru`: no finished trial yet." in text

    names = ("accuracy_vs_time.png", "accuracy_vs_flops.png", "learning_curves.png", "tuning_budget.png")
    figures = {name: (out / "golden" / name).read_bytes() for name in names}
    for name, data in figures.items():
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, name
        assert f"]({name})" in text
    assert "[golden/README.md](golden/README.md)" in (out / "README.md").read_text()

    # results.json holds the tables' figures: each split's means as the markdown shows them.
    results = json.loads((out / "golden" / "results.json").read_text())
    for split in results["test_splits"]:
        for entry in split["architectures"]:
            row = f"| `{entry['architecture']}` | {len(entry['seed_accuracies'])} | {100 * entry['mean_acc']:.2f} |"
            assert row in text, row
    assert {(s["dataset"], s["architecture"]) for s in results["studies"]} >= {("imdb", "lstm")}

    # Reproducible: the same store gives the same figures and results.json, byte for byte.
    figures["results.json"] = (out / "golden" / "results.json").read_bytes()
    write_report("golden", uri, out, log=lambda *_: None)
    assert all((out / "golden" / n).read_bytes() == data for n, data in figures.items())


def test_pareto_frontier():
    assert pareto([(1, 0.5), (2, 0.4), (3, 0.7), (4, 0.6), (5, 0.9)]) == [(1, 0.5), (3, 0.7), (5, 0.9)]


def seeds(*accuracies, rows=1000, shift=0):
    """Correctness matrix whose seed k gets accuracies[k] x rows consecutive rows right, from row `shift` on."""
    return np.array([(np.arange(rows) - shift) % rows < round(a * rows) for a in accuracies])


def test_findings_claim_a_win_only_where_rows_and_seeds_both_support_it():
    split = SplitComparison("imdb", "test", 1000, compare([
        Scores("gru", seeds(0.90, 0.91, 0.92)),
        Scores("lstm", seeds(0.895, 0.90, 0.905, shift=50)),  # right on other rows: within the rows' noise
        Scores("bilstm", seeds(0.80, 0.95, 0.85)),  # far below on the rows, but one seed above gru's
        Scores("bag_concat", seeds(0.80, 0.81, 0.82)),
        Scores("averaging", seeds(0.70)),
    ]))
    verdicts = {c.scores.arch: c.verdict for c in split.comparisons}
    assert verdicts == {"gru": "best", "lstm": "tied: test rows", "bilstm": "tied: seeds", "bag_concat": "below",
                        "averaging": "tied: one seed"}
    claim = split_finding(split)
    assert claim.startswith("- IMDB test (1,000 rows): the highest mean accuracy over 3 seed(s) is `gru`'s, 91.00%")
    assert "the test rows cannot tell `lstm` (p = " in claim
    assert "the spread over seeds cannot tell `bilstm` (P = 0.67 [" in claim
    assert "`averaging` differ from it on the rows, but with one seed each" in claim
    assert "`gru` beats `bag_concat` (paired p < 0.05" in claim and "beats `lstm`" not in claim
