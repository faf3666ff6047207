"""The convergence section: why replicates stopped, each study converged or capped, the ranking against training
budget and where the curves cross, and the table against another sweep of the same store."""

import datetime as dt
import json

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.report import write_report
from bench.report.collect import Study, Trial
from bench.report.convergence import Curve, budget_findings, crossings, ranking, search_gain

TAGS = {"git_commit": "0123456789abcdef", "cpu": "Test CPU", "cores": "2", "gpu": "none", "device": "cpu"}


def make_sweep(client, name, replicates_by_arch, test_acc):
    """A sweep of IMDB studies: per architecture, replicates given as (stopped_by, [(seconds, val acc), ...]), each
    tested at test_acc[arch] + r / 1000."""
    exp = client.create_experiment(name)
    for arch, replicates in replicates_by_arch.items():
        parent = client.create_run(exp, tags={**TAGS, "sweep": name, "dataset": "imdb", "architecture": arch,
                                              "best_trial": "0"}).info.run_id
        for r, (stopped_by, curve) in enumerate(replicates):
            run = client.create_run(exp, tags={**TAGS, "dataset": "imdb", "architecture": arch, "replicate": str(r),
                                               "replicate_of_trial": "0", "stopped_by": stopped_by,
                                               MLFLOW_PARENT_RUN_ID: parent}).info.run_id
            metrics = [Metric(k, v, 0, step) for step, (seconds, acc) in enumerate(curve)
                       for k, v in (("val/acc", acc), ("time/elapsed_s", seconds))]
            client.log_batch(run, metrics=[*metrics, Metric("test/acc", test_acc[arch] + r / 1000, 0, 0)])
            client.set_terminated(run)


def test_a_curve_holds_a_stopped_replicates_best_and_reads_the_last_validation_by_a_budget():
    curve = Curve("gru", [10, 20, 30], [0.8, 0.85, 0.86], [0, 0, 0])
    assert curve.at(5) is None and curve.at(25) == 0.85 and curve.at(1000) == 0.86


def test_crossings_and_the_finding_name_who_overtakes_whom_and_when():
    fast = Curve("averaging", [5, 10, 20], [0.85, 0.86, 0.86], [0] * 3)
    slow = Curve("lstm", [20, 60, 100], [0.70, 0.85, 0.90], [0] * 3)
    assert crossings(slow, fast) == [100]
    assert [a for a, _ in ranking([fast, slow], 20)] == ["averaging", "lstm"]
    assert [a for a, _ in ranking([fast, slow], None)] == ["lstm", "averaging"]
    lines = budget_findings({"imdb": [fast, slow]})
    assert "at convergence the order of the mean validation accuracy is `lstm` > `averaging`" in lines[0]
    assert "at 20.0 s, once every architecture has validated, it was `averaging` > `lstm`" in lines[0]
    assert lines[1] == "  - `lstm` overtakes `averaging` at 100.0 s."


def test_the_report_marks_studies_converged_or_capped_and_sets_another_sweep_beside_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    converged = [("patience", [(5, 0.84), (10, 0.86), (15, 0.85)]), ("patience", [(6, 0.85), (12, 0.86)])]
    capped = [("patience", [(20, 0.7), (60, 0.88)]), ("epoch cap", [(20, 0.72), (60, 0.9)])]
    make_sweep(client, "reference", {"averaging": converged, "lstm": capped}, {"averaging": 0.86, "lstm": 0.89})
    make_sweep(client, "quick", {"averaging": converged[:1], "lstm": capped[:1]}, {"averaging": 0.85, "lstm": 0.80})
    readme = write_report("reference", uri, tmp_path / "reports", now=dt.datetime(2026, 1, 1), log=lambda *_: None,
                          against="quick")
    text = readme.read_text()
    assert "| IMDB | `averaging` | 2 | 2 | 0 | converged | – |" in text  # no trials in this store
    assert "| IMDB | `lstm` | 2 | 1 | 1 | capped | – |" in text
    assert "| IMDB | 30 | `averaging` 86.00 > `lstm` 71.00 |" in text  # lstm's first validations: 0.70, 0.72
    assert "| IMDB | at convergence | `lstm` 89.00 > `averaging` 86.00 |" in text
    assert "`lstm` overtakes `averaging` at 60.0 s." in text
    # lstm: 2nd in the quick sweep (80.00, one seed), 1st here (mean of 89.0 and 89.1).
    assert "| IMDB | test | `lstm` | 1 | 60.0 | 80.00 (–) | 2 | 2 | 60.0 | 89.05 (" in text
    assert (tmp_path / "reports" / "reference" / "budget_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "by `nox -s report -- reference --against quick`" in text
    results = json.loads((tmp_path / "reports" / "reference" / "results.json").read_text())
    assert {(c["architecture"], c["study"], c["stopped_by"]["epoch cap"]) for c in results["convergence"]} == {
        ("averaging", "converged", 0), ("lstm", "capped", 1)}


def test_the_search_gain_compares_the_first_half_of_the_trials_with_all():
    trials = [Trial(str(n), n, state, acc, 1.0, 1.0, {}, {}) for n, (state, acc) in enumerate(
        [("complete", 0.80), ("pruned", 0.70), ("failed", None), ("complete", 0.85), ("complete", 0.83)])]
    assert search_gain(Study("imdb", "gru", "s", {}, {}, {}, trials)) == "80.00 (2) / 85.00 (4)"
