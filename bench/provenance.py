"""Where a run ran: host, worker, CPU, device, commit and library versions, tagged on every MLflow run."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

import mlflow
import optuna
import torch

from bench.config import SweepConfig


@functools.cache  # tagged on every run: read once per process
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide which kernels are fast: vector width, and a bf16 matrix engine (AMX) or instructions.
SPEED_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


@functools.cache
def cpu_features() -> str:
    """The SPEED_FEATURES this CPU has, as /proc/cpuinfo names them ('' where it cannot tell)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(f for f in SPEED_FEATURES if f in flags) or "none of " + ", ".join(SPEED_FEATURES)
    except OSError:
        pass
    return ""


def device_description() -> str:
    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


@functools.cache
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_tags(cfg: SweepConfig, dataset: str, arch: str) -> dict[str, str]:
    import lightning
    import optuna_integration

    return {
        "sweep": cfg.name,
        "dataset": dataset,
        "architecture": arch,
        "host": socket.gethostname(),
        "worker": worker_name(),
        "git_commit": git_commit(),
        "device": device_description(),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": str(os.cpu_count()),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "optuna": optuna.__version__,
        "optuna_integration": optuna_integration.__version__,
        "mlflow": mlflow.__version__,
    }
