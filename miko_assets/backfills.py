"""Launch one asset backfill through the Dagster instance, so it runs and shows in the UI.

`dagster dev`'s daemon picks a requested backfill up and runs one run per partition, in
dependency order (an asset's partition after the same partition of its upstream assets).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.definitions.selector import PartitionRangeSelector, PartitionsByAssetSelector, PartitionsSelector
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id


def launch_asset_backfill(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    partitions_by_asset: Mapping[str, Sequence[str]],
    *,
    title: str,
    description: str = "",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Request one backfill of exactly these partitions of these assets; returns its id.

    Every partition must already exist (they are the `post_batches` partitions of rows in the
    warehouse). Tags go on the backfill and on every run it launches.
    """
    if not any(partitions_by_asset.values()):
        raise ValueError("nothing to backfill")
    selectors = [
        PartitionsByAssetSelector(
            asset_key=dg.AssetKey(asset),
            partitions=PartitionsSelector(ranges=[PartitionRangeSelector(start=p, end=p) for p in partitions]),
        )
        for asset, partitions in partitions_by_asset.items()
        if partitions
    ]
    # Dynamic partitions (post_batches) are looked up in the instance.
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        backfill = PartitionBackfill.from_partitions_by_assets(
            backfill_id=make_new_backfill_id(),
            asset_graph=defs.resolve_asset_graph(),
            backfill_timestamp=time.time(),
            tags=dict(tags or {}),
            dynamic_partitions_store=instance,
            partitions_by_assets=selectors,
            title=title,
            description=description,
            run_config=None,
        )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def backfill_url(dagster_url: str, backfill_id: str) -> str:
    """Where the UI shows a backfill and its runs."""
    return f"{dagster_url.rstrip('/')}/runs/b/{backfill_id}"
