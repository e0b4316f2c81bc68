"""Dagster resources: the warehouse and the LLM layer, configured from the environment."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import PrivateAttr

from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.location import (
    DATA_PATH_SETTING,
    DUCKLAKE_PREFIX,
    WAREHOUSE_SETTING,
    default_warehouse_path,
    parse_location,
)
from miko_assets.warehouse.warehouse import Warehouse

BACKFILL_TAG = "dagster/backfill"


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse: a DuckDB file or a DuckLake (`path` is then the `ducklake:` URL and
    `data_path` its data folder). Connections are opened per operation, never held across LLM calls."""

    path: str
    data_path: str | None = None
    lock_timeout_s: float = 300.0

    def get(self) -> Warehouse:
        warehouse = Warehouse(parse_location(self.path, self.data_path), lock_timeout_s=self.lock_timeout_s)
        warehouse.ensure_schema()
        return warehouse


def warehouse_resource_from_env() -> WarehouseResource:
    """A DuckLake URL may carry a password: it is then bound as a `dg.EnvVar`, which Dagster
    never stores or shows."""
    path = default_warehouse_path()
    if path.startswith(DUCKLAKE_PREFIX):
        return WarehouseResource(path=dg.EnvVar(WAREHOUSE_SETTING), data_path=dg.EnvVar(DATA_PATH_SETTING))
    return WarehouseResource(path=path)


class LLMResource(dg.ConfigurableResource):
    """The LLM layer. API keys arrive through `dg.EnvVar` and are handed to the providers only.

    The runs of one backfill spend from one budget: `MIKO_MAX_SPEND_USD` caps the backfill.
    """

    openai_api_key: str | None = None
    anthropic_api_key: str | None = None
    _backfill_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        self._backfill_id = run.tags.get(BACKFILL_TAG) if run is not None else None

    def runner(self, warehouse: Warehouse) -> LLMRunner:
        env = dict(os.environ)
        if self.openai_api_key:
            env["OPENAI_API_KEY"] = self.openai_api_key
        if self.anthropic_api_key:
            env["ANTHROPIC_API_KEY"] = self.anthropic_api_key
        group = f"backfill:{self._backfill_id}" if self._backfill_id else None
        return LLMRunner.from_env(warehouse, env, budget_group=group)


def llm_resource_from_env() -> LLMResource:
    """Keys are bound as `dg.EnvVar`s when set, so Dagster never stores or shows their values."""
    keys = {
        field: dg.EnvVar(var)
        for field, var in (("openai_api_key", "OPENAI_API_KEY"), ("anthropic_api_key", "ANTHROPIC_API_KEY"))
        if os.environ.get(var)
    }
    return LLMResource(**keys)
