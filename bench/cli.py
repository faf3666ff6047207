"""Command line: `python -m bench sweep CONFIG [key.path=value ...]`, `report NAME|CONFIG`, `ui`.

Only the standard library, pydantic and YAML load before the arguments and the config are known to be good.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from bench.config import load_config
from bench.runtime import UserError, runtime_dir, tracking_uri


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="run or resume a sweep, then write its report")
    sweep.add_argument("config", nargs="?", default="sweeps/default.yaml", help="sweep config (YAML)")
    sweep.add_argument("overrides", nargs="*", help="key.path=value, e.g. study.n_trials=3")
    sweep.add_argument("--reports", default="reports", help="folder of the generated reports")
    report = commands.add_parser("report", help="regenerate a sweep's report from the MLflow store alone")
    report.add_argument("sweep", help="sweep name (default tracking store) or sweep config path")
    report.add_argument("--tracking-uri", help="MLflow tracking URI; default: the config's, else .bench/mlflow.db")
    report.add_argument("--reports", default="reports", help="folder of the generated reports")
    ui = commands.add_parser("ui", help="serve the MLflow UI over the sweep store and print each sweep's runs page")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI; default: .bench/mlflow.db")
    ui.add_argument("--port", type=int, default=5000)
    return parser.parse_args(argv)


def sweep_command(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    from bench.report import write_report
    from bench.runtime import keep_freed_memory, quiet_libraries
    from bench.sweep import run_sweep

    keep_freed_memory()
    quiet_libraries()
    run_sweep(cfg, args.config)
    write_report(cfg.name, tracking_uri(cfg), Path(args.reports))


def report_command(args: argparse.Namespace) -> None:
    cfg = load_config(args.sweep) if args.sweep.endswith((".yaml", ".yml")) or Path(args.sweep).is_file() else None
    from bench.report import write_report
    from bench.runtime import quiet_libraries

    quiet_libraries()
    write_report(cfg.name if cfg else args.sweep, args.tracking_uri or tracking_uri(cfg), Path(args.reports))


def ui_command(args: argparse.Namespace) -> None:
    from bench.ui import serve

    serve(args.tracking_uri or tracking_uri(None), (runtime_dir() / "mlartifacts").as_uri(), port=args.port)


def save_traceback() -> Path:
    path = runtime_dir() / "logs" / f"error-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(traceback.format_exc())
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        {"sweep": sweep_command, "report": report_command, "ui": ui_command}[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"error: {type(error).__name__}: {error} (traceback in {save_traceback()}; --debug shows it)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
