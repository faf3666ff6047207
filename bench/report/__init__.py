"""A sweep's markdown report and figures, generated from the MLflow tracking store alone: write_report()."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.report.contents import collect_all
from bench.report.figures import write_figures
from bench.report.markdown import GENERATED_PREFIX, render_markdown, write_index
from bench.report.probe_figures import write_figures as write_probe_figures
from bench.report.results import results_json
from bench.runtime import redacted

__all__ = ["write_report"]


def write_report(sweep: str, tracking_uri: str, out_dir: Path = Path("reports"), now: dt.datetime | None = None,
                 log=print, against: str | None = None) -> Path:
    """Collect the sweep's runs, render the markdown, draw the figures, write them and the index: reports/<sweep>/
    README.md with its figures and results.json beside it, and reports/README.md indexing every report. The same
    store gives the same markdown (apart from the generated-at line), figures and results.json. `against`: another
    sweep of the same store, whose mean test accuracies the report sets beside this one's."""
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory() as downloads:  # the predictions, read once
        report = collect_all(client, sweep, Path(downloads), against)
    generated = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    markdown = render_markdown(sweep, report, f"{GENERATED_PREFIX}{generated} from the MLflow store "
                                              f"`{redacted(tracking_uri)}` by `nox -s report -- {sweep}"
                                              f"{f' --against {against}' if against else ''}`._")
    folder = out_dir / sweep
    folder.mkdir(parents=True, exist_ok=True)
    write_figures(client, report, folder)
    write_probe_figures(report.probes, report.datasets, folder)
    (folder / "README.md").write_text(markdown)
    (folder / "results.json").write_text(results_json(sweep, report))
    write_index(out_dir)
    log(f"report written to {folder / 'README.md'}")
    return folder / "README.md"
