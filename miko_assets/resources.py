"""Dagster resources: the warehouse, configured from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from miko_assets.warehouse.warehouse import Warehouse

DEFAULT_WAREHOUSE = "warehouse.duckdb"


def default_warehouse_path() -> str:
    """`MIKO_WAREHOUSE`, else `warehouse.duckdb` in the current directory, as an absolute path."""
    return str(Path(os.environ.get("MIKO_WAREHOUSE", DEFAULT_WAREHOUSE)).resolve())


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Connections are opened per operation, never held across LLM calls."""

    path: str
    lock_timeout_s: float = 300.0

    def get(self) -> Warehouse:
        warehouse = Warehouse(self.path, lock_timeout_s=self.lock_timeout_s)
        warehouse.ensure_schema()
        return warehouse
