"""A real tiny sweep through the real loaders, Optuna, MLflow and the kept model, then a resume."""

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bench.cli import main
from bench.config import load_config
from bench.precision import training_precision
from bench.runtime import storage_url, tracking_uri

ARCHS = ["averaging", "bag_concat", "gru", "bilstm"]  # gru: the C++ loops, served through MLflow below
OVERRIDES = ["datasets=[imdb, sentiment140]", f"architectures=[{', '.join(ARCHS)}]"]


@pytest.mark.slow
def test_sweep_end_to_end_and_resume(runtime, tiny_sweep, tmp_path, capsys):
    reports = ["--reports", str(tmp_path / "reports")]
    assert main(["sweep", str(tiny_sweep), *OVERRIDES, *reports]) == 0
    cfg = load_config(tiny_sweep, OVERRIDES)
    output = capsys.readouterr().out
    assert "[imdb/gru] trial 2/2" in output and "budget left" in output
    report = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert all(f"| `{arch}` |" in report for arch in ARCHS)

    # Optuna: one study per (dataset, architecture), each with its budget of finished trials and a test score.
    storage = storage_url(cfg)
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(studies) == {f"tiny/{d}/{a}" for d in ("imdb", "sentiment140") for a in ARCHS}
    for name in studies:
        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.trials) == 2
        assert study.user_attrs["test_metrics"]["test/acc"] > 0.6, name

    # MLflow: a parent run per study, a child run per trial, with their tags and per-epoch metrics.
    client = MlflowClient(tracking_uri(cfg))
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    children = [r for r in runs if MLFLOW_PARENT_RUN_ID in r.data.tags]
    assert len(parents) == 8 and len(children) == 16
    child = children[0]
    for tag in ("dataset", "architecture", "sweep", "trial", "git_commit", "device", "torch", "state"):
        assert tag in child.data.tags, tag
    assert child.data.tags["state"] in ("complete", "pruned")
    assert {"lr", "n_params"} <= set(child.data.params)
    history = client.get_metric_history(child.info.run_id, "val/acc")
    assert len(history) >= 1 and "train/tokens_per_s" in child.data.metrics
    assert child.data.metrics["cost/train_flops"] > child.data.metrics["cost/train_flops_per_token"] > 0
    parent = next(r for r in parents if r.data.tags["architecture"] == "gru" and r.data.tags["dataset"] == "imdb")
    assert "test/acc" in parent.data.metrics and "best/lr" in parent.data.tags
    assert parent.data.tags["target_val_acc"] == "0.7"
    # Two validations per epoch on IMDB: four learning-curve points over two epochs, at distinct steps.
    curve = client.get_metric_history(parent.data.tags["best_trial_run_id"], "val/acc")
    assert len({m.step for m in curve}) == len(curve) == 4
    # Sentiment140's held-out split is evaluated beside its test split, with its predictions kept.
    tweets = next(r for r in parents if r.data.tags["dataset"] == "sentiment140")
    assert {"test/acc", "heldout/acc"} <= set(tweets.data.metrics)
    assert {a.path for a in client.list_artifacts(tweets.info.run_id)} >= {"test_predictions.csv",
                                                                            "heldout_predictions.csv"}

    # The best model predicts from raw text.
    model = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model")
    predictions = model.predict(pd.DataFrame({"text": ["great superb loved it", "awful boring mess <br /> dull"]}))
    assert predictions["label"].tolist() == ["positive", "negative"]
    assert model.predict(["great superb loved it", "awful boring mess"])["label"].tolist() == ["positive", "negative"]
    with pytest.raises(Exception, match=r"row\(s\) \[1\]: text is missing"):
        model.predict(pd.DataFrame({"text": ["great", None]}))
    assert predictions["probability"].between(0.5, 1).all()  # the predicted class's

    # Running the same sweep again resumes: no trial is repeated, no run is added.
    assert main(["sweep", str(tiny_sweep), *OVERRIDES, *reports]) == 0
    assert "budget already spent" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == len(runs)
    # A larger budget adds only the missing trials.
    more = ["study.n_trials=3", "architectures=[averaging]"]
    assert main(["sweep", str(tiny_sweep), *OVERRIDES, *more, *reports]) == 0
    study = optuna.load_study(study_name="tiny/imdb/averaging", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2]


def test_bad_config_exits_with_a_clear_error(runtime, tiny_sweep, capsys):
    assert main(["sweep", str(tiny_sweep), "study.max_epochs=0"]) == 2
    assert "study.max_epochs" in capsys.readouterr().err


@pytest.mark.slow
def test_replicates_are_tested_kept_and_resumed(runtime, tiny_sweep, tmp_path):
    def replicate_runs():
        client = MlflowClient(tracking_uri(load_config(tiny_sweep)))
        runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.replicate != ''")
        return client, {r.data.tags["replicate"]: r for r in runs}

    reports = ["--reports", str(tmp_path / "reports")]
    assert main(["sweep", str(tiny_sweep), "study.replicates=2", *reports]) == 0
    client, first = replicate_runs()
    assert set(first) == {"0", "1"} and all(r.info.status == "FINISHED" for r in first.values())
    predictions = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=first["0"].info.run_id, artifact_path="test_predictions.csv", tracking_uri=client.tracking_uri))
    assert len(predictions) == 120 and predictions["probability"].between(0, 1).all()
    accuracy = ((predictions["probability"] > 0.5) == predictions["label"]).mean()
    assert first["0"].data.metrics["test/acc"] == pytest.approx(accuracy)
    report = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert "### IMDB test (120 rows)" in report and "| `averaging` | 2 |" in report and "| 2/0/0 |" in report
    assert "| IMDB | 70.00 | `averaging` |" in report  # time to the target validation accuracy, over the seeds

    # Each replicate trains its trial's configuration: every logged parameter, n_params included, is the trial's.
    study_run = client.get_run(first["0"].data.tags[MLFLOW_PARENT_RUN_ID])
    trial_params = client.get_run(study_run.data.tags["best_trial_run_id"]).data.params
    assert trial_params["batch_size"] == "32" and trial_params["embed_dim"] == "8"  # the sweep's fixed values
    for replicate in first.values():
        assert replicate.data.params == trial_params
    precision = training_precision(load_config(tiny_sweep), "averaging")  # the run is tagged with it
    tested = client.get_run(study_run.data.tags["best_trial_run_id"])
    assert {r.data.tags["precision"] for r in [*first.values(), tested]} == {precision}
    assert {k: v for k, v in study_run.data.tags.items() if k.startswith("best/")} == {
        f"best/{k}": v for k, v in trial_params.items() if k != "n_params"}

    # A larger count adds only the missing replicate: finished ones are kept, not rerun.
    assert main(["sweep", str(tiny_sweep), "study.replicates=3", *reports]) == 0
    _, second = replicate_runs()
    assert set(second) == {"0", "1", "2"}
    assert all(second[r].info.run_id == first[r].info.run_id for r in first)


@pytest.mark.slow
def test_ablations_retrain_the_replicates_seeds_with_one_change_are_reported_and_resumed(runtime, tiny_sweep, tmp_path):
    def ablation_runs():
        client = MlflowClient(tracking_uri(load_config(tiny_sweep)))
        runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.ablation != ''")
        return {r.data.tags["ablation_seed"]: r for r in runs}

    args = ["sweep", str(tiny_sweep), "study.replicates=2", "ablations={imdb/averaging: {dropout: [0.5]}}",
            "--reports", str(tmp_path / "reports")]
    assert main(args) == 0
    first = ablation_runs()
    assert set(first) == {"0", "1"} and all(r.data.params["dropout"] == "0.5" for r in first.values())
    assert all(r.data.tags["state"] == "complete" and "test/acc" in r.data.metrics for r in first.values())
    assert {r.data.tags["stopped_by"] for r in first.values()} == {"epoch cap"}  # 2 epochs, patience 2
    report = (tmp_path / "reports" / "tiny" / "README.md").read_text()
    assert "## Ablations" in report and "| IMDB | `averaging` | test | `dropout` | 0 | 0.5 | 2 |" in report
    assert "### IMDB test (120 rows)" in report and "| `averaging` | 2 |" in report  # not counted as replicates

    assert main(args) == 0  # a resume trains none again
    ids = {r: run.info.run_id for r, run in first.items()}
    assert {r: run.info.run_id for r, run in ablation_runs().items()} == ids
