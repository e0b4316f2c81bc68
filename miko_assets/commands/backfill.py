"""`miko backfill --stale`: one backfill of exactly the stale partitions, through the Dagster instance
(or, with `--batch`, through the providers' batch APIs)."""

from __future__ import annotations

import argparse
import os

from miko_assets.commands.common import open_warehouse


def add_commands(commands: argparse._SubParsersAction) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="launch one backfill, shown in the UI and run by `dagster dev`: the stale partitions of the chosen "
             "assets and the same partitions of the generation assets downstream",
    )
    backfill.add_argument("--stale", action="store_true", required=True, help="the partitions `miko stale` lists")
    backfill.add_argument("--asset", action="append", default=None,
                          help="only this asset's stale partitions: captions, key_info or intentions "
                               "(repeatable; default: all three)")
    backfill.add_argument("--batch", action="store_true",
                          help="go through the providers' batch APIs (half the price): submit, collect, then "
                               "materialize from the cache; says what it costs online and in batch first")
    backfill.add_argument("--poll-s", type=float, default=60.0, help="with --batch: seconds between polls")
    backfill.add_argument("--dry-run", action="store_true", help="print what would be backfilled, launch nothing")
    backfill.set_defaults(run=_backfill)


def _backfill(args: argparse.Namespace) -> int:
    from miko_assets.distill.stages import GENERATION_STAGES
    from miko_assets.stages.configuration import active_configuration
    from miko_assets.stages.staleness import stale_backfill_plan
    from miko_assets.stages.versions import current_stage_specs

    warehouse = open_warehouse(args)
    active = active_configuration(warehouse, current_stage_specs(), os.environ)
    plan = stale_backfill_plan(warehouse, active.records, args.asset or GENERATION_STAGES)
    print(f"judged against {active.source}")
    if not plan:
        print("nothing is stale")
        return 0
    for asset, partitions in plan.items():
        print(f"{asset}: {len(partitions)} partition(s): {', '.join(partitions)}")
    if args.batch:
        from miko_assets.commands.batch import batch_backfill

        return batch_backfill(plan, warehouse, args.poll_s, args.dry_run)
    if args.dry_run:
        return 0
    backfill_id, url = launch_stale_backfill(plan)
    print(f"backfill {backfill_id} requested; `dagster dev` runs it: {url}")
    return 0


def launch_stale_backfill(plan: dict[str, list[str]], tags: dict[str, str] | None = None) -> tuple[str, str]:
    """Request the backfill of `plan` (asset -> partitions) in the instance `dagster dev` uses; (id, UI url)."""
    from miko_assets.assets.staleness import stale_backfill_description
    from miko_assets.backfills import backfill_url, launch_asset_backfill
    from miko_assets.definitions import defs
    from miko_assets.instance import open_instance

    with open_instance() as instance:
        backfill_id = launch_asset_backfill(
            instance, defs, plan, title="stale partitions", description=stale_backfill_description(plan),
            tags={"miko/reason": "stale", **(tags or {})},
        )
    return backfill_id, backfill_url(os.environ.get("MIKO_DAGSTER_URL", "http://127.0.0.1:3000"), backfill_id)
