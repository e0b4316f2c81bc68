"""`miko estimate`: what captions, key info and intentions would cost for N posts, per model,
online and in batch, at each image setting, before anything is paid."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
DEFAULT_SAMPLE_POSTS = 400


def add_commands(commands: argparse._SubParsersAction) -> None:
    estimate = commands.add_parser(
        "estimate",
        help="the cost of the generation stages for N posts: upper bound and expected, online and batch",
    )
    estimate.add_argument("--posts", type=int, required=True, help="how many posts to price")
    estimate.add_argument(
        "--dataset",
        nargs=2,
        metavar=("FORMAT", "PATH"),
        help="the dataset file whose posts the prompts are rendered from (default: the bundled sample)",
    )
    estimate.add_argument("--images", type=Path, default=None, help="folder holding the dataset's images")
    estimate.add_argument(
        "--sample", type=int, default=DEFAULT_SAMPLE_POSTS, help="render prompts for at most this many posts"
    )
    estimate.add_argument(
        "--model",
        action="append",
        metavar="PROVIDER/MODEL",
        help="price every stage with this model (repeatable; default: the models the stages are configured with)",
    )
    estimate.set_defaults(run=_estimate)


def _estimate(args: argparse.Namespace) -> int:
    from miko_assets.datasets.registry import load_posts
    from miko_assets.distill.config import stage_config
    from miko_assets.distill.stages import GENERATION_STAGES
    from miko_assets.llm.costs import PriceTable
    from miko_assets.stages.estimate import (
        SamplePost,
        estimate_teacher,
        recorded_answer_lengths,
        report,
    )
    from miko_assets.warehouse.location import default_warehouse_path
    from miko_assets.warehouse.warehouse import Warehouse

    if args.posts < 1 or args.sample < 1:
        raise ValueError("--posts and --sample must be at least 1")
    if args.dataset:
        fmt, path = args.dataset[0], Path(args.dataset[1])
        images = args.images
    else:
        fmt, path, images = "jsonl", SAMPLE_DIR / "posts.jsonl", SAMPLE_DIR / "images"
    posts = itertools.islice(load_posts(fmt, path, images_dir=images), args.sample)
    sample = [
        SamplePost(p.text, Path(p.image_path) if p.image_path else None, Path(p.image_root) if p.image_root else None)
        for p in posts
    ]
    if not sample:
        raise ValueError(f"{path} holds no posts to render the prompts from")

    models = args.model or list(
        dict.fromkeys(f"{c.provider}/{c.model}" for c in (stage_config(s) for s in GENERATION_STAGES))
    )
    warehouse_path = Path(args.warehouse or default_warehouse_path())
    # Measured answer lengths come from an existing warehouse; none is created to find none.
    lengths = recorded_answer_lengths(Warehouse(warehouse_path)) if warehouse_path.exists() else {}
    prices = PriceTable.load()
    estimates = [estimate_teacher(m, sample, args.posts, prices, lengths) for m in models]
    print(report(estimates, f"{fmt} {path}"))
    return 0
