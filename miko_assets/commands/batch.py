"""`miko batch submit | collect | status | backfill`: a stage's calls for one partition through a
provider batch API at half the online price; collected answers serve the partition's
materialization. `backfill` does all of it for many partitions and stages in one command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from miko_assets.commands.common import open_warehouse
from miko_assets.commands.progress import progress
from miko_assets.distill.stages import GENERATION_STAGES

if TYPE_CHECKING:
    from miko_assets.stages.batch_backfill import Materialize
    from miko_assets.warehouse.warehouse import Warehouse


def add_commands(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch", help="run a stage's calls through a provider batch API (half price, collected later)"
    )
    actions = batch.add_subparsers(dest="batch_command", required=True)

    submit = actions.add_parser(
        "submit", help="submit the calls a stage would make for a partition and are not cached yet"
    )
    submit.add_argument("--stage", required=True, choices=GENERATION_STAGES)
    submit.add_argument("--batch", required=True, help="the post_batches partition")
    submit.set_defaults(run=_submit)

    collect = actions.add_parser(
        "collect", help="poll the pending batches once; store the answers of those that ended"
    )
    collect.set_defaults(run=_collect)

    status = actions.add_parser("status", help="the recorded batches (no provider call)")
    status.add_argument("--pending", action="store_true", help="only the pending batches")
    status.set_defaults(run=_status)

    backfill = actions.add_parser(
        "backfill",
        help="backfill partitions through the batch APIs: per stage, submit, wait and collect, then "
        "materialize from the cache (says the cost online and in batch first)",
    )
    backfill.add_argument("--partition", action="append", help="a post_batches partition (default: all)")
    backfill.add_argument(
        "--asset", action="append", choices=GENERATION_STAGES, help="default: all three"
    )
    backfill.add_argument("--poll-s", type=float, default=60.0, help="seconds between polls of pending batches")
    backfill.add_argument("--dry-run", action="store_true", help="print the cost and stop")
    backfill.set_defaults(run=_backfill)


def _submit(args: argparse.Namespace) -> int:
    from miko_assets.llm.batch import submit_batch
    from miko_assets.llm.batch_api import BATCH_PROVIDERS
    from miko_assets.stages.batch_backfill import partition_requests
    from miko_assets.stages.versions import current_stage_specs

    asset = args.stage
    spec = current_stage_specs()[asset]
    if spec.config.provider not in BATCH_PROVIDERS:
        raise ValueError(
            f"stage {asset!r} uses provider {spec.config.provider!r}, which has no batch API "
            f"(set MIKO_{asset.upper()}_PROVIDER to one of {', '.join(BATCH_PROVIDERS)})"
        )
    warehouse = open_warehouse(args)
    requests = partition_requests(warehouse, asset, args.batch)
    submission = submit_batch(warehouse, requests, stage=asset, asset=asset, partition_key=args.batch)
    print(
        f"{asset} {args.batch}: {submission.requests} requests, {submission.cached} cached, "
        f"{submission.in_flight} already in a pending batch, {submission.submitted} submitted "
        f"(at most ${submission.estimated_max_cost_usd:.4f} at the batch price)"
    )
    if submission.batch_id:
        print(f"{submission.provider} batch {submission.batch_id}: collect it with `miko batch collect`")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from miko_assets.llm.batch import collect_batches

    warehouse = open_warehouse(args)
    with progress("collect", None, "batches") as shown:

        def collected(batch_id: str, batches: int) -> None:
            shown.expect(batches)
            shown.advance(detail=batch_id)

        summary = collect_batches(warehouse, on_batch=collected)
    print(summary.describe())
    for batch in summary.collected:
        target = f" for {batch.asset} {batch.partition_key}" if batch.partition_key else ""
        print(
            f"  {batch.provider} {batch.batch_id}{target}: {batch.provider_status}, "
            f"{batch.n_succeeded} answers, {batch.n_failed} failed items, ${batch.cost_usd:.4f}"
        )
    for batch_id, error in summary.errors.items():
        print(f"  {batch_id}: could not be polled: {error}", file=sys.stderr)
    if any(b.n_failed for b in summary.collected):
        print("failed items are made online when their partition is materialized")
    return 1 if summary.errors else 0


def _status(args: argparse.Namespace) -> int:
    from miko_assets.llm.batch import list_batches

    batches = list_batches(open_warehouse(args), pending_only=args.pending)
    if not batches:
        print("no batches")
    for b in batches:
        target = f" {b.asset} {b.partition_key}" if b.partition_key else ""
        state = b.provider_status or "submitted"
        line = f"{b.batch_id} {b.provider}{target}: {b.status} ({state}), {b.n_items} items"
        if b.collected_at is not None:
            line += f", {b.n_succeeded} answers, {b.n_failed} failed, ${b.cost_usd or 0:.4f}"
        if b.error:
            line += f"; last poll failed: {b.error}"
        print(f"{line}; submitted {b.created_at:%Y-%m-%d %H:%M} UTC")
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from miko_assets.ingest.batches import known_batches

    warehouse = open_warehouse(args)
    partitions = args.partition or known_batches(warehouse)
    if not partitions:
        raise LookupError("no partitions to backfill: ingest a dataset first")
    assets = args.asset or list(GENERATION_STAGES)
    return batch_backfill({asset: partitions for asset in assets}, warehouse, args.poll_s, args.dry_run)


def batch_backfill(plan: dict[str, list[str]], warehouse: Warehouse, poll_s: float, dry_run: bool) -> int:
    """Print what `plan` (asset -> partitions) costs online and in batch, then, unless `dry_run`,
    route it through the batch APIs, materializing each stage in this process."""
    from miko_assets.stages.batch_backfill import (
        MaterializationFailed,
        backfill_estimate,
        describe_costs,
        run_batch_backfill,
    )

    partitions = sorted({p for keys in plan.values() for p in keys})
    print(describe_costs(backfill_estimate(warehouse, partitions), list(plan)))
    if dry_run:
        return 0
    try:
        outcomes = run_batch_backfill(warehouse, plan, _in_process_materializer(warehouse), poll_interval_s=poll_s)
    except (MaterializationFailed, TimeoutError) as exc:
        print(f"miko batch backfill: {exc}", file=sys.stderr)
        return 1
    spent = sum(o.batch_cost_usd for o in outcomes)
    print(f"done: {', '.join(o.asset for o in outcomes)} materialized; ${spent:.4f} spent in batches")
    return 0


def _in_process_materializer(warehouse: Warehouse) -> Materialize:
    """Materialize an asset's partitions one by one in this process, in the instance `dagster
    dev` shows, against `warehouse`."""
    import os

    import dagster as dg

    from miko_assets.assets.distill import generation_assets_for
    from miko_assets.instance import open_instance
    from miko_assets.partitions import register_batches
    from miko_assets.resources import WarehouseResource, llm_resource_from_env
    from miko_assets.stages.batch_backfill import MaterializationFailed

    # The configuration the batches were submitted under, whatever this process imported before.
    assets = {a.key.to_user_string(): a for a in generation_assets_for(os.environ)}
    resources = {"warehouse": WarehouseResource(path=str(warehouse.path)), "llm": llm_resource_from_env()}

    def materialize(asset: str, partitions: Sequence[str]) -> None:
        with open_instance() as instance:
            register_batches(instance, warehouse)
            for partition in partitions:
                result = dg.materialize(
                    [assets[asset]], partition_key=partition, instance=instance, resources=resources,
                    raise_on_error=False,
                )
                print(f"{asset} [{partition}] run {result.run_id}: {'ok' if result.success else 'FAILED'}")
                if not result.success:
                    raise MaterializationFailed(
                        f"{asset} [{partition}] failed (run {result.run_id}); fix it and run the same "
                        "command again: collected answers stay cached"
                    )

    return materialize
