"""The sensor that collects provider batches (`miko batch submit`) into the LLM call cache.

It starts stopped: turn it on in the UI (Automation) when batches are pending, or run
`miko batch collect` instead.
"""

from pathlib import Path

import dagster as dg

from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.llm.batch import collect_batches
from miko_assets.partitions import post_batches
from miko_assets.resources import WarehouseResource
from miko_assets.warehouse.location import DUCKLAKE_PREFIX


@dg.sensor(
    name="llm_batch_collector",
    minimum_interval_seconds=60,
    asset_selection=dg.AssetSelection.assets(*GENERATION_STAGES),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls the provider batches submitted with `miko batch submit`; stores the answers of "
    "those that ended in the LLM call cache and materializes their partitions, served from the cache "
    "(items that failed in the batch are called online then). API keys come from the environment.",
)
def llm_batch_collector(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    if not warehouse.path.startswith(DUCKLAKE_PREFIX) and not Path(warehouse.path).exists():
        return dg.SkipReason("no warehouse yet")
    summary = collect_batches(warehouse.get())
    runs = [
        dg.RunRequest(
            run_key=f"llm-batch-{batch.batch_id}",
            asset_selection=[dg.AssetKey(batch.asset)],
            partition_key=batch.partition_key,
            tags={"miko/llm_batch": batch.batch_id},
        )
        for batch in summary.collected
        if batch.asset
        and batch.partition_key
        and context.instance.has_dynamic_partition(post_batches.name, batch.partition_key)
    ]
    return dg.SensorResult(run_requests=runs) if runs else dg.SkipReason(summary.describe())
