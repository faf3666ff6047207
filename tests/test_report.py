"""The report, built from a small MLflow store with known runs and metrics, against a golden file."""

import datetime as dt
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.report import GENERATED_PREFIX, Row, Study, findings, pareto, write_report

GOLDEN = Path(__file__).parent / "golden" / "report.md"
TAGS = {"sweep": "golden", "git_commit": "0123456789abcdef", "config": "sweeps/golden.yaml",
        "config_sha256": "abcdef012345", "cpu": "Test CPU", "cores": "2", "gpu": "none", "device": "cpu",
        "python": "3.11.7", "torch": "2.13.0", "lightning": "2.6.6", "optuna": "5.0.0",
        "optuna_integration": "5.0.0", "mlflow": "3.17.2"}
DATA = {"data/rows_train": 900, "data/rows_val": 100, "data/rows_test": 500, "data/dropped_test_rows": 0,
        "data/vocab_size": 1000, "data/train_tokens_mean": 50.5, "data/train_tokens_median": 40,
        "data/train_tokens_p95": 120, "data/train_tokens_max": 200}


def make_store(uri):
    """imdb/averaging and imdb/lstm finished; lstm has a failed trial; sentiment140/gru has no trial."""
    client = MlflowClient(uri)
    exp = client.create_experiment("golden")
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
                MLFLOW_PARENT_RUN_ID: parent, **({"error": error} if error else {})}
        metrics = [(k, v, step) for step, acc in enumerate(accs) for k, v in (
            ("val/acc", acc), ("val/acc_best", max(accs[: step + 1])),
            ("time/elapsed_s", seconds * (step + 1) / len(accs)),
            ("train/epoch_time_s", seconds / len(accs) * 0.9), ("train/tokens_per_s", 1000.0 * (number + 1)),
            ("cost/train_flops_per_token", 2e5 * (number + 1)), ("cost/train_flops", 1e9 * (step + 1) * (number + 1)))]
        return run(tags, metrics, [("lr", 0.001 * (number + 1)), ("n_params", 1234 * (number + 1))],
                   start=number * 20, seconds=seconds)

    def study(dataset, arch, metrics, best_params):
        tags = {**TAGS, "dataset": dataset, "architecture": arch, **{k: str(v) for k, v in best_params}}
        return run(tags, [(k, v, 0) for k, v in metrics], list(DATA.items()))

    avg = study("imdb", "averaging", [("val/acc_best", 0.85), ("test/acc", 0.84), ("test/f1", 0.83),
                                      ("test/auroc", 0.9), ("test/ms_per_1k_texts", 12.5), ("importance/lr", 0.7),
                                      ("importance/embed_dim", 0.3)], [("best/lr", 0.002), ("best/embed_dim", 32)])
    trial(avg, "averaging", 0, "complete", [0.8, 0.82], 4.0)
    best = trial(avg, "averaging", 1, "complete", [0.83, 0.85], 6.0)
    trial(avg, "averaging", 2, "pruned", [0.6], 2.0)
    client.set_tag(avg, "best_trial_run_id", best)
    lstm = study("imdb", "lstm", [("val/acc_best", 0.86), ("test/acc", 0.845), ("test/f1", 0.84), ("test/auroc", 0.92),
                                  ("test/ms_per_1k_texts", 80.0)], [("best/lr", 0.001), ("best/hidden_size", 64)])
    best = trial(lstm, "lstm", 0, "complete", [0.81, 0.86], 40.0)
    trial(lstm, "lstm", 1, "failed", [], 1.0, error="FloatingPointError: training loss is nan at epoch 0")
    client.set_tag(lstm, "best_trial_run_id", best)
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
    ids = make_store(uri)
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

    # Reproducible: the same store gives the same figures, byte for byte.
    write_report("golden", uri, out, log=lambda *_: None)
    assert all((out / "golden" / n).read_bytes() == data for n, data in figures.items())


def test_pareto_frontier():
    assert pareto([(1, 0.5), (2, 0.4), (3, 0.7), (4, 0.6), (5, 0.9)]) == [(1, 0.5), (3, 0.7), (5, 0.9)]


def test_findings_claim_a_gap_only_beyond_the_test_set_s_interval():
    def row(arch, acc):
        study = Study("imdb", arch, "run", {}, {"data/rows_test": "2000"}, {})
        return Row(study, None, {"acc": acc}, "–", None, None, None, None, None, 0.0)

    claim = findings({"imdb": [row("gru", 0.900), row("lstm", 0.895), row("bag_concat", 0.800)]})[0]
    assert "cannot tell `lstm` apart" in claim and "`bag_concat` score lower by more than that interval" in claim
