"""The runtime folder: MLflow store, Optuna storage, data caches and kept models, never beside the sources."""

import os
from pathlib import Path


def runtime_dir() -> Path:
    """$BENCH_HOME, else .bench/ in the working directory (git-ignored in the repository)."""
    path = Path(os.environ.get("BENCH_HOME", ".bench")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
