"""Sessions: sweep, worker, services, dashboard, report, ui, perf, docs, tests, lint. They share one virtualenv,
.nox/bench, built once and rebuilt when pyproject.toml changes.

PyTorch is installed first, by pip: `torch==2.13.0`, which this project's machines hold as a local CPU wheel (uv
does not look there), and which elsewhere is PyPI's CUDA build. BENCH_TORCH overrides the pip arguments, e.g.
BENCH_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" on another CPU machine. Everything
else installs with uv from requirements.lock (exact versions and hashes, torch left out), so that a fresh clone
trains on the library versions of the committed reports; `nox -s lock` regenerates it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]

ROOT = Path(__file__).parent
VENV = ROOT / ".nox" / "bench"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")


LOCK = ROOT / "requirements.lock"
TORCH = "torch==2.13.0"  # the version the lock was resolved with


def torch_requirement() -> list[str]:
    return os.environ.get("BENCH_TORCH", TORCH).split()


def bench_env(session: nox.Session) -> Path:
    """The shared virtualenv, (re)installed when pyproject.toml, the lock or the torch choice changed."""
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes()
                           + " ".join(torch_requirement()).encode())
    stamp_file = VENV / ".installed"
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
    if not stamp_file.exists() or stamp_file.read_text() != stamp.hexdigest():
        pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        session.run(*pip, *torch_requirement(), external=True)
        uv = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", str(BIN / "python")]
        session.run(*uv, "-r", str(LOCK), external=True)  # verifies its hashes; torch, installed, is left as it is
        session.run(*uv, "--no-deps", "-e", str(ROOT), external=True)
        stamp_file.write_text(stamp.hexdigest())
    return BIN


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Resolve requirements.lock again, at today's releases: every dependency of pyproject.toml but torch, for
    Python 3.11 on x86-64 Linux, against the CPU torch (so that no CUDA package enters it)."""
    cpu_torch = (["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir()
                 else ["--extra-index-url", "https://download.pytorch.org/whl/cpu"])
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraint:
        constraint.write(f"{TORCH}+cpu\n")
        constraint.flush()
        session.run(sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--extra", "test", "--extra",
                    "lint", *cpu_torch, "-c", constraint.name, "--python-version", "3.11", "--python-platform",
                    "x86_64-manylinux_2_28", "--no-emit-package", "torch", "--generate-hashes", "--no-header",
                    "--quiet", "-o", str(LOCK), external=True)


def run_on_config(session: nox.Session, command: str) -> None:
    """`python -m bench COMMAND [CONFIG] [key.path=value ...]`, the config sweeps/default.yaml unless given."""
    args = list(session.posargs)
    if not args or "=" in args[0]:
        args.insert(0, "sweeps/default.yaml")
    session.run(str(bench_env(session) / "python"), "-m", "bench", command, *args, external=True)


@nox.session(venv_backend="none")
def sweep(session: nox.Session) -> None:
    """Run or resume a sweep: nox -s sweep [-- CONFIG] [key.path=value ...] [--workers N]."""
    run_on_config(session, "sweep")


@nox.session(venv_backend="none")
def worker(session: nox.Session) -> None:
    """Join a sweep as one more worker, from any machine that reaches its storage: nox -s worker -- CONFIG [...]."""
    run_on_config(session, "worker")


@nox.session(venv_backend="none")
def services(session: nox.Session) -> None:
    """A local PostgreSQL and MLflow server on loopback until Ctrl-C: nox -s services [-- --detach | --stop]."""
    session.run(str(bench_env(session) / "python"), "-m", "bench", "services", *session.posargs, external=True)


@nox.session(venv_backend="none")
def dashboard(session: nox.Session) -> None:
    """optuna-dashboard over a sweep's Optuna storage on http://127.0.0.1:8080: nox -s dashboard [-- CONFIG]."""
    session.run(str(bench_env(session) / "python"), "-m", "bench", "dashboard", *session.posargs, external=True)


@nox.session(venv_backend="none")
def report(session: nox.Session) -> None:
    """Regenerate a sweep's report from the MLflow store: nox -s report -- NAME|CONFIG (default: default)."""
    args = list(session.posargs) or ["default"]
    session.run(str(bench_env(session) / "python"), "-m", "bench", "report", *args, external=True)


@nox.session(venv_backend="none")
def probe(session: nox.Session) -> None:
    """Probe a finished sweep's models and regenerate its report: `nox -s probe -- NAME` (default: default)."""
    args = list(session.posargs) or ["default"]
    session.run(str(bench_env(session) / "python"), "-m", "bench", "probe", *args, external=True)


@nox.session(venv_backend="none")
def ui(session: nox.Session) -> None:
    """MLflow UI over the sweep store on http://127.0.0.1:5000 (this machine only); prints each sweep's runs page."""
    session.run(str(bench_env(session) / "python"), "-m", "bench", "ui", *session.posargs, external=True)


@nox.session(venv_backend="none")
def perf(session: nox.Session) -> None:
    """Speed benchmark, printed and written to reports/perf/README.md: nox -s perf [-- --repeats 5 ...]."""
    session.run(str(bench_env(session) / "python"), "-m", "bench.perf", *session.posargs, external=True)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Regenerate docs/config.md from the config models' field descriptions."""
    with open(ROOT / "docs" / "config.md", "w") as out:
        session.run(str(bench_env(session) / "python"), "-m", "bench.config_docs", external=True, stdout=out)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The test suite, offline: nox -s tests [-- pytest args], e.g. -- -m "not slow" for the fast tier."""
    session.run(str(bench_env(session) / "python"), "-m", "pytest", *session.posargs, external=True,
                env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    session.run(str(bench_env(session) / "ruff"), "check", "bench", "tests", "noxfile.py", external=True)
