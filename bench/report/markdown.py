"""The README.md of a sweep's report, assembled from what contents.collect_all() read and computed, and the index
of every report (reports/README.md)."""

from __future__ import annotations

from pathlib import Path

from bench.report.ablations import section as ablations_section
from bench.report.against import against_table
from bench.report.collect import Study
from bench.report.contents import Collected
from bench.report.convergence import section as convergence_section
from bench.report.findings import findings
from bench.report.format import dataset_title, num, short
from bench.report.leaderboard import leaderboard_table
from bench.report.probes import section as probes_section
from bench.report.published import section as published_section
from bench.report.significance import ALPHA, SPLIT_NOTES, significance_table
from bench.report.targets import time_to_target_table

GENERATED_PREFIX = "_Generated at "  # the one line that differs between two reports of the same store
LIBRARIES = ["python", "torch", "lightning", "optuna", "optuna_integration", "mlflow"]


def render_markdown(sweep: str, report: Collected, generated_line: str) -> str:
    """The report's README.md, from what collect_all() read and computed."""
    lines = [f"# Sweep `{sweep}`: accuracy versus time", "", generated_line, "", *_header(report.studies), "",
             "## Data", "", *_data_table(report.studies, report.datasets), "",
             "## Accuracy versus cost", "",
             "Every trial is a point: validation accuracy of its best epoch against the wall-clock time of its "
             "training (this machine's cost), and against its training FLOPs (a cost that does not depend on the "
             "machine: FLOPs per token counted by PyTorch's FlopCounterMode on a training batch, times the tokens "
             "trained on; matrix multiplications only, so averaging's embedding means are not counted). The black "
             "line is the Pareto frontier: no trial is both cheaper and more accurate.", "",
             "![accuracy versus training time](accuracy_vs_time.png)", "",
             "![accuracy versus training FLOPs](accuracy_vs_flops.png)", ""]
    for dataset in report.datasets:
        lines += [f"## Leaderboard: {dataset_title(dataset)}", "",
                  *leaderboard_table(report.rows_by_dataset[dataset], report.experiment_id), ""]
    lines += [
        "Columns: validation accuracy of the study's best trial; test metrics of that trial, evaluated once (and "
        "on the held-out split where the dataset has one); its parameter count, training time, median seconds per "
        "epoch, training tokens per second and training FLOPs per token (forward and backward); inference time "
        "per 1,000 test texts; the study's total trial time.",
        "", *_uncertainty_sections(report),
        "## Learning curves", "", "![learning curves](learning_curves.png)", "",
        "## Accuracy against tuning budget", "",
        "What a user pays is a tuning budget, not one trial. Each curve is the expected best validation accuracy "
        "after n of the study's finished trials (complete or pruned), with one standard deviation, by the unbiased "
        "without-replacement estimator of Dodge et al. 2019 and Tang et al. 2020; in seconds, n times the study's "
        "mean trial time. It assumes i.i.d. trials: TPE and pruning make later trials depend on earlier ones, so "
        "read it as indicative; `sweeps/iid.yaml` (random sampler, no pruner) meets the assumption.", "",
        "![accuracy against tuning budget](tuning_budget.png)", "",
        *convergence_section(report.studies, report.curves, _against_section(sweep, report)),
        *ablations_section(report.studies),
        *published_section(report.studies),
        "## Findings", "", *findings(report.datasets, report.splits, report.targets), "",
        *probes_section(report.probes, report.datasets, _probes_skipped(report.studies)),
        "## Best hyperparameters and their importance", "", *_architecture_details(report.studies), "",
    ]
    problems = _problems(report.studies)
    if problems:
        lines += ["## Missing or failed", "", *problems, ""]
    return "\n".join(lines)


def _against_section(sweep: str, report: Collected) -> list[str]:
    if report.against is None:
        return []
    other, other_studies = report.against
    return [f"## At the `{other}` sweep's budget and at this one's", "",
            f"The same architectures in the `{other}` sweep (its own search, budget and seeds, from the same store) "
            "and in this one: mean test accuracy over each study's seeds with its Student's t interval, the median "
            "training seconds of those seeds, and the rank by mean.", "",
            *against_table(sweep, report.studies, other, other_studies), ""]


def _probes_skipped(studies: list[Study]) -> dict[str, str]:
    """Dataset -> why the probes did not run on it, for the datasets bench probes.py skipped."""
    return {s.dataset: s.tags["probes"].removeprefix("skipped: ") for s in studies
            if s.tags.get("probes", "").startswith("skipped: ")}


def _precision_line(studies: list[Study], setting: str) -> str:
    """The precision each study trained in, and the config's setting that chose it (`auto`: bench/precision.py)."""
    used: dict[str, list[str]] = {}
    for s in studies:
        for precision in sorted({t.precision or "not recorded" for t in s.trials + s.replicates}):  # none: no runs
            used.setdefault(precision, []).append(f"{dataset_title(s.dataset)} {s.arch}")
    if len(used) == 1:
        return f"- Precision: `{setting}` in the config: {next(iter(used))} in every study"
    return f"- Precision: `{setting}` in the config: " + "; ".join(
        f"{precision} in {', '.join(names)}" for precision, names in sorted(used.items()))


def _header(studies: list[Study]) -> list[str]:
    tags = studies[0].tags if studies else {}
    trial_seconds = [t.run_seconds for s in studies for t in s.trials]
    workers = {t.worker for s in studies for t in s.trials + s.replicates if t.worker}
    hosts = {w.rsplit(":", 1)[0] for w in workers}
    return [
        f"- Config: `{tags.get('config', '?')}` (sha256 of the validated config `{tags.get('config_sha256', '?')}`); "
        f"git commit `{tags.get('git_commit', '?')[:12]}`",
        f"- Machine: {tags.get('cpu', '?')}, {tags.get('cores', '?')} cores, GPU: {tags.get('gpu', '?')}; "
        f"device used: {tags.get('device', '?')}",
        _precision_line(studies, tags.get("precision_setting", "?")),
        "- Libraries: " + ", ".join(f"{lib} {tags.get(lib, '?')}" for lib in LIBRARIES),
        f"- Studies: {len(studies)}; trials: {len(trial_seconds)}; time in trials: "
        f"{num(sum(trial_seconds) / 60)} min; worker processes: "
        + (f"{len(workers)}, on {len(hosts)} host(s)" if workers else "not recorded (runs older than the tag)"),
    ]


def _uncertainty_sections(report: Collected) -> list[str]:
    """Which architectures the data can tell apart, and the time each takes to reach a target."""
    if not report.splits:
        return []
    lines = ["## Which architectures the data can tell apart", "",
             "Each study's best configuration is retrained with other seeds (initialisation, data order and dropout; "
             "the same splits), each tested once; a study without replicates counts its best trial as one seed. On "
             "each test split:",
             "- **interval over seeds**: Student's t over the seeds' accuracies (scipy.stats); assumes they are "
             "normally distributed.",
             "- **interval from the rows**: Wilson's interval for the mean accuracy on that many rows; assumes the "
             "rows are independent draws from the population the split stands for.",
             "- **paired test**: the best architecture against each other one on the same rows, a sign-flip "
             "permutation test on each row's correctness averaged over seeds (scipy.stats.permutation_test, 999 "
             "resamples; exact McNemar with one seed each); assumes only that rows are independent. p-values are "
             "Holm-adjusted over the split's comparisons.",
             "- **P(best > it)**: the share of seed pairs in which the best's seed scores higher (ties half), with a "
             "95% percentile bootstrap interval over seeds (scipy.stats.bootstrap; Bouthillier et al. 2021); with 3 "
             "seeds the interval is coarse.",
             f"- **verdict**: *below* when the paired p < {ALPHA} and P's interval lies above 0.5; otherwise *tied*, "
             "with what ties them: the test rows (p too high) or the seeds (P's interval reaches 0.5).", ""]
    for split in report.splits:
        note = SPLIT_NOTES.get((split.dataset, split.split))
        lines += [f"### {split.title}", "", *([note, ""] if note else []),
                  *significance_table(split, report.studies), ""]
    table = time_to_target_table(report.targets)
    if table:
        lines += ["## Time to target", "",
                  "Seconds from the start of training (validations included) until the validation accuracy first "
                  "reaches the dataset's target (`study.target_val_acc`), for each seed of the best configuration; "
                  "the median over the seeds that reached it, and its ratio to the fastest architecture's. Validation "
                  "runs several times an epoch (`study.validations_per_epoch`), so the time is known to within one "
                  "validation interval.", "", *table, ""]
    return lines


def _data_table(studies: list[Study], datasets: list[str]) -> list[str]:
    lines = ["| dataset | train | val | test | test rows dropped | vocabulary | train tokens per text "
             "(mean / median / p95 / max) |", "|---|---|---|---|---|---|---|"]
    for dataset in datasets:
        p = next((s.params for s in studies if s.dataset == dataset and "data/rows_train" in s.params), {})
        tokens = " / ".join(p.get(f"data/train_tokens_{k}", "–") for k in ("mean", "median", "p95", "max"))
        lines.append(f"| {dataset_title(dataset)} | {p.get('data/rows_train', '–')} | "
                     f"{p.get('data/rows_val', '–')} | {p.get('data/rows_test', '–')} | "
                     f"{p.get('data/dropped_test_rows', '–')} | {p.get('data/vocab_size', '–')} | {tokens} |")
    notes = [note for dataset in datasets for note in _data_notes(dataset, studies)]
    return lines + (["", *notes] if notes else [])


def _data_notes(dataset: str, studies: list[Study]) -> list[str]:
    """A user's dataset's classes and the texts its test shares with train; the word vectors' coverage."""
    p = next((s.params for s in studies if s.dataset == dataset and "data/rows_train" in s.params), {})
    notes = []
    if "data/classes" in p:
        classes = p["data/classes"].split(", ")
        metrics = "" if len(classes) == 2 else " Accuracy is micro-averaged, F1 and AUROC macro (one-vs-rest)."
        notes.append(f"- {dataset_title(dataset)}: {len(classes)} classes ({p['data/classes']}); "
                     f"{p.get('data/shared_texts', '0')} distinct text(s) in both train and test.{metrics}")
    if "data/vectors_path" in p:
        notes.append(f"- {dataset_title(dataset)}: embeddings initialised from `{p['data/vectors_path']}` "
                     f"({p['data/vectors_dim']}-d): {int(p['data/vectors_covered']):,} of the "
                     f"{int(p['data/vectors_vocab']):,} vocabulary words found "
                     f"({100 * float(p['data/vectors_share']):.1f}%); "
                     "the rest keep Keras' uniform initialisation.")
    return notes


def _architecture_details(studies: list[Study]) -> list[str]:
    lines = []
    for s in studies:
        best_params = {k[len("best/"):]: v for k, v in sorted(s.tags.items()) if k.startswith("best/")}
        importances = sorted(((k[len("importance/"):], v) for k, v in s.metrics.items()
                              if k.startswith("importance/")), key=lambda kv: (-kv[1], kv[0]))
        params = ", ".join(f"`{k}={short(v)}`" for k, v in best_params.items()) or "none (no completed trial)"
        imp = ", ".join(f"`{k}` {v:.2f}" for k, v in importances) or "not computed (too few completed trials)"
        lines.append(f"| {dataset_title(s.dataset)} | `{s.arch}` | {params} | {imp} |")
    return ["| dataset | architecture | best hyperparameters | importance (fANOVA) |", "|---|---|---|---|"] + lines


def _problems(studies: list[Study]) -> list[str]:
    lines = []
    for s in studies:
        name = f"{s.dataset}/{s.arch}"
        if not any(t.state in ("complete", "pruned") for t in s.trials):
            lines.append(f"- `{name}`: no finished trial yet.")
        elif s.metrics.get("test/acc") is None:
            lines.append(f"- `{name}`: no test accuracy yet (no completed trial, or the study is still running).")
        for t in s.trials:
            if t.state == "failed":
                error = t.error or "no error recorded"
                lines.append(f"- `{name}` trial {t.number} failed (run `{t.run_id[:8]}`): {error}")
            elif t.state == "killed":
                lines.append(f"- `{name}` trial {t.number} was killed with its process (run `{t.run_id[:8]}`); a "
                             "later run retried its parameters.")
            elif t.state == "running":
                lines.append(f"- `{name}` trial {t.number} has no final state: still running, or killed.")
    return lines


def write_index(out_dir: Path) -> None:
    lines = ["# Reports", "", "One folder per sweep, generated by `nox -s report -- NAME` from the MLflow store; "
             "`perf` is the speed benchmark, generated by `nox -s perf`.", "", "| sweep | report |", "|---|---|"]
    for readme in sorted(out_dir.glob("*/README.md")):
        name = readme.parent.name
        lines.append(f"| `{name}` | [{name}/README.md]({name}/README.md) |")
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")
