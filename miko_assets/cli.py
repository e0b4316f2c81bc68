"""The `miko` command: ingest datasets, run the demo, and inspect what the pipeline made."""

from __future__ import annotations

import argparse
import sys

from miko_assets.commands import annotate, backfill, batch, check, estimate, ingest, inspect
from miko_assets.commands.common import forget_created_warehouse
from miko_assets.commands.errors import USER_ERROR_EXIT, explain

# Each module adds its sub-commands; every sub-command sets `run(args) -> exit code`.
COMMAND_MODULES = (ingest, inspect, backfill, annotate, batch, estimate, check)
WAREHOUSE_HELP = "DuckDB file or ducklake: URL (default: $MIKO_WAREHOUSE or ./warehouse.duckdb)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="miko", description=__doc__)
    parser.add_argument("--warehouse", default=None, help=WAREHOUSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    _accept_warehouse_after(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except Exception as exc:
        message = explain(exc)
        if message is None:
            raise
        forget_created_warehouse(args)
        print(f"miko {args.command}: error: {message}", file=sys.stderr)
        return USER_ERROR_EXIT


def _accept_warehouse_after(commands: argparse._SubParsersAction) -> None:
    """Let `--warehouse` follow the sub-command too (`miko ingest --warehouse x.duckdb ...`)."""
    for sub in commands.choices.values():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        for action in nested:
            _accept_warehouse_after(action)
        if not nested:
            # SUPPRESS: when absent here, the value given before the sub-command stays.
            sub.add_argument("--warehouse", default=argparse.SUPPRESS, help=WAREHOUSE_HELP)


if __name__ == "__main__":
    raise SystemExit(main())
