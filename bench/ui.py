"""`nox -s ui`: the MLflow UI over a sweep store, lean (one worker, no job runner), opened where the runs are."""

from __future__ import annotations

import os
import sys

from mlflow.tracking import MlflowClient

# MLflow 3's UI opens on its GenAI pages; this query switches it to model training, and the browser keeps it.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def runs_pages(client: MlflowClient, base_url: str) -> list[str]:
    """'name: URL' of each sweep's runs page."""
    return [f"{e.name}: {base_url}/#/experiments/{e.experiment_id}?{MODEL_TRAINING_VIEW}"
            for e in client.search_experiments(order_by=["name"])
            if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)]  # MLflow's own, empty


def serve(tracking_uri: str, artifact_root: str, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Print each sweep's runs page, then become the MLflow server (until interrupted)."""
    pages = runs_pages(MlflowClient(tracking_uri), f"http://{host}:{port}")
    print("Each sweep's runs:" if pages else f"No sweep in {tracking_uri} yet: run `nox -s sweep` first.")
    for page in pages:
        print(f"  {page}")
    sys.stdout.flush()
    # One local user: one worker, and no job runner (its queue consumers hold memory for nothing here).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
                               "--default-artifact-root", artifact_root, "--host", host, "--port", str(port),
                               "--workers", "1"], env)
