"""`miko ingest` and `miko demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

from miko_assets.commands.common import open_warehouse
from miko_assets.commands.progress import progress
from miko_assets.ingest.keys import DEFAULT_BATCH_SIZE

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
SAMPLE_BATCH_SIZE = 12


def add_commands(commands: argparse._SubParsersAction) -> None:
    ingest = commands.add_parser("ingest", help="load a dataset file into post_batches partitions")
    ingest.add_argument("format", help="mmsd, mmsd2, twitter2015, twitter2017, isarcasmeval, miko_release, jsonl, csv")
    ingest.add_argument("path", type=Path)
    ingest.add_argument("--split", default=None)
    ingest.add_argument("--images", type=Path, default=None, help="folder holding the posts' images")
    ingest.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ingest.add_argument(
        "--second-copy", action="store_true",
        help="add posts already ingested under another split again, under this split",
    )
    ingest.set_defaults(run=_ingest)

    demo = commands.add_parser("demo", help="ingest the bundled sample and materialize every asset for it")
    demo.add_argument("--verbose", action="store_true", help="show Dagster's events instead of the short story")
    demo.set_defaults(run=_demo)


def _ingest(args: argparse.Namespace) -> int:
    from miko_assets.ingest.batches import ingest_file, ingest_report
    from miko_assets.instance import open_instance
    from miko_assets.partitions import register_batches

    warehouse = open_warehouse(args, create=True)
    with progress(f"ingest {args.path.name}", None, "posts read") as shown:
        result = ingest_file(
            warehouse, args.format, args.path, split=args.split, images_dir=args.images,
            batch_size=args.batch_size, second_copy=args.second_copy, on_post=shown.advance,
        )
    with open_instance() as instance:
        register_batches(instance, warehouse)
    for line in ingest_report(result):
        print(line)
    print(f"new partitions: {', '.join(result.new_batches) or 'none'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from miko_assets.demo import run_demo

    return run_demo(open_warehouse(args, create=True), SAMPLE_DIR, SAMPLE_BATCH_SIZE, verbose=args.verbose)
