"""The MIKO generation stages as partitioned assets: captions, key_info and intentions.

Each asset reads its upstream rows of the partition from the warehouse, runs the stage's logic
through the LLM layer and replaces its partition atomically; replaced rows go to history.
"""


import dagster as dg

from miko_assets.assets.metadata import counts, preview
from miko_assets.distill.prompts import all_prompts
from miko_assets.llm.runner import RunSummary
from miko_assets.partitions import post_batches
from miko_assets.resources import LLMResource, WarehouseResource
from miko_assets.stages.common import StageRun, data_version, runner_completer
from miko_assets.stages.staleness import stale_partitions
from miko_assets.stages.versions import STAGE_UPSTREAM, StageSpec, current_stage_specs, stage_inputs, stage_rows
from miko_assets.warehouse.prompts import register_prompts

# Rows of a new materialization that equal these columns of an old row are the same generation.
_SAME_GENERATION = {"captions": ("caption_id",), "key_info": ("key_info_id",), "intentions": ("intention_id", "llm_call_id")}
_PREVIEW = {
    "captions": ["post_id", "description_kind", "status", "description"],
    "key_info": ["post_id", "status", "concept", "action", "object", "emotion", "keywords"],
    "intentions": ["post_id", "relation", "status", "full_text"],
}


def _generation_asset(spec: StageSpec) -> dg.AssetsDefinition:
    upstream = STAGE_UPSTREAM[spec.asset]

    @dg.asset(
        name=spec.asset,
        partitions_def=post_batches,
        deps=list(upstream),
        code_version=spec.code_version,
        pool="llm",
        group_name="distill",
        kinds={"duckdb"},
        description=f"MIKO stage {spec.stage!r} ({spec.config.provider}/{spec.config.model}, prompt {spec.config.prompt_version}).",
    )
    def generation(context: dg.AssetExecutionContext, warehouse: WarehouseResource, llm: LLMResource) -> dg.MaterializeResult:
        wh = warehouse.get()
        batch = context.partition_key
        run_id = context.run.run_id
        inputs = stage_inputs(wh, spec.asset, batch)
        if inputs[0].empty:
            raise dg.Failure(f"partition {batch} has no posts: materialize `posts` for it first")
        register_prompts(wh, [spec.config.prompt()])
        summaries: list[RunSummary] = []
        complete = runner_completer(llm.runner(wh), run_id, spec.stage, summaries)
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
                "rows_by_status": counts(rows, "status"),
                "dagster/row_count": len(rows),
                **summary.as_metadata(),
                "preview": preview(rows, _PREVIEW[spec.asset]),
            }
        )

    return generation


def _staleness_check(spec: StageSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=spec.asset,
        name=f"{spec.asset}_matches_current_config",
        blocking=False,
        description="Partitions whose rows came from another prompt, model or parameters than the current configuration.",
    )
    def check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        stale = stale_partitions(warehouse.get(), spec.asset, spec.code_version)
        return dg.AssetCheckResult(
            passed=not stale,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "current_code_version": spec.code_version,
                "stale_partitions": sorted(stale),
                "stale_count": len(stale),
            },
        )

    return check


@dg.asset(group_name="distill", kinds={"duckdb"}, description="Every prompt template in prompts/, stored by sha.")
def prompt_registry(warehouse: WarehouseResource) -> dg.MaterializeResult:
    prompts = all_prompts()
    added = register_prompts(warehouse.get(), prompts)
    return dg.MaterializeResult(
        metadata={"templates": len(prompts), "new_templates": added,
                  "versions": sorted(f"{p.name} {p.version} {p.sha[:12]}" for p in prompts)}
    )


STAGE_SPECS = current_stage_specs()
generation_assets = [_generation_asset(spec) for spec in STAGE_SPECS.values()]
staleness_checks = [_staleness_check(spec) for spec in STAGE_SPECS.values()]
