"""Which partitions hold rows made by another configuration than the current one."""

from __future__ import annotations

from miko_assets.warehouse.schema import TABLES
from miko_assets.warehouse.warehouse import Warehouse


def stale_partitions(warehouse: Warehouse, table: str, current_code_version: str) -> dict[str, list[str]]:
    """batch -> the code versions found there, for every batch with a row of another code version."""
    table = TABLES[table].name  # only declared tables, never user input
    rows = warehouse.rows(
        f"""
        SELECT batch, list(DISTINCT code_version ORDER BY code_version)
        FROM {table}
        GROUP BY batch
        HAVING bool_or(code_version IS DISTINCT FROM ?)
        ORDER BY batch
        """,
        [current_code_version],
    )
    return {batch: versions for batch, versions in rows}
