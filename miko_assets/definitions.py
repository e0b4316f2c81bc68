"""The one Definitions of the miko code location."""

import dagster as dg

from miko_assets.assets.ingest import ingest_job
from miko_assets.assets.posts import posts
from miko_assets.partitions import post_batches
from miko_assets.resources import WarehouseResource, default_warehouse_path

batch_assets = [posts]

distill_job = dg.define_asset_job(
    "distill_job",
    selection=dg.AssetSelection.assets(*batch_assets),
    partitions_def=post_batches,
    description="Every per-batch asset for one post_batches partition.",
)

defs = dg.Definitions(
    assets=batch_assets,
    jobs=[ingest_job, distill_job],
    resources={"warehouse": WarehouseResource(path=default_warehouse_path())},
)
