"""Command line: `python -m bench sweep CONFIG [key.path=value ...] [--workers N]`, `worker`, `report NAME`,
`probe NAME`, `ui`.

Only the standard library, pydantic and YAML load before the arguments and the config are known to be good.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from bench.config import load_config
from bench.runtime import UserError, redacted, runtime_dir, storage_url, tracking_uri


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="run or resume a sweep, then write its report")
    sweep.add_argument("config", nargs="?", default="sweeps/default.yaml", help="sweep config (YAML)")
    sweep.add_argument("overrides", nargs="*", help="key.path=value, e.g. study.n_trials=3")
    sweep.add_argument("--reports", default="reports", help="folder of the generated reports")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes on this machine (PostgreSQL storage "
                                                              "for more than 1): one per GPU, or the cores shared")
    worker = commands.add_parser("worker", help="join a sweep as one more worker (no report)")
    worker.add_argument("config", nargs="?", default="sweeps/default.yaml", help="sweep config (YAML)")
    worker.add_argument("overrides", nargs="*", help="key.path=value, e.g. study.n_trials=3")
    report = commands.add_parser("report", help="regenerate a sweep's report from the MLflow store alone")
    report.add_argument("sweep", help="sweep name (default tracking store) or sweep config path")
    report.add_argument("--tracking-uri", help="MLflow tracking URI; default: the config's, else .bench/mlflow.db")
    report.add_argument("--reports", default="reports", help="folder of the generated reports")
    report.add_argument("--against", metavar="SWEEP", help="another sweep of the same store, e.g. default: its mean "
                                                           "test accuracies beside this sweep's")
    probe = commands.add_parser("probe", help="probe a finished sweep's models (word order, memory, gradient), "
                                               "then regenerate its report")
    probe.add_argument("sweep", help="sweep name (its config path is read from the store) or sweep config path")
    probe.add_argument("overrides", nargs="*", help="key.path=value: the overrides the sweep ran with")
    probe.add_argument("--tracking-uri", help="MLflow tracking URI; default: the config's, else .bench/mlflow.db")
    probe.add_argument("--reports", default="reports", help="folder of the generated reports")
    services = commands.add_parser("services", help="a PostgreSQL and MLflow server for workers")
    services.add_argument("--detach", action="store_true", help="leave them running and return")
    services.add_argument("--stop", action="store_true", help="stop them")
    services.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only); "
                                                               "another lets workers on other machines join, "
                                                               "the MLflow server then with a login")
    services.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port")
    services.add_argument("--mlflow-port", type=int, default=5001, help="the MLflow server's port")
    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard over a sweep's Optuna storage")
    dashboard.add_argument("config", nargs="?", default="sweeps/default.yaml", help="sweep config (YAML)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080)
    ui = commands.add_parser("ui", help="serve the MLflow UI over the sweep store and print each sweep's runs page")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI; default: .bench/mlflow.db")
    ui.add_argument("--port", type=int, default=5000)
    return parser.parse_args(argv)


def sweep_command(args: argparse.Namespace) -> int:
    """Run the sweep (in this process, or as N worker processes), then write its report; 1 if a worker failed."""
    cfg = load_config(args.config, args.overrides)
    if args.workers > 1 and storage_url(cfg).startswith("sqlite"):
        raise UserError(f"--workers {args.workers}: SQLite takes one process at a time (Optuna's FAQ: never SQLite "
                        "for parallel optimisation); set `storage:` or $BENCH_STORAGE to a PostgreSQL URL "
                        "(`nox -s services` starts one here)")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: needs at least 1")
    from bench.report import write_report
    from bench.runtime import flush_denormals, quiet_libraries

    flush_denormals()  # the probes run in this process
    quiet_libraries()
    failed = []
    if args.workers == 1:
        worker_command(args)
    else:
        from bench.workers import run_workers

        codes = run_workers(args.workers, [args.config, *args.overrides])
        failed = [f"worker {i}: exit code {code}" for i, code in enumerate(codes) if code != 0]
    if cfg.probes:
        from bench.probes import run_probes

        run_probes(cfg, tracking_uri(cfg), again=False)
    write_report(cfg.name, tracking_uri(cfg), Path(args.reports))
    if failed:
        print(f"{'; '.join(failed)}; the others finished what they could (run again to resume)", file=sys.stderr)
    return 1 if failed else 0


def worker_command(args: argparse.Namespace) -> None:
    """One worker of the sweep: does what is left and not being done by another."""
    cfg = load_config(args.config, args.overrides)
    from bench.runtime import flush_denormals, keep_freed_memory, quiet_libraries, use_thread_share
    from bench.sweep import run_sweep

    flush_denormals()
    keep_freed_memory()
    quiet_libraries()
    use_thread_share()
    build_kernels(cfg.architectures)
    run_sweep(cfg, args.config)


def build_kernels(architectures: list[str]) -> None:
    """The recurrent layers' C++ loops, built (once per machine) before any training clock starts."""
    from bench import kernels
    from bench.models import RECURRENT

    if any(arch in RECURRENT for arch in architectures):
        kernels.compiled_ops()


def is_config_path(sweep: str) -> bool:
    """Whether a command's sweep argument names a config file rather than a sweep."""
    return sweep.endswith((".yaml", ".yml")) or Path(sweep).is_file()


def report_command(args: argparse.Namespace) -> None:
    cfg = load_config(args.sweep) if is_config_path(args.sweep) else None
    from bench.report import write_report
    from bench.runtime import quiet_libraries

    quiet_libraries()
    write_report(cfg.name if cfg else args.sweep, args.tracking_uri or tracking_uri(cfg), Path(args.reports),
                 against=args.against)


def probe_command(args: argparse.Namespace) -> None:
    from bench.probes import config_of_sweep, run_probes
    from bench.report import write_report
    from bench.runtime import flush_denormals, quiet_libraries

    flush_denormals()
    quiet_libraries()
    if is_config_path(args.sweep):
        cfg = load_config(args.sweep, args.overrides)
        uri = args.tracking_uri or tracking_uri(cfg)
    else:
        uri = args.tracking_uri or tracking_uri(None)
        cfg = load_config(config_of_sweep(args.sweep, uri), args.overrides)
    run_probes(cfg, uri, again=True)
    write_report(cfg.name, uri, Path(args.reports))


def ui_command(args: argparse.Namespace) -> None:
    from bench.ui import serve

    serve(args.tracking_uri or tracking_uri(None), (runtime_dir() / "mlartifacts").as_uri(), port=args.port)


def services_command(args: argparse.Namespace) -> None:
    from bench import services

    if args.stop:
        services.stop()
        return
    services.start(args.pg_port, args.mlflow_port, args.host)
    if args.detach:
        return
    print("serving until Ctrl-C", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        services.stop()


def dashboard_command(args: argparse.Namespace) -> None:
    import optuna_dashboard

    storage = storage_url(load_config(args.config))
    print(f"optuna-dashboard over {redacted(storage)} on http://{args.host}:{args.port}", flush=True)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)


def save_traceback() -> Path:
    path = runtime_dir() / "logs" / f"error-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redacted(traceback.format_exc()))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        commands = {"sweep": sweep_command, "worker": worker_command, "report": report_command, "probe": probe_command,
                    "ui": ui_command, "services": services_command, "dashboard": dashboard_command}
        code = commands[args.command](args)
    except UserError as error:
        print(redacted(f"error: {error}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(redacted(f"error: {type(error).__name__}: {error} (traceback in {save_traceback()}; --debug shows "
                       "it)"), file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
