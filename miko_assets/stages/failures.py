"""Which partitions hold rows whose generation failed, so they can be materialized again."""

from __future__ import annotations

from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.warehouse.schema import TABLES
from miko_assets.warehouse.warehouse import Warehouse


def failed_partitions(warehouse: Warehouse) -> dict[str, dict[str, int]]:
    """asset -> {batch: failed rows} for every generation asset with `failed` rows."""
    found: dict[str, dict[str, int]] = {}
    for asset in GENERATION_STAGES:
        table = TABLES[asset].name
        rows = warehouse.rows(
            f"SELECT batch, count(*) FROM {table} WHERE status = 'failed' GROUP BY batch ORDER BY batch"
        )
        if rows:
            found[asset] = dict(rows)
    return found
