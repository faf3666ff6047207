"""Command line: `python -m bench sweep CONFIG [key.path=value ...]`, `python -m bench report NAME|CONFIG`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import ConfigError, load_config
from bench.data import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="run or resume a sweep, then write its report")
    sweep.add_argument("config", nargs="?", default="sweeps/default.yaml", help="sweep config (YAML)")
    sweep.add_argument("overrides", nargs="*", help="key.path=value, e.g. study.n_trials=3")
    sweep.add_argument("--reports", default="reports", help="folder of the generated reports")
    report = commands.add_parser("report", help="regenerate a sweep's report from the MLflow store alone")
    report.add_argument("sweep", help="sweep name (default tracking store) or sweep config path")
    report.add_argument("--tracking-uri", help="MLflow tracking URI; default: the config's, else .bench/mlflow.db")
    report.add_argument("--reports", default="reports", help="folder of the generated reports")
    args = parser.parse_args(argv)

    # Heavy imports only once the arguments are known to be good.
    from bench.module import keep_freed_memory
    from bench.report import ReportError, write_report
    from bench.sweep import run_sweep, tracking_uri

    keep_freed_memory()

    try:
        if args.command == "sweep":
            cfg = load_config(args.config, args.overrides)
            run_sweep(cfg, args.config)
            write_report(cfg.name, tracking_uri(cfg), Path(args.reports))
        else:
            name, uri = args.sweep, args.tracking_uri
            if args.sweep.endswith((".yaml", ".yml")) or Path(args.sweep).is_file():
                cfg = load_config(args.sweep)
                name, uri = cfg.name, uri or tracking_uri(cfg)
            write_report(name, uri or tracking_uri(None), Path(args.reports))
    except (ConfigError, DataError, ReportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
