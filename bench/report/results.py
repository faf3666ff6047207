"""results.json beside each report: the figures of its tables as plain data (every study's accuracies and costs,
each test split's means, intervals, seeds, paired tests and verdicts, the time to target), from the same collected
results as the markdown, so that users can build on the numbers."""

from __future__ import annotations

import json

from bench.report.collect import Study
from bench.report.contents import Collected
from bench.report.convergence import convergence, stop_counts
from bench.report.leaderboard import Row
from bench.report.significance import Comparison, SplitComparison
from bench.report.targets import TargetRow


def results_json(sweep: str, report: Collected) -> str:
    """The document, with sorted keys: the same store gives the same text."""
    document = {
        "sweep": sweep,
        "mlflow_experiment_id": report.experiment_id,
        "studies": [study_entry(row) for rows in report.rows_by_dataset.values() for row in rows],
        "test_splits": [split_entry(split) for split in report.splits],
        "time_to_target": [target_entry(dataset, row) for dataset, rows in report.targets.items() for row in rows],
        "convergence": [convergence_entry(study) for study in report.studies if study.replicates],
    }
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def study_entry(row: Row) -> dict:
    """A leaderboard row: the study's best trial, tested once, and its costs."""
    study, best = row.study, row.study.best
    return {
        "dataset": study.dataset,
        "architecture": study.arch,
        "study_run_id": study.run_id,
        "best_trial_run_id": best.run_id if best else None,
        "n_params": int(row.n_params) if row.n_params.isdigit() else None,
        "val_acc": row.val_acc,
        "test_acc": row.test["acc"],
        "test_acc_interval_rows": list(row.test_interval) if row.test_interval else None,
        "test_f1": row.test["f1"],
        "test_auroc": row.test["auroc"],
        "heldout_acc": row.test["heldout"],
        "best_trial_train_seconds": row.train_seconds,
        "seconds_per_epoch": row.epoch_seconds,
        "train_tokens_per_second": row.tokens_per_s,
        "train_flops_per_token": row.flops_per_token,
        "inference_ms_per_1k_texts": row.latency,
        "study_trial_seconds": row.total_seconds,
        "trials": {state: study.count(state) for state in ("complete", "pruned", "failed")},
    }


def split_entry(split: SplitComparison) -> dict:
    return {"dataset": split.dataset, "split": split.split, "rows": split.rows, "best": split.best.scores.arch,
            "architectures": [comparison_entry(c) for c in split.comparisons]}


def comparison_entry(comparison: Comparison) -> dict:
    """An architecture's mean over seeds on the split, its intervals, and how it stands against the best."""
    scores, prob = comparison.scores, comparison.prob_best_above
    return {
        "architecture": scores.arch,
        "seed_accuracies": scores.accuracies,
        "mean_acc": scores.mean,
        "interval_over_seeds": list(scores.seed_interval) if scores.seed_interval else None,
        "interval_from_rows": list(scores.rows_interval),
        "behind_best": comparison.difference,
        "paired_p_holm": comparison.p_holm,
        "p_best_above": ({"estimate": prob[0], "low": prob[1], "high": prob[2]} if prob else None),
        "verdict": comparison.verdict,
    }


def convergence_entry(study: Study) -> dict:
    """Why the study's replicates stopped, and whether it converged (report: Convergence)."""
    return {"dataset": study.dataset, "architecture": study.arch, "replicates": len(study.replicates),
            "stopped_by": stop_counts(study), "study": convergence(study)}


def target_entry(dataset: str, row: TargetRow) -> dict:
    return {"dataset": dataset, "architecture": row.arch, "target_val_acc": row.target,
            "seconds_per_seed": row.seconds, "seeds_reached": row.reached, "median_seconds": row.median}
