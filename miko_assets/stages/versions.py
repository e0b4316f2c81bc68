"""The current configuration of each generation stage, its code version, and what it reads."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from miko_assets.distill.config import StageConfig, code_version, stage_config
from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.stages.captions import caption_rows, captions_code_version
from miko_assets.stages.intentions import intention_rows
from miko_assets.stages.key_info import key_info_rows
from miko_assets.warehouse.warehouse import Warehouse


@dataclass(frozen=True)
class StageSpec:
    """A generation stage: its name (the asset, its table and its entry in `prompts/stages.yaml`),
    its configuration and its code version."""

    asset: str
    config: StageConfig
    code_version: str


# The tables each generation asset reads for a partition, in the order its row builder takes them.
STAGE_UPSTREAM = {
    "captions": ("posts",),
    "key_info": ("posts", "captions"),
    "intentions": ("posts", "captions", "key_info"),
}
_STAGE_ROWS: dict[str, Callable[..., pd.DataFrame]] = {
    "captions": caption_rows,
    "key_info": key_info_rows,
    "intentions": intention_rows,
}


def stage_inputs(warehouse: Warehouse, asset: str, batch: str) -> list[pd.DataFrame]:
    """The partition's rows of each table the asset reads (posts first), ordered by post."""
    return [
        warehouse.query(f"SELECT * FROM {table} WHERE batch = ? ORDER BY post_id", [batch])
        for table in STAGE_UPSTREAM[asset]
    ]


def stage_rows(asset: str) -> Callable[..., pd.DataFrame]:
    """The asset's row builder: `(*stage_inputs, StageRun, Completer) -> rows`."""
    return _STAGE_ROWS[asset]


def current_stage_specs(env: Mapping[str, str] = os.environ) -> dict[str, StageSpec]:
    """asset name -> spec, from `prompts/stages.yaml` and the `MIKO_*` overrides in `env`."""
    specs = {}
    for asset in GENERATION_STAGES:
        config = stage_config(asset, env)
        version = code_version(config, config.prompt())
        if asset == "captions":
            version = captions_code_version(version, config.provider)
        specs[asset] = StageSpec(asset, config, version)
    return specs
