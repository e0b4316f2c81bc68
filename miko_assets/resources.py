"""Dagster resources: the warehouse and the LLM layer, configured from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from miko_assets.llm.runner import LLMRunner
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


class LLMResource(dg.ConfigurableResource):
    """The LLM layer. API keys arrive through `dg.EnvVar` and are handed to the providers only."""

    openai_api_key: str | None = None
    anthropic_api_key: str | None = None

    def runner(self, warehouse: Warehouse) -> LLMRunner:
        env = dict(os.environ)
        if self.openai_api_key:
            env["OPENAI_API_KEY"] = self.openai_api_key
        if self.anthropic_api_key:
            env["ANTHROPIC_API_KEY"] = self.anthropic_api_key
        return LLMRunner.from_env(warehouse, env)


def llm_resource_from_env() -> LLMResource:
    """Keys are bound as `dg.EnvVar`s when set, so Dagster never stores or shows their values."""
    keys = {
        field: dg.EnvVar(var)
        for field, var in (("openai_api_key", "OPENAI_API_KEY"), ("anthropic_api_key", "ANTHROPIC_API_KEY"))
        if os.environ.get(var)
    }
    return LLMResource(**keys)
