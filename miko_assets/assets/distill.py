"""The MIKO generation stages as partitioned assets: captions, key_info and intentions.

Each asset reads its upstream rows of the partition from the warehouse, runs the stage's logic
through the LLM layer and replaces its partition atomically; replaced rows go to history.
"""

import os
from collections.abc import Mapping

import dagster as dg

from miko_assets.assets.metadata import counts, preview
from miko_assets.distill.prompts import all_prompts
from miko_assets.llm.runner import RunSummary
from miko_assets.partitions import post_batches
from miko_assets.resources import LLMResource, WarehouseResource
from miko_assets.stages.common import StageRun, data_version, runner_completer
from miko_assets.stages.configuration import ConfigRecord, config_record, record_configs
from miko_assets.stages.versions import STAGE_UPSTREAM, StageSpec, current_stage_specs, stage_inputs, stage_rows
from miko_assets.warehouse.prompts import register_prompts

# Rows of a new materialization that equal these columns of an old row are the same generation.
_SAME_GENERATION = {"captions": ("caption_id",), "key_info": ("key_info_id",), "intentions": ("intention_id", "llm_call_id")}
_PREVIEW = {
    "captions": ["post_id", "description_kind", "status", "description"],
    "key_info": ["post_id", "status", "concept", "action", "object", "emotion", "keywords"],
    "intentions": ["post_id", "relation", "status", "full_text"],
}


def _generation_asset(spec: StageSpec, record: ConfigRecord | None = None) -> dg.AssetsDefinition:
    """The asset of one generation stage; `record` is its configuration in words (default: from the environment)."""
    upstream = STAGE_UPSTREAM[spec.asset]
    record = record or config_record(spec, os.environ)

    @dg.asset(
        name=spec.asset,
        partitions_def=post_batches,
        deps=list(upstream),
        code_version=spec.code_version,
        pool="llm",
        group_name="distill",
        kinds={"duckdb"},
        description=(
            f"MIKO stage {spec.asset!r}: {record.in_words()}. Environment overrides: {record.overrides_in_words()}. "
            f"Stale partitions and why: the check `{spec.asset}_matches_current_config`; rebuild them with "
            "`stale_backfill_job` or `miko backfill --stale`."
        ),
    )
    def generation(context: dg.AssetExecutionContext, warehouse: WarehouseResource, llm: LLMResource) -> dg.MaterializeResult:
        wh = warehouse.get()
        batch = context.partition_key
        run_id = context.run.run_id
        inputs = stage_inputs(wh, spec.asset, batch)
        if inputs[0].empty:
            raise dg.Failure(f"partition {batch} has no posts: materialize `posts` for it first")
        register_prompts(wh, [spec.config.prompt()])
        record_configs(wh, [record])
        context.instance.add_run_tags(run_id, {
            f"miko/{spec.asset}/code_version": spec.code_version,
            f"miko/{spec.asset}/configuration": record.in_words(),
            f"miko/{spec.asset}/environment_overrides": record.overrides_in_words(),
        })
        summaries: list[RunSummary] = []
        complete = runner_completer(llm.runner(wh), run_id, spec.asset, summaries, context.log)
        stage_run = StageRun.start(spec.config, run_id, spec.code_version)
        rows = stage_rows(spec.asset)(*inputs, stage_run, complete)
        wh.replace_partition(spec.asset, batch, rows, replaced_by_run=run_id, unchanged_key=_SAME_GENERATION[spec.asset])
        summary = summaries[0] if summaries else RunSummary()
        return dg.MaterializeResult(
            data_version=dg.DataVersion(data_version(rows)),
            metadata={
                "provider": spec.config.provider,
                "model": spec.config.model,
                "prompt": f"{stage_run.prompt.name} {stage_run.prompt.version}",
                "prompt_sha": stage_run.prompt.sha,
                "code_version": spec.code_version,
                "configuration": record.in_words(),
                "environment_overrides": record.overrides_in_words(),
                "rows_by_status": counts(rows, "status"),
                "dagster/row_count": len(rows),
                **summary.as_metadata(),
                "preview": preview(rows, _PREVIEW[spec.asset]),
            }
        )

    return generation


@dg.asset(group_name="distill", kinds={"duckdb"}, description="Every prompt template in prompts/, stored by sha.")
def prompt_registry(warehouse: WarehouseResource) -> dg.MaterializeResult:
    prompts = all_prompts()
    added = register_prompts(warehouse.get(), prompts)
    return dg.MaterializeResult(
        metadata={"templates": len(prompts), "new_templates": added,
                  "versions": sorted(f"{p.name} {p.version} {p.sha[:12]}" for p in prompts)}
    )


def generation_assets_for(env: Mapping[str, str]) -> list[dg.AssetsDefinition]:
    """The generation assets under the stage configuration `env` gives now (a command that
    materializes in its own process builds them so, not from what was imported earlier)."""
    return [_generation_asset(spec, config_record(spec, env)) for spec in current_stage_specs(env).values()]


STAGE_SPECS = current_stage_specs()
# What the code location loaded: the stage configurations, with the environment's overrides.
STAGE_CONFIGS = {asset: config_record(spec, os.environ) for asset, spec in STAGE_SPECS.items()}
generation_assets = [_generation_asset(spec, STAGE_CONFIGS[spec.asset]) for spec in STAGE_SPECS.values()]
