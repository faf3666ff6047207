"""`bench sweep --workers N`: N worker processes on this machine, each `python -m bench worker CONFIG ...`.

Each worker takes one GPU (CUDA_VISIBLE_DEVICES) where there are GPUs, else an equal share of the CPU cores (torch
threads). Workers on other machines join the same sweep with `bench worker`; the database decides who does what
(bench/coordination.py), so workers may start and stop at any time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading


def worker_environments(n: int) -> list[tuple[dict, str]]:
    """Each worker's environment, and what it runs on, in words."""
    import torch

    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // n)
    environments = []
    for i in range(n):
        if gpus:
            environments.append(({"CUDA_VISIBLE_DEVICES": str(i % gpus)}, f"GPU {i % gpus}"))
        else:
            environments.append(({"BENCH_THREADS": str(threads)}, f"{threads} CPU thread(s)"))
    return environments


def run_workers(n: int, worker_args: list[str], log=print) -> list[int]:
    """Start n workers, relay their lines prefixed with their number, and wait for them; returns their exit codes."""
    processes = []
    for i, (env, device) in enumerate(worker_environments(n)):
        process = subprocess.Popen([sys.executable, "-m", "bench", "worker", *worker_args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
        log(f"worker {i}: pid {process.pid}, {device}")
        relay = threading.Thread(target=_relay, args=(process, f"[w{i}] ", log), daemon=True)
        relay.start()
        processes.append((process, relay))
    codes = []
    for process, relay in processes:
        codes.append(process.wait())
        relay.join()
    return codes


def _relay(process: subprocess.Popen, prefix: str, log) -> None:
    for line in process.stdout:
        log(prefix + line.rstrip("\n"))
