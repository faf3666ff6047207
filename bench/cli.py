"""Command line: `python -m bench sweep CONFIG [key.path=value ...]`."""

from __future__ import annotations

import argparse
import sys

from bench.config import ConfigError, load_config
from bench.data import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="run or resume a sweep")
    sweep.add_argument("config", nargs="?", default="sweeps/default.yaml", help="sweep config (YAML)")
    sweep.add_argument("overrides", nargs="*", help="key.path=value, e.g. study.n_trials=3")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config, args.overrides)
        if args.command == "sweep":
            from bench.sweep import run_sweep  # heavy imports only once the config is known to be good

            run_sweep(cfg, args.config)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
