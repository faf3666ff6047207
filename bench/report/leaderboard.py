"""Each dataset's leaderboard: a row per study, its best trial's accuracy and costs, the best of each column bold."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from bench.report.collect import Study, history, median_or_none
from bench.report.format import interval, num, pct, significant
from bench.stats import wilson_interval


@dataclass
class Row:
    study: Study
    val_acc: float | None
    test: dict
    n_params: str
    train_seconds: float | None
    epoch_seconds: float | None
    tokens_per_s: float | None
    flops_per_token: float | None
    latency: float | None
    total_seconds: float

    @property
    def test_interval(self) -> tuple[float, float] | None:
        """95% interval of the test accuracy from the test set's size alone (Wilson)."""
        n = self.study.params.get("data/rows_test")
        return None if self.test["acc"] is None or n is None else wilson_interval(self.test["acc"], int(n))


def leaderboard_rows(client: MlflowClient, studies: list[Study]) -> list[Row]:
    rows = []
    for s in studies:
        best = s.best
        epoch_seconds = tokens = None
        if best is not None:
            epoch_seconds = median_or_none(history(client, best.run_id, "train/epoch_time_s").values())
            tokens = median_or_none(history(client, best.run_id, "train/tokens_per_s").values())
        rows.append(Row(
            study=s,
            val_acc=s.metrics.get("val/acc_best"),
            test={**{k: s.metrics.get(f"test/{k}") for k in ("acc", "f1", "auroc")},
                  "heldout": s.metrics.get("heldout/acc")},
            n_params=best.params.get("n_params", "–") if best else "–",
            train_seconds=best.train_seconds if best else None,
            epoch_seconds=epoch_seconds,
            tokens_per_s=tokens,
            flops_per_token=best.metrics.get("cost/train_flops_per_token") if best else None,
            latency=s.metrics.get("test/ms_per_1k_texts"),
            total_seconds=sum(t.run_seconds for t in s.trials),
        ))
    rows.sort(key=lambda r: (-(r.test["acc"] or -1), r.study.arch))
    return rows


def _mark(values: list, best_is_max: bool | None) -> set[int]:
    """Rows holding the column's best value; none for a column without a best (best_is_max None)."""
    present = [v for v in values if v is not None]
    if best_is_max is None or len(present) < 2:  # nothing to compare
        return set()
    target = max(present) if best_is_max else min(present)
    return {i for i, v in enumerate(values) if v == target}


def leaderboard_table(rows: list[Row], experiment_id: str) -> list[str]:
    columns = [
        ("val acc %", lambda r: r.val_acc, pct, True),
        ("test acc %", lambda r: r.test["acc"], pct, True),
        ("test acc 95% interval", lambda r: r.test_interval, interval, None),
        ("test F1 %", lambda r: r.test["f1"], pct, True),
        ("test AUROC %", lambda r: r.test["auroc"], pct, True),
        ("held-out acc %", lambda r: r.test["heldout"], pct, True),
        ("best trial train s", lambda r: r.train_seconds, num, False),
        ("s / epoch", lambda r: r.epoch_seconds, num, False),
        ("tokens / s", lambda r: r.tokens_per_s, lambda v: num(v, 0), True),
        ("train MFLOP / token", lambda r: r.flops_per_token and r.flops_per_token / 1e6, significant, False),
        ("ms / 1k texts", lambda r: r.latency, num, False),
        ("study s", lambda r: r.total_seconds, num, False),
    ]
    if all(r.test["heldout"] is None for r in rows):  # a dataset without a held-out split
        columns = [c for c in columns if c[0] != "held-out acc %"]
    header = ["architecture", "params"] + [c[0] for c in columns] + ["trials ok/pruned/failed", "MLflow runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    marks = [_mark([get(r) for r in rows], best_is_max) for _, get, _, best_is_max in columns]
    for i, r in enumerate(rows):
        cells = [f"`{r.study.arch}`", r.n_params]
        for (_, get, fmt, _), marked in zip(columns, marks):
            text = fmt(get(r))
            cells.append(f"**{text}**" if i in marked else text)
        s = r.study
        cells.append(f"{s.count('complete')}/{s.count('pruned')}/{s.count('failed')}")
        best = s.best
        links = f"study `{s.run_id[:8]}`" + (f", best trial `{best.run_id[:8]}`" if best else "")
        cells.append(links)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Bold: the best value of each column. Runs are in MLflow experiment `{experiment_id}` "
                 "(`nox -s ui`); the ids shown are the first 8 characters of each run id.")
    return lines
