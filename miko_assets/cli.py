"""The `miko` command: ingest datasets, run the demo, and inspect what the pipeline made."""

from __future__ import annotations

import argparse
import sys

from miko_assets.commands import annotate, backfill, batch, check, estimate, ingest, inspect

# Each module adds its sub-commands; every sub-command sets `run(args) -> exit code`.
COMMAND_MODULES = (ingest, inspect, backfill, annotate, batch, estimate, check)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="miko", description=__doc__)
    parser.add_argument("--warehouse", default=None, help="DuckDB file or ducklake: URL (default: $MIKO_WAREHOUSE or ./warehouse.duckdb)")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"miko {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
