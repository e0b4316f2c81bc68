"""The current configuration of each generation stage and its code version."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from miko_assets.distill.config import StageConfig, code_version, stage_config
from miko_assets.stages.captions import captions_code_version


@dataclass(frozen=True)
class StageSpec:
    """A generation asset's table, the stage whose configuration drives it, and its code version."""

    asset: str
    stage: str
    config: StageConfig
    code_version: str


GENERATION_STAGES = (("captions", "caption"), ("key_info", "key_info"), ("intentions", "intentions"))


def current_stage_specs(env: Mapping[str, str] = os.environ) -> dict[str, StageSpec]:
    """asset name -> spec, from `prompts/stages.yaml` and the `MIKO_*` overrides in `env`."""
    specs = {}
    for asset, stage in GENERATION_STAGES:
        config = stage_config(stage, env)
        version = code_version(config, config.prompt())
        if asset == "captions":
            version = captions_code_version(version, config.provider)
        specs[asset] = StageSpec(asset, stage, config, version)
    return specs
