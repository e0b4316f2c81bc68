"""The one Definitions of the miko code location."""

import dagster as dg

from miko_assets.assets.annotate import annotation_assets, annotation_job, evaluation_job
from miko_assets.assets.distill import STAGE_CONFIGS, STAGE_SPECS, generation_assets, prompt_registry
from miko_assets.assets.ingest import ingest_job
from miko_assets.assets.knowledge_base import knowledge_base, lineage_job
from miko_assets.assets.llm_batches import llm_batch_collector
from miko_assets.assets.posts import posts
from miko_assets.assets.sarcasm import sarcasm_dataset, sarcasm_student
from miko_assets.assets.staleness import stage_config_watch, stale_backfill_job, staleness_check
from miko_assets.resources import llm_resource_from_env, warehouse_resource_from_env

batch_assets = [posts, *generation_assets]
staleness_checks = [staleness_check(spec, STAGE_CONFIGS[asset]) for asset, spec in STAGE_SPECS.items()]

distill_job = dg.define_asset_job(
    "distill_job",
    selection=dg.AssetSelection.assets(*batch_assets),
    description="posts, captions, key_info and intentions for one post_batches partition.",
)

knowledge_base_job = dg.define_asset_job(
    "knowledge_base_job",
    selection=dg.AssetSelection.assets(prompt_registry, knowledge_base),
    description="The prompt registry and the knowledge-base statistics over every partition.",
)

sarcasm_student_job = dg.define_asset_job(
    "sarcasm_student_job",
    selection=dg.AssetSelection.assets(sarcasm_student),
    description="Train and score the sarcasm students (set partitions, students and split in the launchpad).",
)


defs = dg.Definitions(
    assets=[*batch_assets, *annotation_assets, prompt_registry, knowledge_base, sarcasm_dataset, sarcasm_student],
    asset_checks=staleness_checks,
    sensors=[llm_batch_collector, stage_config_watch(list(STAGE_CONFIGS.values()), staleness_checks)],
    jobs=[ingest_job, annotation_job, evaluation_job, distill_job, knowledge_base_job, lineage_job, sarcasm_student_job,
          stale_backfill_job],
    resources={"warehouse": warehouse_resource_from_env(), "llm": llm_resource_from_env()},
    # One process per run, not per step: a partition run has 4 assets and 3 checks, and each step
    # process would load the code location again (~6 s CPU). Measured by benchmarks/rehearsal.py,
    # that cost 5 minutes of orchestration per partition on 2 cores with 4 runs at once. Pools
    # ("llm") still limit the steps; a crashed run worker is retried by run_retries.
    executor=dg.in_process_executor,
)
