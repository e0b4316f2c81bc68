"""The `posts` asset: one batch of ingested rows, normalised and verified."""

import dagster as dg

from miko_assets.assets.metadata import counts, preview
from miko_assets.ingest.posts import build_posts, earlier_owners
from miko_assets.partitions import post_batches
from miko_assets.resources import WarehouseResource
from miko_assets.stages.common import content_hash, data_version


@dg.asset(
    partitions_def=post_batches,
    group_name="ingest",
    kinds={"duckdb"},
    description="Posts of one batch: NFC-normalised text, verified images; bad input in rejected_posts.",
)
def posts(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    batch = context.partition_key
    ingested = wh.query("SELECT * FROM ingested_posts WHERE batch = ?", [batch])
    if ingested.empty:
        raise dg.Failure(f"batch {batch} has no ingested posts; ingest a dataset first (`miko ingest`)")
    post_rows, rejected = build_posts(ingested, earlier_owners(wh, batch), context.run.run_id)
    wh.replace_partitions(batch, {"posts": post_rows, "rejected_posts": rejected})
    with_image = int(post_rows["image_sha256"].notna().sum()) if "image_sha256" in post_rows else 0
    return dg.MaterializeResult(
        data_version=dg.DataVersion(content_hash(data_version(post_rows), data_version(rejected))),
        metadata={
            "ingested_rows": len(ingested),
            "posts": len(post_rows),
            "posts_with_verified_image": with_image,
            "rejected": counts(rejected, "rejected_part"),
            "rejection_reasons": preview(rejected, ["post_id", "rejected_part", "reason"]),
            "preview": preview(post_rows, ["post_id", "text", "label", "image_width", "image_height"]),
            "dagster/row_count": len(post_rows),
        }
    )
