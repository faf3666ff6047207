"""Process-wide setup: the runtime folder and its default stores, the one-sweep-per-store lock, the allocator, library
log levels. Called from the CLI, never at import."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import re
import socket
import time
import warnings
from pathlib import Path


class UserError(Exception):
    """Bad input or state the user can fix: the CLI prints its message alone, without a traceback."""


def log(message: str) -> None:
    """A progress line, flushed at once: a worker's output is relayed line by line."""
    print(message, flush=True)


def fmt_seconds(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def runtime_dir() -> Path:
    """$BENCH_HOME, else .bench/ in the working directory (git-ignored in the repository)."""
    path = Path(os.environ.get("BENCH_HOME", ".bench")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def storage_url(cfg) -> str:
    """$BENCH_STORAGE, else the sweep config's Optuna storage, else SQLite in the runtime folder."""
    return os.environ.get("BENCH_STORAGE") or (cfg and cfg.storage) or f"sqlite:///{runtime_dir() / 'optuna.db'}"


def tracking_uri(cfg) -> str:
    """$BENCH_TRACKING_URI, else the sweep config's MLflow tracking URI, else SQLite in the runtime folder; cfg may
    be None."""
    return (os.environ.get("BENCH_TRACKING_URI") or (cfg and cfg.tracking_uri)
            or f"sqlite:///{runtime_dir() / 'mlflow.db'}")


# The password of a URL (scheme://user:password@host), wherever it appears in a text.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)


def redacted(text: str) -> str:
    """A text (a URI, a log line, an error) as it may be shown: any URL's password, and the MLflow server's, replaced
    by ***."""
    mlflow_password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if mlflow_password:
        text = text.replace(mlflow_password, "***")
    return _URL_PASSWORD.sub(r"\1***@", text)


@contextlib.contextmanager
def only_process(store: Path):
    """Held by a sweep on a SQLite store: a second process is refused at once, naming the holder. The lock is the
    OS's (flock), which it releases when its holder dies, however it dies: a killed sweep never blocks the next."""
    import fcntl

    lock_path = store.with_name(store.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise UserError(f"{store} is in use by another sweep ({lock.read().strip() or 'holder unknown'}); a SQLite "
                            "store takes one sweep process at a time: wait for it, or stop it and run again to "
                            "resume") from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        lock.flush()
        yield


def use_thread_share() -> None:
    """$BENCH_THREADS torch threads: a worker's share of the cores, set by `bench sweep --workers N`."""
    if threads := os.environ.get("BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(threads))


def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows): the two functions below do nothing
        return None


def keep_freed_memory() -> None:
    """Stop glibc from handing large freed buffers back to the OS after every training step.

    Otherwise each step page-faults its activations in again (docs/performance.md has the figures).
    """
    if libc := _glibc():
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: allocations below 1 GiB come from the heap and are reused
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: keep freed heap memory rather than return it to the OS


def release_freed_memory() -> None:
    """Free the last trial's tensors and hand the memory kept by keep_freed_memory back to the OS, between trials:
    each trial's buffers have other sizes, so without this the heap grows from trial to trial."""
    gc.collect()  # a Trainer and its module refer to each other: only the cycle collector frees them, and their tensors
    if libc := _glibc():
        libc.malloc_trim(0)


def flush_denormals() -> None:
    """Treat subnormal floats as zero, in every process that trains or predicts: Intel cores pay up to ~100x per
    operation on them (a recurrent network's gates produce many), AMD's little (docs/performance.md). Called before
    torch starts its threads, which inherit the setting."""
    import torch

    torch.set_flush_denormal(True)


def quiet_libraries() -> None:
    """Lightning's, Optuna's and MLflow's per-trial chatter would drown the progress lines."""
    import optuna

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a "View run" line per run, with a server
    # The last two speak when a new store is created.
    for name in ("lightning.pytorch", "mlflow.system_metrics", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow warns that a pickled model runs code when loaded: true of any pyfunc, and this one is our own.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's traceback goes to its MLflow run
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # batches are built in-process, cheaply
    warnings.filterwarnings("ignore", ".*Experimental.*")  # optuna-integration's callback is marked experimental
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")  # only epoch-level metrics are logged
    warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning vs. torch 2.13 deprecation, harmless
    warnings.filterwarnings("ignore", ".*TF32 acceleration on top of oneDNN.*")  # oneDNN toggled to count FLOPs
