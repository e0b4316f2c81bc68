"""The `miko` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from miko_assets.ingest.batches import DEFAULT_BATCH_SIZE, ingest_file
from miko_assets.resources import default_warehouse_path
from miko_assets.warehouse.warehouse import Warehouse

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
SAMPLE_BATCH_SIZE = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="miko", description=__doc__)
    parser.add_argument("--warehouse", default=None, help="DuckDB file (default: $MIKO_WAREHOUSE or ./warehouse.duckdb)")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="load a dataset file into post_batches partitions")
    ingest.add_argument("format", help="mmsd, mmsd2, twitter2015, twitter2017, isarcasmeval, miko_release, jsonl, csv")
    ingest.add_argument("path", type=Path)
    ingest.add_argument("--split", default=None)
    ingest.add_argument("--images", type=Path, default=None, help="folder holding the posts' images")
    ingest.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ingest.set_defaults(run=_ingest)

    demo = commands.add_parser("demo", help="ingest the bundled sample and materialize every asset for it")
    demo.set_defaults(run=_demo)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"miko {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _warehouse(args: argparse.Namespace) -> Warehouse:
    warehouse = Warehouse(args.warehouse or default_warehouse_path())
    warehouse.ensure_schema()
    return warehouse


def _ingest(args: argparse.Namespace) -> int:
    from miko_assets.assets.ingest import register_batches
    from miko_assets.instance import open_instance

    warehouse = _warehouse(args)
    result = ingest_file(
        warehouse, args.format, args.path, split=args.split, images_dir=args.images, batch_size=args.batch_size
    )
    with open_instance() as instance:
        added = register_batches(instance, warehouse)
    print(
        f"read {result.rows_read} rows from {result.source_path}: {result.rows_added} added, "
        f"{result.rows_already_ingested} already ingested"
    )
    print(f"new partitions: {', '.join(added) if added else 'none'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from miko_assets.demo import run_demo

    return run_demo(_warehouse(args), SAMPLE_DIR, SAMPLE_BATCH_SIZE)


if __name__ == "__main__":
    raise SystemExit(main())
