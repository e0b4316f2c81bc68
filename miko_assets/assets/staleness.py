"""Stale at a glance, and one action to rebuild what is stale.

- `<asset>_matches_current_config` checks list the stale partitions of each generation asset
  and say why in words (old → new model, prompt, parameters).
- The `stage_config_watch` sensor notices when the code location loads another configuration:
  it records that configuration in the warehouse (so `miko stale` agrees with the UI) and
  runs the checks, so nobody has to press Execute to see what became stale.
- `stale_backfill_job` launches one backfill of exactly the stale partitions of the chosen
  assets and the same partitions downstream (the same action as `miko backfill --stale`).
"""

import hashlib
import os

import dagster as dg

from miko_assets.backfills import backfill_url, launch_asset_backfill
from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.resources import WarehouseResource
from miko_assets.stages.configuration import ConfigRecord, config_record, record_code_location
from miko_assets.stages.staleness import stale_backfill_plan, stale_markdown, stale_report
from miko_assets.stages.versions import StageSpec
from miko_assets.warehouse.warehouse import WarehouseLockTimeout

# A sensor tick must stay short: when a run holds the warehouse, try again at the next tick.
SENSOR_LOCK_TIMEOUT_S = 10.0
SENSOR_INTERVAL_S = 15


def staleness_check(spec: StageSpec, record: ConfigRecord) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=spec.asset,
        name=check_name(spec.asset),
        blocking=False,
        description="Partitions whose rows came from another prompt, model or parameters than the current "
                    "configuration, and what changed, in words. Rebuild them with `stale_backfill_job` or "
                    "`miko backfill --stale`.",
    )
    def check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        report = stale_report(warehouse.get(), record)
        return dg.AssetCheckResult(
            passed=not report,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{len(report)} stale partition(s)" if report else "every partition matches the current configuration",
            metadata={
                "stale": dg.MetadataValue.md(stale_markdown(record, report)),
                "stale_partitions": [p.batch for p in report],
                "stale_count": len(report),
                "current_configuration": record.in_words(),
                "environment_overrides": record.overrides_in_words(),
                "current_code_version": record.code_version,
            },
        )

    return check


def check_name(asset: str) -> str:
    return f"{asset}_matches_current_config"


def config_fingerprint(records: list[ConfigRecord]) -> str:
    """Changes whenever any stage's code version or environment overrides change."""
    text = "\n".join(sorted(r.model_dump_json() for r in records))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_config_watch(records: list[ConfigRecord], checks: list[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    check_keys = [key for c in checks for key in c.check_keys]

    @dg.sensor(
        name="stage_config_watch",
        target=dg.AssetSelection.checks(*checks),
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When the code location loads a new stage configuration: record it in the warehouse "
                    "(so `miko stale` agrees with the UI) and run the staleness checks.",
    )
    def watch(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult | dg.SkipReason:
        fingerprint = config_fingerprint(records)
        if context.cursor == fingerprint:
            return dg.SkipReason("the stage configuration has not changed since the last check")
        brief = WarehouseResource(path=warehouse.path, data_path=warehouse.data_path, lock_timeout_s=SENSOR_LOCK_TIMEOUT_S)
        try:
            record_code_location(brief.get(), records)
        except WarehouseLockTimeout:
            return dg.SkipReason("the warehouse is busy; trying again at the next tick")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(asset_check_keys=check_keys,
                                        tags={"miko/reason": "a new stage configuration was loaded"})],
            cursor=fingerprint,
        )

    return watch


class StaleBackfillConfig(dg.Config):
    assets: list[str] = list(GENERATION_STAGES)


@dg.op(description="Launch one backfill of the stale partitions of the chosen generation assets and the same partitions downstream.")
def launch_stale_backfill(context: dg.OpExecutionContext, config: StaleBackfillConfig, warehouse: WarehouseResource) -> dg.Output[None]:
    from miko_assets.assets.distill import STAGE_SPECS
    from miko_assets.definitions import defs

    records = {asset: config_record(spec, os.environ) for asset, spec in STAGE_SPECS.items()}
    plan = stale_backfill_plan(warehouse.get(), records, config.assets)
    if not plan:
        context.log.info(f"nothing is stale in {', '.join(config.assets)}")
        return dg.Output(None, metadata={"stale": "nothing is stale"})
    backfill_id = launch_asset_backfill(
        context.instance, defs, plan, title="stale partitions",
        description=stale_backfill_description(plan), tags={"miko/reason": "stale"},
    )
    url = backfill_url(os.environ.get("MIKO_DAGSTER_URL", "http://127.0.0.1:3000"), backfill_id)
    context.log.info(f"backfill {backfill_id}: {stale_backfill_description(plan)} ({url})")
    return dg.Output(None, metadata={"backfill_id": backfill_id, "backfill": dg.MetadataValue.url(url),
                                     "partitions": dg.MetadataValue.json(plan)})


def stale_backfill_description(plan: dict[str, list[str]]) -> str:
    """`intentions: a, b; key_info: c`"""
    return "; ".join(f"{asset}: {', '.join(partitions)}" for asset, partitions in plan.items())


@dg.job(description="Backfill exactly the stale partitions (set `assets` in the launchpad; default all generation assets).")
def stale_backfill_job() -> None:
    launch_stale_backfill()
