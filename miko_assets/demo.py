"""`miko demo`: the bundled sample through every asset, in a real Dagster instance."""

from __future__ import annotations

from pathlib import Path

from miko_assets.assets.ingest import register_batches
from miko_assets.ingest.batches import batch_prefix, ingest_file
from miko_assets.instance import open_instance
from miko_assets.warehouse.warehouse import Warehouse

SAMPLE_DATASET = "sample"
SAMPLE_SPLIT = "sample"


def run_demo(warehouse: Warehouse, sample_dir: Path, batch_size: int) -> int:
    """Ingest the sample, materialize `distill_job` for each of its batches, print a summary."""
    from miko_assets.definitions import defs

    result = ingest_file(
        warehouse, "jsonl", sample_dir / "posts.jsonl", split=SAMPLE_SPLIT,
        images_dir=sample_dir / "images", batch_size=batch_size,
    )
    print(f"ingested {result.rows_added} new posts ({result.rows_already_ingested} already there)")
    prefix = batch_prefix(SAMPLE_DATASET, SAMPLE_SPLIT) + "-"
    batches = [
        b for (b,) in warehouse.rows(
            "SELECT DISTINCT batch FROM ingested_posts WHERE starts_with(batch, ?) ORDER BY batch", [prefix]
        )
    ]
    job = defs.get_job_def("distill_job")
    failed: list[str] = []
    with open_instance() as instance:
        register_batches(instance, warehouse)
        for batch in batches:
            outcome = job.execute_in_process(partition_key=batch, instance=instance, raise_on_error=False)
            print(f"run {outcome.run_id} for partition {batch}: {'ok' if outcome.success else 'FAILED'}")
            if not outcome.success:
                failed.append(batch)
    _print_summary(warehouse, batches)
    return 1 if failed else 0


def _print_summary(warehouse: Warehouse, batches: list[str]) -> None:
    (posts,) = warehouse.rows("SELECT count(*) FROM posts WHERE batch IN (SELECT unnest(?))", [batches])[0:1]
    print(f"\nwarehouse {warehouse.path}")
    print(f"  posts: {posts[0]}")
    for part, reason in warehouse.rows(
        "SELECT rejected_part, reason FROM rejected_posts WHERE batch IN (SELECT unnest(?)) ORDER BY row_key",
        [batches],
    ):
        print(f"  rejected {part}: {reason}")
